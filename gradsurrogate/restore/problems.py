"""Functions to restore Jacobians of, and the metrics comparing restored with true Jacobians."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..diagnostics import gradient_metrics
from .sampling import AlphaSampler, get_alpha_sampler

__all__ = ["RESTORE_PROBLEMS", "RestoreProblem", "callable_problem", "jacobian_metrics",
           "linear_problem", "load_function", "mlp2_problem", "tanh_bias_problem",
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


def callable_problem(f: Callable[[Tensor], Tensor], dim_in: int, dim_out: int | None = None,
                     dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                     exact_jacobian: bool = True, name: str | None = None) -> RestoreProblem:
    """A user's ``f`` (any batched callable or ``nn.Module``, ``(m, i) -> (m, o)``) as a
    problem; points ``α ~ N(0, I)``. ``dim_out`` is read from ``f(0)`` when not given. With
    ``exact_jacobian`` the true Jacobian (for metrics only) is ``vmap(jacrev(f))`` when ``f``
    is differentiable by torch, else it is left unknown."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    with torch.no_grad():
        out = f(torch.zeros(2, dim_in, dtype=dtype, device=device))
    if out.dim() != 2 or out.shape[0] != 2:
        raise ValueError(f"f must map (m, {dim_in}) to (m, o); it returned shape "
                         f"{tuple(out.shape)} for (2, {dim_in})")
    if dim_out is not None and out.shape[1] != dim_out:
        raise ValueError(f"f returns {out.shape[1]} outputs but dim_out={dim_out}")
    jac = None
    if exact_jacobian:
        one = lambda x: f(x[None])[0]
        jac_fn = torch.func.vmap(torch.func.jacrev(one))
        try:
            jac_fn(torch.zeros(1, dim_in, dtype=dtype, device=device))
            jac = lambda x: jac_fn(x).detach()
        except Exception:
            jac = None
    return RestoreProblem(f, dim_in, out.shape[1],
                          get_alpha_sampler("gaussian", dim_in, dtype=dtype, device=device), jac,
                          name or getattr(f, "__name__", type(f).__name__))


def load_function(spec: str) -> Callable[[Tensor], Tensor]:
    """``module:function`` (or ``module:Class`` of an ``nn.Module`` built without arguments)
    -> the callable; ``ValueError`` naming the spec when it cannot be imported."""
    import importlib

    module, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"problem {spec!r}: cannot import {attr!r} from {module!r} ({err})"
                         ) from None
    if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
        obj = obj()
    if not callable(obj):
        raise ValueError(f"problem {spec!r} is not callable")
    return obj


def tanh_bias_problem(dim_in: int, dim_out: int, seed: int = 0, dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None) -> RestoreProblem:
    """``f(x) = tanh(A x + b)`` with ``b ~ N(0, 1)``: ``J = diag(1 - f²) A``."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    g = torch.Generator().manual_seed(seed)
    A = (torch.randn(dim_out, dim_in, generator=g, dtype=dtype) / math.sqrt(dim_in)).to(device)
    b = torch.randn(dim_out, generator=g, dtype=dtype).to(device)
    f = lambda x: torch.tanh(x @ A.T + b)
    return RestoreProblem(f, dim_in, dim_out,
                          get_alpha_sampler("gaussian", dim_in, dtype=dtype, device=device),
                          lambda x: (1 - f(x) ** 2)[:, :, None] * A, f"tanhb{dim_out}x{dim_in}")


def mlp2_problem(dim_in: int, dim_out: int, seed: int = 0, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, width: int = 64) -> RestoreProblem:
    """A 2-layer MLP ``f(x) = W2 tanh(W1 x + b1) + b2`` (hidden ``width``), weights
    ``N(0, 1/fan_in)``, biases ``N(0, 1)``: ``J = W2 diag(1 - h²) W1``."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    g = torch.Generator().manual_seed(seed)
    W1 = torch.randn(width, dim_in, generator=g, dtype=dtype) / math.sqrt(dim_in)
    b1 = torch.randn(width, generator=g, dtype=dtype)
    W2 = torch.randn(dim_out, width, generator=g, dtype=dtype) / math.sqrt(width)
    b2 = torch.randn(dim_out, generator=g, dtype=dtype)
    W1, b1, W2, b2 = (t.to(device) for t in (W1, b1, W2, b2))
    hidden = lambda x: torch.tanh(x @ W1.T + b1)

    def jac(x: Tensor) -> Tensor:
        return torch.einsum("oh,nh,hi->noi", W2, 1 - hidden(x) ** 2, W1)

    return RestoreProblem(lambda x: hidden(x) @ W2.T + b2, dim_in, dim_out,
                          get_alpha_sampler("gaussian", dim_in, dtype=dtype, device=device), jac,
                          f"mlp2_{dim_out}x{dim_in}")


#: ``name -> constructor(dim_in, dim_out, seed=, dtype=, device=)`` of the built-in problems
#: (``module:function`` names a user's function instead: :func:`load_function`).
RESTORE_PROBLEMS: dict[str, Callable[..., RestoreProblem]] = {
    "linear": linear_problem, "tanh": tanh_problem, "tanh_bias": tanh_bias_problem,
    "mlp2": mlp2_problem}


def jacobian_metrics(restored: Tensor, true: Tensor) -> dict[str, float]:
    """Compare (n, o, i) Jacobians point by point, averaged over ``n``.

    ``cosine`` = ⟨Ĵ, J⟩_F / (|Ĵ|_F |J|_F) (0 if either is 0), ``rel_error`` = |Ĵ - J|_F / |J|_F,
    ``sign_agreement`` = mean(sign Ĵ == sign J).
    """
    m = gradient_metrics(restored.detach(), true.detach(),
                         dim=tuple(range(1, restored.dim())))
    out = {k: m[k].mean().item() for k in ("cosine", "rel_error", "sign_agreement")}
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}
