"""Held-out evaluation of a restored surrogate, and saving / loading one.

:func:`heldout_scales` draws fresh points ``α`` and fresh cotangents ``∇_f = s·z``,
``z ~ N(0, I)``, at each cotangent scale ``s``, and compares ``g(∇_f, α)`` with the true
``∇_α = ∇_f · J_f(α)`` (one ``torch.func.vjp`` of ``f``, or the problem's known Jacobian).
A surrogate linear in ``∇_f`` (``structured``, ``jacnet``) scores the same at every scale; a
free-form ``mlp`` does not.

:func:`save_surrogate` / :func:`load_surrogate` store a restored surrogate with the settings
that rebuild it (``RestoreConfig``) in one ``torch.save`` file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..diagnostics import gradient_metrics
from ..io import atomic_path
from .config import RestoreConfig, build_surrogate
from .problems import RestoreProblem
from .surrogates import Surrogate

__all__ = ["SCALES", "heldout_scales", "load_surrogate", "save_surrogate", "true_vjp"]

#: the cotangent scales of the held-out evaluation
SCALES: tuple[float, ...] = (1e-2, 1e-1, 1.0, 1e1, 1e2)


def true_vjp(problem: RestoreProblem, u: Tensor, alpha: Tensor) -> Tensor:
    """``u · J_f(α)`` rows, ``u`` (n, o), ``α`` (n, i) -> (n, i): by the known Jacobian, else
    by ``torch.func.vjp`` of ``f`` (``f`` must be differentiable by torch)."""
    if problem.jacobian is not None:
        return torch.einsum("no,noi->ni", u, problem.jacobian(alpha))
    _, pull = torch.func.vjp(problem.f, alpha)
    return pull(u)[0]


def heldout_scales(problem: RestoreProblem, surrogate: Surrogate, points: int = 256,
                   scales: Sequence[float] = SCALES, seed: int = 12345
                   ) -> dict[float, dict[str, float]]:
    """Per cotangent scale: mean over ``points`` fresh ``(α, ∇_f)`` pairs of the cosine and
    relative error of ``g(∇_f, α)`` vs the true ``∇_α`` (and their minimum cosine)."""
    gen = torch.Generator().manual_seed(seed)
    p0 = next(surrogate.parameters())
    alpha = problem.alpha(points, gen).to(device=p0.device, dtype=p0.dtype)
    z = torch.randn(points, problem.dim_out, generator=gen, dtype=p0.dtype).to(p0.device)
    out: dict[float, dict[str, float]] = {}
    for s in scales:
        u = s * z
        with torch.no_grad():
            pred = surrogate(u, alpha)
        true = true_vjp(problem, u, alpha).detach()
        m = gradient_metrics(pred, true, dim=1)
        out[float(s)] = {"cosine": m["cosine"].mean().item(),
                         "min_cosine": m["cosine"].min().item(),
                         "rel_error": m["rel_error"].mean().item()}
    return out


def save_surrogate(surrogate: Surrogate, cfg: RestoreConfig, path: str | Path,
                   extra: dict[str, Any] | None = None) -> Path:
    """Write ``{"config", "state_dict", "extra"}`` to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"config": cfg.to_dict(), "state_dict": surrogate.state_dict(),
                    "extra": extra or {}}, tmp)
    return path


def load_surrogate(path: str | Path) -> tuple[Surrogate, RestoreConfig]:
    """The surrogate :func:`save_surrogate` wrote, rebuilt from its config, and the config."""
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    cfg = RestoreConfig.from_dict(data["config"])
    surrogate = build_surrogate(cfg)
    surrogate.load_state_dict(data["state_dict"])
    return surrogate, cfg
