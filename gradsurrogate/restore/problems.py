"""Functions to restore Jacobians of, and the metrics comparing restored with true Jacobians."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..diagnostics import gradient_metrics
from .sampling import AlphaSampler, get_alpha_sampler

__all__ = ["RESTORE_PROBLEMS", "RestoreProblem", "jacobian_metrics", "linear_problem",
           "tanh_problem"]


@dataclasses.dataclass
class RestoreProblem:
    """A black-box ``f: (m, i) -> (m, o)`` with a point distribution and, when known, its
    true Jacobian ``jacobian: (n, i) -> (n, o, i)`` (used for metrics only, never for training).
    """

    f: Callable[[Tensor], Tensor]
    dim_in: int
    dim_out: int
    alpha: AlphaSampler
    jacobian: Callable[[Tensor], Tensor] | None = None
    name: str = "f"


def linear_problem(dim_in: int, dim_out: int, seed: int = 0, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None,
                   matrix: Tensor | None = None) -> RestoreProblem:
    """``f(x) = A x`` (rows: ``x Aᵀ``) with ``A`` (o, i) ~ N(0, 1/i) drawn from ``seed``
    (or the given ``matrix``); ``J_f = A`` everywhere; points ``x ~ N(0, I)``. ``dtype``
    defaults to the ``matrix``'s dtype when given, else to ``torch.get_default_dtype()``."""
    if dtype is None:
        dtype = matrix.dtype if matrix is not None else torch.get_default_dtype()
    if matrix is None:
        g = torch.Generator().manual_seed(seed)
        matrix = (torch.randn(dim_out, dim_in, generator=g, dtype=dtype) / math.sqrt(dim_in))
    A = matrix.to(device=device, dtype=dtype)
    if A.shape != (dim_out, dim_in):
        raise ValueError(f"matrix must be ({dim_out}, {dim_in}); got {tuple(A.shape)}")
    return RestoreProblem(
        f=lambda x: x @ A.T,
        dim_in=dim_in,
        dim_out=dim_out,
        alpha=get_alpha_sampler("gaussian", dim_in, dtype=dtype, device=device),
        jacobian=lambda x: A.expand(x.shape[0], *A.shape),
        name=f"linear{dim_out}x{dim_in}",
    )


def tanh_problem(dim_in: int, dim_out: int, seed: int = 0, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> RestoreProblem:
    """``f(x) = tanh(A x)``, ``J_f(x) = diag(1 - tanh²(A x)) A`` — a point-dependent Jacobian.
    ``dtype`` defaults to ``torch.get_default_dtype()``."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    lin = linear_problem(dim_in, dim_out, seed, dtype, device)
    A = lin.jacobian(torch.zeros(1, dim_in, dtype=dtype, device=device))[0]

    def jac(x: Tensor) -> Tensor:
        s = 1 - torch.tanh(x @ A.T) ** 2
        return s[:, :, None] * A

    return RestoreProblem(lambda x: torch.tanh(x @ A.T), dim_in, dim_out, lin.alpha, jac,
                          f"tanh{dim_out}x{dim_in}")


#: ``name -> constructor(dim_in, dim_out, seed=, dtype=, device=)`` of the built-in problems.
RESTORE_PROBLEMS: dict[str, Callable[..., RestoreProblem]] = {
    "linear": linear_problem, "tanh": tanh_problem}


def jacobian_metrics(restored: Tensor, true: Tensor) -> dict[str, float]:
    """Compare (n, o, i) Jacobians point by point, averaged over ``n``.

    ``cosine`` = ⟨Ĵ, J⟩_F / (|Ĵ|_F |J|_F) (0 if either is 0), ``rel_error`` = |Ĵ - J|_F / |J|_F,
    ``sign_agreement`` = mean(sign Ĵ == sign J).
    """
    m = gradient_metrics(restored.detach(), true.detach(),
                         dim=tuple(range(1, restored.dim())))
    out = {k: m[k].mean().item() for k in ("cosine", "rel_error", "sign_agreement")}
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}
