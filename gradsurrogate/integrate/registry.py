"""Name -> integrator class registry and the public entry points ``line_integral`` and
``solve_path_ode``."""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any

import torch
from torch import Tensor

from gradsurrogate.registry import check_choice, check_number, lookup

from .adaptive import Adaptive
from .base import IntegralResult, Integrator, JacFn, PathFn, VectorField, get_path
from .dopri5 import Dopri5
from .gauss_kronrod import GaussKronrod
from .gauss_legendre import GaussLegendre
from .rk4 import RK4

INTEGRATORS: dict[str, type[Integrator]] = {
    cls.name: cls for cls in (Adaptive, GaussLegendre, GaussKronrod, RK4, Dopri5)
}
#: method used when none is named
DEFAULT_METHOD = "adaptive"
#: options that ask for fixed nodes: with ``method=None`` they select ``gauss-legendre``
FIXED_NODE_OPTIONS = ("n", "error")


@cache
def _options(cls: type[Integrator]) -> list[str]:
    """Constructor option names of an integrator class."""
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def resolve_method(method: str | Integrator | None, opts: dict[str, Any]) -> str | Integrator:
    """``method`` unless it is ``None``: then ``DEFAULT_METHOD`` (``adaptive``), or
    ``gauss-legendre`` when a node count ``n`` / ``error`` mode is among ``opts``."""
    if method is not None:
        return method
    return "gauss-legendre" if any(k in opts for k in FIXED_NODE_OPTIONS) else DEFAULT_METHOD


def get_integrator(method: str | Integrator | None = None, **opts: Any) -> Integrator:
    """An integrator instance from a registry name and its options (or an instance, unchanged).

    ``method=None`` resolves through ``resolve_method`` (adaptive by default).

    Raises:
        ValueError: unknown name (lists the accepted ones) or an option the method does not take.
    """
    method = resolve_method(method, opts)
    if isinstance(method, Integrator):
        if opts:
            raise ValueError(f"options {sorted(opts)} given together with an integrator instance")
        return method
    cls = lookup(INTEGRATORS, method, "integrator")
    accepted = _options(cls)
    if opts and not accepted:
        raise ValueError(f"integrator {cls.name!r} takes no options; got {sorted(opts)}")
    for key in sorted(opts):
        check_choice(key, accepted, f"option of integrator {cls.name!r}:")
    return cls(**opts)


def _as_batch(x: Tensor, name: str) -> Tensor:
    """``x`` if it is a non-empty floating-point ``(n, d)`` batch; else ``ValueError``."""
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d_in); got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one point; got shape {tuple(x.shape)}")
    return x


def line_integral(
    jac: JacFn,
    x0: Tensor,
    x1: Tensor,
    y0: Tensor | None = None,
    method: str | Integrator | None = None,
    path: str | PathFn | None = None,
    **opts: Any,
) -> IntegralResult:
    """``y(x1) = y0 + ∫_0^1 J(c(t)) c'(t) dt`` along ``c`` from ``x0`` to ``x1``, batched.

    Args:
        jac: ``(B, i) -> (B, o, i)``, any differentiable callable (e.g. a JacNet's Jacobian).
        x0: ``(i,)`` or ``(n, i)`` start points (broadcast against ``x1``).
        x1: ``(n, i)`` end points.
        y0: ``None`` (zero), ``(o,)`` or ``(n, o)`` value at ``x0``.
        method: registry name (``adaptive``, ``gauss-legendre``, ``gauss-kronrod``, ``rk4``,
            ``dopri5``) or an ``Integrator``; ``opts`` go to its constructor
            (``rtol``, ``atol``, ``n``, ``error``, ``steps``, ...). ``None`` (default):
            ``adaptive`` (per-point tolerance ``rtol``/``atol``, defaults following the
            dtype), or fixed-node ``gauss-legendre`` when ``n`` or ``error`` is given.
        path: ``None``/``"straight"``, ``"bent"`` or a callable ``(t, x0, x1) -> (c, c')``.

    Returns:
        ``IntegralResult`` with ``value (n, o)``, Jacobian evaluations per point (``evals``
        ``(n,)`` and ``converged`` for adaptive), batched calls and an error estimate where the
        method has one. Differentiable w.r.t. ``jac``'s
        parameters, ``x0``, ``x1`` and ``y0``.
    """
    integrator = get_integrator(method, **opts)
    x1 = _as_batch(x1, "x1")
    if x0.dim() == 1:
        x0 = x0.expand_as(x1)
    x0 = _as_batch(x0, "x0")
    if x0.shape[-1] != x1.shape[-1] or x0.shape[0] not in (1, x1.shape[0]):
        raise ValueError(
            f"x0 must be (d_in,), (1, d_in) or (n, d_in) matching x1; got x0 "
            f"{tuple(x0.shape)}, x1 {tuple(x1.shape)}"
        )
    x0 = x0.expand_as(x1)
    res = integrator.integrate(jac, get_path(path), x0, x1)
    if y0 is not None:
        res.value = res.value + torch.broadcast_to(y0, res.value.shape)
    return res


def solve_path_ode(
    func: VectorField,
    z0: Tensor,
    method: str | Integrator = "dopri5",
    t0: float = 0.0,
    t1: float = 1.0,
    **opts: Any,
) -> IntegralResult:
    """``z(t1)`` for the ODE ``dz/dt = func(t, z)``, ``z(t0) = z0``, batched over rows of ``z0``.

    Used where the integrand depends on the state, e.g. inverses along an output-space path
    ``c`` from ``y0`` to ``y``: ``dx/dt = J(x)⁻¹ c'(t)``. Methods: ``dopri5`` (default), ``rk4``;
    quadratures raise ``ValueError``.

    Args:
        func: ``(t 0-d tensor, z (n, d)) -> (n, d)``.
        z0: ``(n, d)`` initial state.
        t0, t1: finite start and end times.
    """
    t0 = check_number(t0, "t0", low=None)
    t1 = check_number(t1, "t1", low=None)
    integrator = get_integrator(method, **opts)
    if not integrator.solves_odes:
        integrator.solve(func, z0, t0, t1)  # raises the explanatory ValueError
    return integrator.solve(func, _as_batch(z0, "z0"), t0, t1)
