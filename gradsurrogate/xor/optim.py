"""Optimizers over ensemble parameters (dim 0 = member) with a per-member learning rate.

They follow ``torch.optim.Adam`` / ``torch.optim.SGD`` (no momentum, no weight decay) step for
step, with ``lr`` an (e,) tensor, and leave frozen members (``active[e] = False``, e.g. diverged
runs) untouched:

* Adam: ``m ← β₁m + (1-β₁)g``, ``v ← β₂v + (1-β₂)g²``,
  ``θ ← θ - lr/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε)``;
* SGD: ``θ ← θ - lr·g``.

Parameters without a gradient (``grad_weight='none'`` for every member) are skipped, as in torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["EnsembleOptimizer", "make_ensemble_optimizer"]


class EnsembleOptimizer:
    """``kind`` ``"adam"`` or ``"sgd"``; ``lr`` (e,); ``active`` (e,) bool, updated in place."""

    def __init__(self, params: Sequence[nn.Parameter], lr: Tensor, kind: str = "adam",
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if kind not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {kind!r}; accepted: adam, sgd")
        self.params = list(params)
        self.kind, self.betas, self.eps = kind, betas, eps
        self.lr = lr
        self.active = torch.ones(lr.shape[0], dtype=torch.bool, device=lr.device)
        self.state: dict[int, dict[str, Tensor]] = {}
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _shape(self, value: Tensor, like: Tensor) -> Tensor:
        return value.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for k, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            lr = self._shape(self.lr, p)
            keep = self._shape(self.active, p).bool()
            if self.kind == "sgd":
                new = p - lr * g
            else:
                st = self.state.setdefault(k, {"m": torch.zeros_like(p), "v": torch.zeros_like(p),
                                               "t": torch.zeros((), dtype=torch.int64)})
                st["t"] += 1
                t = int(st["t"])
                st["m"].lerp_(g, 1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                step_size = lr / (1 - b1**t)
                denom = (st["v"].sqrt() / math.sqrt(1 - b2**t)).add_(self.eps)
                new = p - step_size * (st["m"] / denom)
            p.copy_(torch.where(keep, new, p))


def make_ensemble_optimizer(model: nn.Module, lr: Tensor, kind: str) -> EnsembleOptimizer:
    return EnsembleOptimizer([p for p in model.parameters() if p.requires_grad], lr, kind)
