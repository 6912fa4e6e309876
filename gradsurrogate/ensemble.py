"""Optimizer for ensemble parameters (dim 0 = member ``e``) with one learning rate per member.

:class:`EnsembleOptimizer` performs, for every member, exactly the update of
``torch.optim.Adam`` / ``torch.optim.SGD`` (defaults: no momentum, no weight decay, no amsgrad)
on that member's slice, bitwise (tested against the stock optimizers, one per member):

* Adam: ``m ← β₁m + (1-β₁)g``, ``v ← β₂v + (1-β₂)g²``,
  ``θ ← θ - lr/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε)``;
* SGD: ``θ ← θ - lr·g``.

Members with ``active[e] = False`` (e.g. diverged runs) keep their parameters. Parameters
without a gradient (``grad_weight='none'`` for every member) are skipped, as in torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .registry import check_choice, check_number

__all__ = ["OPTIMIZERS", "EnsembleOptimizer", "make_ensemble_optimizer"]

#: names accepted for ``kind``
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


class EnsembleOptimizer:
    """``kind`` ``"adam"`` or ``"sgd"``; ``lr``: one float per member (kept in double
    precision, as torch keeps its scalar ``lr``); ``active`` (e,) bool, updated in place by
    the caller. Every parameter has the members in dim 0: shape (e, ...)."""

    def __init__(self, params: Sequence[nn.Parameter], lr: Sequence[float], kind: str = "adam",
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.kind = check_choice(kind, OPTIMIZERS, "optimizer")
        self.lr = [check_number(x, f"lr of member {e}") for e, x in enumerate(lr)]
        self.betas = tuple(check_number(b, f"betas[{k}]", low=0.0, high=1.0, low_open=False,
                                        high_open=True) for k, b in enumerate(betas))
        self.eps = check_number(eps, "eps")
        self.params = list(params)
        if not self.lr or not self.params:
            raise ValueError(f"EnsembleOptimizer needs parameters and one lr per member; got "
                             f"{len(self.params)} parameters and {len(self.lr)} learning rates")
        for k, p in enumerate(self.params):
            if p.dim() == 0 or p.shape[0] != len(self.lr):
                raise ValueError(f"parameter {k} of shape {tuple(p.shape)} must have the "
                                 f"{len(self.lr)} members (one per lr) in dim 0")
        self.active = torch.ones(len(self.lr), dtype=torch.bool, device=self.params[0].device)
        self.state: dict[int, dict[str, Tensor]] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _lr_groups(self) -> list[tuple[float, Tensor | None]]:
        """(lr, member indices) per distinct learning rate (``None``: every member)."""
        distinct = sorted(set(self.lr))
        if len(distinct) == 1:
            return [(distinct[0], None)]
        return [(u, torch.tensor([e for e, v in enumerate(self.lr) if v == u],
                                 device=self.active.device)) for u in distinct]

    @torch.no_grad()
    def step(self) -> None:
        """One update. Members sharing a learning rate are updated by the very ops of torch's
        single-tensor Adam/SGD (``addcdiv``/``add`` with a scalar), so results match bitwise."""
        b1, b2 = self.betas
        groups = self._lr_groups()
        # one learning rate and no frozen member (the usual case): update in place, sparing
        # the masked copy of every parameter (same ops, so the same numbers)
        in_place = groups[0][1] is None and bool(self.active.all())
        for k, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if self.kind == "adam":
                st = self.state.setdefault(k, {"m": torch.zeros_like(p), "v": torch.zeros_like(p),
                                               "t": torch.zeros((), dtype=torch.int64),
                                               "denom": torch.empty_like(p)})
                st["t"] += 1
                t = int(st["t"])
                st["m"].lerp_(g, 1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = torch.sqrt(st["v"], out=st["denom"]).div_((1 - b2**t) ** 0.5)
                denom.add_(self.eps)
            if in_place:
                if self.kind == "sgd":
                    p.add_(g, alpha=-groups[0][0])
                else:
                    p.addcdiv_(st["m"], denom, value=-groups[0][0] / (1 - b1**t))
                continue
            new = p
            for lr, index in groups:
                sel = (lambda x: x) if index is None else (lambda x, i=index: x.index_select(0, i))
                if self.kind == "sgd":
                    upd = sel(p).add(sel(g), alpha=-lr)
                else:
                    upd = sel(p).addcdiv(sel(st["m"]), sel(denom), value=-lr / (1 - b1**t))
                new = upd if index is None else new.index_copy(0, index, upd)
            active = self.active.to(p.device).reshape(-1, *([1] * (p.dim() - 1)))
            p.copy_(torch.where(active, new, p))


def make_ensemble_optimizer(model: nn.Module, lr: Sequence[float], kind: str = "adam"
                            ) -> EnsembleOptimizer:
    """An :class:`EnsembleOptimizer` over the trainable parameters of ``model``."""
    return EnsembleOptimizer([p for p in model.parameters() if p.requires_grad], lr, kind)
