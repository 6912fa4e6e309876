"""Probe storage and probe-only diagnostics of a restoration run (no true Jacobian needed).

* :class:`ProbeBank`: stored probes ``α`` (p, i), ``dα`` (p, i), ``df`` (p, o), replayed in
  shuffled passes (every stored probe once per pass, i.e. without replacement);
* :class:`HeldOut`: probes kept out of training with fixed cotangents; its relative residual
  ``|pred - y| / |y|`` over all their scalar equations is the stopping and model-selection
  signal (for a scale-free loss, after the best scalar rescale);
* :func:`auto_lr`: the learning rate from the probes' norms (an estimate of the loss
  curvature, so one rule serves every dimension);
* :func:`scale_free`: whether a loss leaves the surrogate's scale undetermined.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .losses import Cosine, GenSim, Log, Loss, Mixed

__all__ = ["HeldOut", "ProbeBank", "auto_lr", "best_scale", "scale_free"]


class ProbeBank:
    """Stored probes, replayed in groups of ``k`` drawn from shuffled passes over the bank."""

    def __init__(self, alpha: Tensor, dalpha: Tensor, df: Tensor) -> None:
        self.alpha, self.dalpha, self.df = alpha, dalpha, df
        self._order: Tensor | None = None
        self._pos = 0

    @property
    def size(self) -> int:
        return self.alpha.shape[0]

    def groups(self, n: int, k: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """``alpha`` (n, k, i), ``dalpha`` (n, k, i), ``df`` (n, k, o): ``n·k`` probes, each
        stored probe used once per pass (at most ``size`` per group, the rest repeat)."""
        want = n * k
        picks = []
        while want > 0:
            if self._order is None or self._pos >= self.size:
                self._order = torch.randperm(self.size, generator=gen, device=gen.device)
                self._pos = 0
            take = self._order[self._pos:self._pos + want]
            self._pos += len(take)
            want -= len(take)
            picks.append(take)
        idx = torch.cat(picks).to(self.alpha.device).reshape(n, k)
        return self.alpha[idx], self.dalpha[idx], self.df[idx]


def scale_free(loss: Loss) -> bool:
    """True for losses invariant to the surrogate's scale (``cosine``, ``gensim:1``)."""
    inner = loss.inner if isinstance(loss, Log) else loss
    return isinstance(inner, Cosine) or (isinstance(inner, GenSim) and inner.a == 1)


def best_scale(pred: Tensor, y: Tensor) -> float:
    """``argmin_s |s·pred - y|²`` (1 when ``pred`` is 0)."""
    den = float((pred * pred).sum())
    return float((pred * y).sum()) / den if den > 0 else 1.0


class HeldOut:
    """Held-out probes ``(α, dα, df)`` with ``c`` fixed Gaussian cotangents each.

    ``residual(pred_fn)`` is ``|pred - y| / |y|`` over the ``p·c`` equations ``u·g dα`` vs
    ``u·df``; with ``rescale`` the prediction is first multiplied by :func:`best_scale`.
    """

    def __init__(self, alpha: Tensor, dalpha: Tensor, df: Tensor, c: int,
                 gen: torch.Generator) -> None:
        p, o = df.shape
        self.alpha, self.dalpha, self.df = alpha[:, None], dalpha[:, None], df[:, None]
        self.u = torch.randn(p, c, o, generator=gen, dtype=df.dtype,
                             device=gen.device).to(df.device)
        self.y = torch.einsum("pko,pco->pck", self.df, self.u)

    @property
    def size(self) -> int:
        return self.alpha.shape[0]

    def residual(self, pred: Tensor, rescale: bool = False) -> float:
        """Relative residual of predictions ``pred`` (p, c, 1) shaped like ``self.y``."""
        if rescale:
            pred = best_scale(pred, self.y) * pred
        den = float(self.y.norm())
        return float((pred - self.y).norm()) / den if den > 0 else float((pred).norm())


def auto_lr(loss: Loss, dalpha: Tensor, df: Tensor, u: Tensor, k: int, c: int,
            dim_sample: int, scale: float, initial_loss: float | None = None
            ) -> tuple[float, dict[str, Any]]:
    """``lr = scale / λ̂`` with ``λ̂`` the curvature of the loss estimated from probe norms.

    For ``mse`` on ``k`` directions and ``c`` cotangents per point (loss: mean over the ``c``
    cotangents of a sum over ``k`` equations), the Gauss-Newton matrix is
    ``(2/c) Σ_c u uᵀ ⊗ Σ_k dα dαᵀ``; its largest eigenvalue is about
    ``2 E|u|² E|dα|² (1 + sqrt(k·c / (o·dim_sample)))² / c`` (Marchenko-Pastur edge of ``k·c``
    random rank-one terms in ``o·dim_sample`` dimensions). A loss normalised by ``|y|²``
    (``dot``, ``mixed``, ``cosine``, ``gensim``, ``gated``) has a curvature ``1/E|y|²`` times
    smaller, ``E|y|² = k E(u·df)²`` (times 2, measured on 32..128-d linear maps; ``cosine``:
    times 4); a ``log_`` loss divides by its initial value. ``scale = 1`` is half the
    measured divergence edge (mse diverges at 2 on 32×32 and 128×128).
    ``dalpha`` (p, i), ``df`` (p, o), ``u`` (q, o) are samples of the probes and cotangents.
    Returns the rate and the statistics it used.
    """
    o = u.shape[-1]
    eu2 = float((u * u).sum(-1).mean())
    ed2 = float((dalpha * dalpha).sum(-1).mean())
    ey2 = k * float(((df @ u.T) ** 2).mean())
    edge = (1 + math.sqrt(k * c / (o * dim_sample))) ** 2
    curvature = 2 * eu2 * ed2 * edge / c
    inner = loss.inner if isinstance(loss, Log) else loss
    if not type(inner).__name__ == "MSE":  # measured: half the mse edge's 2·E|y|^2 factor
        curvature /= 2 * max(ey2, 1e-30)
        if isinstance(inner, Cosine):
            curvature /= 2  # no dot term: half the curvature of mixed along y
    if isinstance(loss, Log) and initial_loss is not None and initial_loss > 0:
        curvature /= initial_loss
    lr = scale / max(curvature, 1e-30)
    return lr, {"E|u|^2": eu2, "E|dalpha|^2": ed2, "E|y|^2": ey2, "curvature": curvature,
                "mixed_like": isinstance(inner, Mixed)}
