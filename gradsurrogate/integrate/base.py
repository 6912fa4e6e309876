"""Common types of the integrators: the result object, the abstract base class, paths.

Shapes (einsum letters): ``n`` batch (points), ``o`` output dim, ``i`` input dim,
``t`` quadrature nodes / time points.

A line integral of a Jacobian field ``J: R^i -> R^{o x i}`` along a path ``c`` from ``x0``
to ``x1`` is ``∫_0^1 J(c(t)) c'(t) dt`` (an ``o``-vector per point).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from gradsurrogate.registry import check_int, check_number, lookup

#: ``jac(x)``: ``x (n, i) -> J (n, o, i)``.
JacFn = Callable[[Tensor], Tensor]
#: ``path(t, x0, x1)``: ``t (t,), x0/x1 (n, i) -> (c (t, n, i), c' (t, n, i))``.
PathFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
#: ``func(t, z)``: ``t`` a 0-d tensor, ``z (n, d) -> dz/dt (n, d)``.
VectorField = Callable[[Tensor, Tensor], Tensor]


@dataclass
class IntegralResult:
    """Outcome of a line integral or of an ODE solve.

    Attributes:
        value: ``(n, o)`` the integral (plus ``y0`` when given) or the ODE state at the end.
        n_evals: integrand evaluations per point (Jacobian evaluations for line integrals,
            vector-field evaluations for ODEs), i.e. nodes / function evaluations.
        n_calls: batched calls made to the user's callable.
        error: ``(n, o)`` detached estimate of ``|value - exact|`` or ``None`` when the method
            gives none.
        method: registry name of the integrator used.
        evals: ``(n,)`` integrand evaluations of each point where they differ between points
            (adaptive methods; ``n_evals`` is then their mean, rounded up), else ``None``.
        converged: ``(n,)`` bool, whether each point met the requested tolerance (adaptive
            methods), else ``None``.
    """

    value: Tensor
    n_evals: int
    n_calls: int
    error: Tensor | None
    method: str
    evals: Tensor | None = None
    converged: Tensor | None = None

    @property
    def total_evals(self) -> int:
        """Integrand evaluations summed over the batch."""
        if self.evals is not None:
            return int(self.evals.sum().item())
        return self.n_evals * self.value.shape[0]


class Integrator(ABC):
    """One integration method. Subclasses set ``name`` and implement ``integrate``."""

    name: ClassVar[str]
    #: Whether ``solve`` handles true ODEs ``dz/dt = f(t, z)`` (quadratures do not).
    solves_odes: ClassVar[bool] = False

    @abstractmethod
    def integrate(self, jac: JacFn, path: PathFn, x0: Tensor, x1: Tensor) -> IntegralResult:
        """``∫_0^1 J(c(t)) c'(t) dt`` for each of the ``n`` paths; ``value`` is ``(n, o)``."""

    def solve(self, func: VectorField, z0: Tensor, t0: float, t1: float) -> IntegralResult:
        """``z(t1)`` for ``dz/dt = func(t, z)``, ``z(t0) = z0 (n, d)``."""
        raise ValueError(
            f"integrator {self.name!r} is a quadrature and cannot solve ODEs whose right-hand "
            "side depends on the state; use 'rk4' or 'dopri5'"
        )


def apply_jac(jac: JacFn, c: Tensor, dc: Tensor) -> Tensor:
    """Integrand at all nodes in one batched call: ``c, dc (t, n, i) -> J(c) dc (t, n, o)``."""
    t, n, i = c.shape
    J = jac(c.reshape(t * n, i))
    if J.dim() != 3 or J.shape[0] != t * n or J.shape[2] != i:
        raise ValueError(
            f"jac must map (B, {i}) to (B, d_out, {i}); got output shape {tuple(J.shape)} "
            f"for B = {t * n}"
        )
    J = J.reshape(t, n, J.shape[1], i)
    return torch.einsum("tnoi,tni->tno", J, dc)


