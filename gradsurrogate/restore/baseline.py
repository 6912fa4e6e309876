"""Closed-form baseline: least squares on the restoration equations.

For a Jacobian that is constant over the probes (``f(x) = A x``, or probes at one point), the
equations ``u·B dα_p = u·df_p`` for all cotangents ``u`` are ``B dα_p = df_p``; stacking ``P``
probes, ``B Vᵀ = DFᵀ`` with ``V`` (P, i), ``DF`` (P, o), solved in the minimum-norm least-squares
sense ``B = DFᵀ (Vᵀ)⁺``. With ``P ≥ i`` generic probes this is exact: ``dim_in`` directional
evaluations is the information limit for a full-rank linear map.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..registry import check_int
from .problems import RestoreProblem, jacobian_metrics
from .sampling import sample_directions
from .targets import directional_change

__all__ = ["least_squares_jacobian", "least_squares_restore", "least_squares_scalar"]


def least_squares_jacobian(dalpha: Tensor, df: Tensor, ridge: float = 0.0) -> Tensor:
    """``argmin_B Σ_p |B dα_p - df_p|² + ridge |B|²``: ``dα`` (p, i), ``df`` (p, o) -> (o, i).

    Minimum-norm solution when underdetermined (``p < i``), via the pseudo-inverse (float64).
    """
    if dalpha.dim() != 2 or df.dim() != 2 or dalpha.shape[0] != df.shape[0]:
        raise ValueError(f"need dalpha (p, i) and df (p, o) with the same p; got "
                         f"{tuple(dalpha.shape)} and {tuple(df.shape)}")
    v, d = dalpha.to(torch.float64), df.to(torch.float64)
    if ridge > 0:
        gram = v.T @ v + ridge * torch.eye(v.shape[1], dtype=v.dtype, device=v.device)
        bt = torch.linalg.solve(gram, v.T @ d)
    else:
        bt = torch.linalg.pinv(v) @ d  # (i, o)
    return bt.T.to(df.dtype)


def least_squares_scalar(u: Tensor, dalpha: Tensor, y: Tensor) -> Tensor:
    """Least squares on scalar equations ``u_e·B dα_e = y_e``: ``u`` (e, o), ``dα`` (e, i),
    ``y`` (e,) -> ``B`` (o, i). Unknowns ``vec(B)``, design rows ``vec(u_e ⊗ dα_e)`` — only for
    small ``o·i``."""
    design = torch.einsum("eo,ei->eoi", u, dalpha).reshape(u.shape[0], -1).to(torch.float64)
    sol = torch.linalg.pinv(design) @ y.to(torch.float64)
    return sol.reshape(u.shape[1], dalpha.shape[1]).to(y.dtype)


def least_squares_restore(problem: RestoreProblem, probes: int, dim_sample: int,
                          direction_dist: str = "gaussian", target: str = "jvp",
                          seed: int = 0, fd_step: float = 1e-3) -> tuple[Tensor, dict[str, float]]:
    """Restore a constant Jacobian from ``probes`` directional evaluations drawn like the
    trainer's (minibatches of ``dim_sample`` directions in random subspaces, one point each).

    Returns ``B`` (o, i) and the metrics vs the true Jacobian (empty when unknown).
    """
    check_int(probes, "probes", 1)
    gen = torch.Generator().manual_seed(seed)
    dirs, dfs, left = [], [], probes
    while left > 0:
        alpha = problem.alpha(1, gen)
        d, _ = sample_directions(1, dim_sample, problem.dim_in, dim_sample, direction_dist, gen,
                                 alpha.dtype, alpha.device)
        d = d[0, :left]
        df, _ = directional_change(problem.f, alpha.expand_as(d), d,
                                   "fd" if target == "fd" else "jvp", step=fd_step)
        dirs.append(d)
        dfs.append(df)
        left -= d.shape[0]
    B = least_squares_jacobian(torch.cat(dirs), torch.cat(dfs))
    metrics: dict[str, float] = {}
    if problem.jacobian is not None:
        pt = problem.alpha(1, gen)
        metrics = jacobian_metrics(B[None], problem.jacobian(pt))
    return B, metrics
