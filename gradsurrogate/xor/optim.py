"""Optimizers over ensemble parameters (dim 0 = member) with a per-member learning rate.

They follow ``torch.optim.Adam`` / ``torch.optim.SGD`` (no momentum, no weight decay) step for
step, with one float ``lr`` per member, and leave frozen members (``active[e] = False``, e.g.
diverged runs) untouched:

* Adam: ``m ← β₁m + (1-β₁)g``, ``v ← β₂v + (1-β₂)g²``,
  ``θ ← θ - lr/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε)``;
* SGD: ``θ ← θ - lr·g``.

Parameters without a gradient (``grad_weight='none'`` for every member) are skipped, as in torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["EnsembleOptimizer", "make_ensemble_optimizer"]


class EnsembleOptimizer:
    """``kind`` ``"adam"`` or ``"sgd"``; ``lr``: one float per member (kept in double precision,
    as torch keeps its scalar ``lr``); ``active`` (e,) bool, updated in place."""

    def __init__(self, params: Sequence[nn.Parameter], lr: Sequence[float], kind: str = "adam",
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if kind not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {kind!r}; accepted: adam, sgd")
        self.params = list(params)
        self.kind, self.betas, self.eps = kind, betas, eps
        self.lr = [float(x) for x in lr]
        self.active = torch.ones(len(self.lr), dtype=torch.bool, device=self.params[0].device)
        self.state: dict[int, dict[str, Tensor]] = {}
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _shape(self, value: Tensor, like: Tensor) -> Tensor:
        return value.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

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
        self.t += 1
        b1, b2 = self.betas
        groups = self._lr_groups()
        for k, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if self.kind == "adam":
                st = self.state.setdefault(k, {"m": torch.zeros_like(p), "v": torch.zeros_like(p),
                                               "t": torch.zeros((), dtype=torch.int64)})
                st["t"] += 1
                t = int(st["t"])
                st["m"].lerp_(g, 1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (st["v"].sqrt() / (1 - b2**t) ** 0.5).add_(self.eps)
            new = p
            for lr, index in groups:
                sel = (lambda x: x) if index is None else (lambda x, i=index: x.index_select(0, i))
                if self.kind == "sgd":
                    upd = sel(p).add(sel(g), alpha=-lr)
                else:
                    upd = sel(p).addcdiv(sel(st["m"]), sel(denom), value=-lr / (1 - b1**t))
                new = upd if index is None else new.index_copy(0, index, upd)
            p.copy_(torch.where(self._shape(self.active, p).bool(), new, p))


def make_ensemble_optimizer(model: nn.Module, lr: Sequence[float], kind: str
                            ) -> EnsembleOptimizer:
    return EnsembleOptimizer([p for p in model.parameters() if p.requires_grad], lr, kind)