def check_count(value: object, name: str, low: int = 1, high: int | None = None) -> int:
    """A node/step count: an ``int`` (or an integral float such as ``4.0``) in ``[low, high]``;
    ``ValueError`` naming ``name`` and the value otherwise (``nan``, ``inf``, ``2.5``, ``True``)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return check_int(value, name, low, high)


# ----------------------------------------------------------------------------- paths
class Path(ABC):
    """A path ``c(t, x0, x1)``, ``t ∈ [0, 1]``, with ``c(0) = x0`` and ``c(1) = x1``."""

    @abstractmethod
    def __call__(self, t: Tensor, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """``t (t,), x0/x1 (n, i) -> (c (t, n, i), c' (t, n, i))``."""

    def pointwise(self, t: Tensor, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """Each path at its own times: ``t (t, m), x0/x1 (m, i) -> (c, c') (t, m, i)``.

        The default calls the path once per row; subclasses vectorise it."""
        return path_pointwise(self.__call__, t, x0, x1)


def path_pointwise(path: PathFn, t: Tensor, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
    """``path`` at per-row times ``t (t, m)`` for rows ``x0/x1 (m, i)`` -> ``(t, m, i)`` each.

    Uses ``path.pointwise`` where the path has it (one vectorised call), else one call of
    ``path(t[:, j], x0[j:j+1], x1[j:j+1])`` per row (coordinates only: the Jacobian is still
    called once on all of them)."""
    fast = getattr(path, "pointwise", None)
    if fast is not None and getattr(fast, "__func__", None) is not Path.pointwise:
        return fast(t, x0, x1)
    parts = [path(t[:, j], x0[j : j + 1], x1[j : j + 1]) for j in range(x0.shape[0])]
    return torch.cat([c for c, _ in parts], 1), torch.cat([dc for _, dc in parts], 1)


class StraightPath(Path):
    """``c(t) = x0 + t (x1 - x0)``, ``c'(t) = x1 - x0``."""

    def __call__(self, t: Tensor, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        d = x1 - x0
        tt = t[:, None, None]
        return x0 + tt * d, d.expand(t.shape[0], *d.shape)

    def pointwise(self, t: Tensor, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        d = x1 - x0
        return x0 + t[:, :, None] * d, d.expand(t.shape[0], *d.shape)


class BentPath(Path):
    """Straight line plus a sine bump perpendicular to it in the plane of two coordinates.

    ``c(t) = x0 + t d + amount · sin(π t) · R d`` with ``d = x1 - x0`` and ``R`` the rotation by
    90° in coordinates ``plane = (p, q)`` (``(R d)_p = -d_q``, ``(R d)_q = d_p``, zero elsewhere).
    Needs ``i ≥ 2``; used to expose path dependence of non-conservative Jacobian fields.
    """

    def __init__(self, amount: float = 0.5, plane: tuple[int, int] = (0, 1)) -> None:
        self.amount = check_number(amount, "BentPath amount", low=None)
        if not isinstance(plane, (tuple, list)) or len(plane) != 2:
            raise ValueError(f"BentPath plane must be two coordinate indices (p, q); got {plane!r}")
        p, q = (check_int(c, "BentPath plane index", 0) for c in plane)
        if p == q:
            raise ValueError(f"BentPath plane needs two distinct coordinates; got {plane!r}")
        self.plane = (p, q)

    def __call__(self, t: Tensor, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        return self._at(t[:, None, None], x0, x1)

    def pointwise(self, t: Tensor, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        return self._at(t[:, :, None], x0, x1)

    def _at(self, tt: Tensor, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """``tt`` broadcasts against ``x0 (n, i)``: ``(t, 1, 1)`` or ``(t, n, 1)``."""
        p, q = self.plane
        if x0.shape[-1] < 2 or max(p, q) >= x0.shape[-1] or p == q:
            raise ValueError(
                f"BentPath needs d_in >= 2 and two distinct coordinates < d_in; got d_in = "
                f"{x0.shape[-1]}, plane = {self.plane}"
            )
        d = x1 - x0
        rd = torch.zeros_like(d)
        rd[:, p] = -d[:, q]
        rd[:, q] = d[:, p]
        c = x0 + tt * d + self.amount * torch.sin(math.pi * tt) * rd
        dc = d + self.amount * math.pi * torch.cos(math.pi * tt) * rd
        return c, dc


PATHS: dict[str, type[Path]] = {"straight": StraightPath, "bent": BentPath}


def get_path(path: str | PathFn | None) -> PathFn:
    """A path from a registry name (``straight``, ``bent``), a callable, or ``None`` (straight)."""
    if path is None:
        return StraightPath()
    if isinstance(path, str):
        return lookup(PATHS, path, "path")()
    if callable(path):
        return path
    raise ValueError(f"path must be a name ({', '.join(PATHS)}), a callable or None; got {path!r}")
