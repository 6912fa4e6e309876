"""Globally adaptive Gauss–Kronrod line integrals with a tolerance, batched over points.

Each point's path parameter ``t ∈ [0, 1]`` is covered by subintervals ("leaves"). A leaf
``[a, a + h]`` is evaluated at the ``2g + 1`` Kronrod nodes of ``G_g``/``K_{2g+1}``
(``gauss_nodes = g``) and at both ends: the value is the Kronrod sum
``h Σ_k wK_k f(a + h t_k)``, the error estimate the L2 norm of the highest Legendre
coefficients of the interpolant through all ``2g + 3`` values (``leaf_rule``), which, unlike
``|K - G|``, bounds the error of a kink or jump anywhere in the leaf. A point has converged
when, for every output ``o``,

    Σ_leaves err_o ≤ max(atol, rtol · |Σ_leaves value_o|).

Each refinement level bisects, in every unconverged point, its leaves of largest error until
the error left in the unsplit leaves is at most ``split`` times the tolerance (a batched form of
QUADPACK's global adaptivity); converged points stop. All nodes of all new leaves of all points
go into ONE Jacobian call per level. Subdivision decisions are made without gradients; the
value is ``Σ_leaves h Σ_k wK_k J(c(t_k)) c'(t_k)``, so when gradients are needed the accepted
leaves of the points that were refined are evaluated once more in one differentiable call
(points that converged at the first level keep its graph). Budgets (``limit`` leaves per
point, ``max_levels`` levels, the width and rounding floors) end the refinement with the best
estimate, its error estimate, ``converged = False`` and an ``AdaptiveWarning``.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import torch
from numpy.polynomial import legendre as L
from torch import Tensor

from gradsurrogate.registry import check_number

from .base import IntegralResult, Integrator, JacFn, PathFn, apply_jac, check_count, path_pointwise
from .gauss_kronrod import kronrod_rule

#: the estimate is scaled to be ``SAFETY`` times the true error of the worst-placed single kink
#: (jump in the integrand's slope) or jump anywhere in a leaf
SAFETY = 2.0
#: a leaf's rounding-error level: ``NOISE · eps · h Σ_k w_k |f_k|``
NOISE = 8.0

#: default ``(rtol, atol)`` per dtype: a point's tolerance ``max(atol, rtol·|value|)`` is the
#: target absolute error (1e-6 in float64, 1e-4 in float32) for integrals up to 10 in size and
#: relative beyond; other dtypes use ``(sqrt(eps), sqrt(eps))``.
DEFAULT_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-6),
    torch.float32: (1e-5, 1e-4),
}
#: largest accepted ``limit`` (leaves per point) and ``max_levels``
MAX_LIMIT = 1_000_000
MAX_LEVELS = 200


class AdaptiveWarning(UserWarning):
    """Some points did not reach the requested tolerance within the subdivision budget."""


def default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """``(rtol, atol)`` used when none is given, following ``dtype``."""
    if dtype in DEFAULT_TOLERANCES:
        return DEFAULT_TOLERANCES[dtype]
    tol = float(torch.finfo(dtype).eps) ** 0.5
    return tol, tol


@lru_cache(maxsize=16)
def leaf_rule(g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t, w, tail)`` on ``[0, 1]`` (float64): the ``m = 2g + 3`` nodes (Kronrod nodes plus
    both ends), the Kronrod weights (zero at the ends) and the ``(r, m)`` map ``E`` from node
    values ``f`` to the error estimate ``‖E f‖₂``.

    ``E f`` are the ``r = (m + 1) // 3`` highest Legendre coefficients of the interpolant of
    ``f`` (their norm is the ``L2[0, 1]`` norm of that part of the interpolant), scaled so that
    for ``f = max(0, t - c)`` and ``f = [t > c]`` the estimate is at least ``SAFETY`` times the
    Kronrod rule's true error for every ``c`` (checked on a grid of 20,000 positions). The end
    nodes make a kink between an end and the outermost Gauss node visible."""
    t, wk, _ = kronrod_rule(g)
    t = np.concatenate([t, [0.0, 1.0]])
    w = np.concatenate([wk, [0.0, 0.0]])
    m = t.size
    vand = np.stack([L.legval(2 * t - 1, np.eye(m)[j]) for j in range(m)], 1)
    coef = np.linalg.inv(vand)  # node values -> Legendre coefficients of P_j(2t - 1)
    scale = np.sqrt(1.0 / (2 * np.arange(m) + 1))  # ‖P_j(2t - 1)‖ on [0, 1]
    tail = (scale[:, None] * coef)[m - (m + 1) // 3 :]
    c = (np.arange(20_000) + 0.5) / 20_000
    ratio = np.inf
    for f, exact in ((np.maximum(0.0, t[None] - c[:, None]), (1 - c) ** 2 / 2),
                     ((t[None] > c[:, None]).astype(float), 1 - c)):
        err = np.abs(f @ w - exact)
        est = np.linalg.norm(f @ tail.T, axis=1)
        ratio = min(ratio, float((est[err > 0] / err[err > 0]).min()))
    return t, w, tail * (SAFETY / ratio)


class Adaptive(Integrator):
    """Adaptive ``G_g``/``K_{2g+1}`` quadrature with interval bisection, per point.

    Args:
        rtol, atol: per-point tolerance (finite, positive); ``None`` follows the dtype
            (``DEFAULT_TOLERANCES``).
        gauss_nodes: ``g``; each leaf costs ``2g + 3`` Jacobian evaluations (17 for 7).
        initial: equal subintervals every point starts with.
        limit: most leaves per point (``≥ initial``).
        max_levels: most refinement levels (Jacobian calls after the first).
        split: in ``(0, 1)``; a level bisects the largest-error leaves of a point until the
            error left in the others is ``≤ split · tolerance``.
    """

    name = "adaptive"

    def __init__(
        self,
        rtol: float | None = None,
        atol: float | None = None,
        gauss_nodes: int = 7,
        initial: int = 1,
        limit: int = 10_000,
        max_levels: int = 60,
        split: float = 0.5,
    ) -> None:
        self.rtol = None if rtol is None else check_number(rtol, "adaptive rtol")
        self.atol = None if atol is None else check_number(atol, "adaptive atol")
        self.gauss_nodes = check_count(gauss_nodes, "adaptive gauss_nodes", 1, 30)
        self.initial = check_count(initial, "adaptive initial", 1, 4096)
        self.limit = check_count(limit, "adaptive limit", self.initial, MAX_LIMIT)
        self.max_levels = check_count(max_levels, "adaptive max_levels", 0, MAX_LEVELS)
        self.split = check_number(split, "adaptive split", 0.0, 1.0, high_open=True)

    def tolerances(self, dtype: torch.dtype) -> tuple[float, float]:
        """``(rtol, atol)`` in force for ``dtype``."""
        rtol, atol = default_tolerances(dtype)
        return (rtol if self.rtol is None else self.rtol,
                atol if self.atol is None else self.atol)

    def integrate(self, jac: JacFn, path: PathFn, x0: Tensor, x1: Tensor) -> IntegralResult:
        dtype, dev = x1.dtype, x1.device
        rtol, atol = self.tolerances(dtype)
        rule = _LeafRule(self.gauss_nodes, jac, path, x0, x1)
        n, k_nodes = x1.shape[0], rule.size
        min_width = 256 * rule.eps
        # leaves of point p in slots [0, count[p]) of row p; empty slots hold zeros
        cap = self.initial
        a = (torch.arange(cap, dtype=dtype, device=dev) / cap).expand(n, cap).contiguous()
        h = torch.full((n, cap), 1.0 / cap, dtype=dtype, device=dev)
        count = torch.full((n,), cap, dtype=torch.long, device=dev)
        rows = torch.arange(n, device=dev).repeat_interleave(cap)
        cols = torch.arange(cap, device=dev).repeat(n)
        g0 = rule.evaluate(rows, a.reshape(-1), h.reshape(-1))  # with gradients if enabled
        first = rule.weigh(g0, h.reshape(-1))
        with torch.no_grad():
            val, err, ok = rule.estimate(g0.detach(), h.reshape(-1))
            val, err = val.reshape(n, cap, -1), err.reshape(n, cap, -1)
            ok = ok.reshape(n, cap)
            calls, levels = 1, 0
            while True:
                value = val.sum(1)
                error = err.sum(1)
                tol = (rtol * value.abs()).clamp_min(atol)
                s = (err / tol[:, None, :]).amax(-1)  # leaf error in units of the tolerance
                total = s.sum(1)
                active = torch.isfinite(total) & (total > 1)
                if levels >= self.max_levels or not bool(active.any()):
                    break
                chosen = self._choose(s, total, ok & (h > min_width) & active[:, None], count)
                rows, cols = chosen.nonzero(as_tuple=True)
                if rows.numel() == 0:
                    break  # every unconverged point is at its width/roundoff/leaf budget
                extra = chosen.sum(1)
                slot = count[rows] + (chosen.cumsum(1) - 1)[rows, cols]  # right children
                count = count + extra
                if int(count.max()) > a.shape[1]:
                    grow = max(int(count.max()), 2 * a.shape[1]) - a.shape[1]
                    a, h, ok = _pad(a, grow), _pad(h, grow), _pad(ok, grow)
                    val, err = _pad(val, grow), _pad(err, grow)
                half = h[rows, cols] / 2
                ca = torch.cat([a[rows, cols], a[rows, cols] + half])
                cr, cc = torch.cat([rows, rows]), torch.cat([cols, slot])
                ch = torch.cat([half, half])
                cval, cerr, cok = rule.estimate(rule.evaluate(cr, ca, ch), ch)
                a[cr, cc], h[cr, cc], ok[cr, cc] = ca, ch, cok
                val[cr, cc], err[cr, cc] = cval, cerr
                calls, levels = calls + 1, levels + 1
        leaves = torch.arange(a.shape[1], device=dev)[None, :] < count[:, None]
        evals = k_nodes * (2 * count - self.initial)  # each bisection: one leaf more, two new
        out = value
        if first.requires_grad:  # points never split keep the first call's graph
            out = first.reshape(n, cap, -1).sum(1)
            refined = count > self.initial
            if bool(refined.any()):  # differentiable re-evaluation of their leaves, one call
                rows, cols = (leaves & refined[:, None]).nonzero(as_tuple=True)
                la, lh = a[rows, cols], h[rows, cols]
                contrib = rule.weigh(rule.evaluate(rows, la, lh), lh)
                again = contrib.new_zeros(n, contrib.shape[-1]).index_add(0, rows, contrib)
                out = torch.where(refined[:, None], again, out)
                evals = evals + k_nodes * count * refined
                calls += 1
        finite = torch.isfinite(total)
        converged = finite & ~active
        if bool((finite & active).any()):
            bad = finite & active
            warnings.warn(
                f"adaptive quadrature: {int(bad.sum())} of {n} points did not reach rtol={rtol:g}"
                f", atol={atol:g} within the budget (limit={self.limit} leaves, max_levels="
                f"{self.max_levels}, or the width/roundoff floor); largest error estimate "
                f"{error[bad].max().item():.3g}; returning the best estimate "
                "(IntegralResult.converged marks the points)",
                AdaptiveWarning, stacklevel=3)
        mean_evals = math.ceil(evals.sum().item() / n)
        return IntegralResult(out, mean_evals, calls, error, self.name, evals=evals,
                              converged=converged)

    def _choose(self, s: Tensor, total: Tensor, splittable: Tensor, count: Tensor) -> Tensor:
        """Leaves to bisect ``(n, c)`` bool: per point, in order of decreasing ``s``, the
        splittable leaves while the error in this leaf and those after it exceeds ``split``
        (in units of the tolerance), at most ``limit - count`` of them."""
        s_sorted, order = torch.sort(s, dim=1, descending=True)
        before = s_sorted.cumsum(1) - s_sorted  # error of the leaves ranked earlier
        rank = torch.arange(s.shape[1], device=s.device)[None, :]
        pick = (total[:, None] - before > self.split) & (rank < (self.limit - count)[:, None])
        pick &= splittable.gather(1, order)
        return torch.zeros_like(pick).scatter(1, order, pick)


def _pad(x: Tensor, extra: int) -> Tensor:
    """``x (n, c, ...)`` with ``extra`` zero (False) slots appended along dim 1."""
    return torch.cat([x, x.new_zeros((x.shape[0], extra, *x.shape[2:]))], 1)


@lru_cache(maxsize=32)
def _rule_tensors(g: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    """``leaf_rule(g)`` as tensors of ``dtype`` on ``device`` (cached: they are never written)."""
    return tuple(torch.as_tensor(a, dtype=dtype, device=device) for a in leaf_rule(g))


class _LeafRule:
    """The leaf rule bound to one integral: node evaluation, value and error per leaf."""

    def __init__(self, g: int, jac: JacFn, path: PathFn, x0: Tensor, x1: Tensor) -> None:
        self.t, self.w, self.tail = _rule_tensors(g, x1.dtype, x1.device)
        self.size = self.t.numel()
        self.eps = float(torch.finfo(x1.dtype).eps)
        self.jac, self.path, self.x0, self.x1 = jac, path, x0, x1

    def evaluate(self, rows: Tensor, a: Tensor, h: Tensor) -> Tensor:
        """Integrand at every node of leaves ``[a, a + h]`` of points ``rows`` (each ``(m,)``),
        in one Jacobian call: ``(k, m, o)``."""
        t = a[None, :] + h[None, :] * self.t[:, None]
        c, dc = path_pointwise(self.path, t, self.x0[rows], self.x1[rows])
        return apply_jac(self.jac, c, dc)

    def weigh(self, g: Tensor, h: Tensor) -> Tensor:
        """Kronrod value of each leaf: ``(k, m, o) -> (m, o)``."""
        k, m, o = g.shape
        return h[:, None] * (self.w @ g.reshape(k, m * o)).reshape(m, o)

    def estimate(self, g: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(value (m, o), error estimate (m, o), refinable (m,))`` of each leaf; the error is
        at least the rounding level, and a leaf is refinable if some output's estimate is above
        it."""
        k, m, o = g.shape
        flat = g.reshape(k, m * o)
        hv = h[:, None]
        val = hv * (self.w @ flat).reshape(m, o)
        diff = hv * (self.tail @ flat).norm(dim=0).reshape(m, o)
        noise = NOISE * self.eps * hv * (self.w @ flat.abs()).reshape(m, o)
        return val, torch.maximum(diff, noise), (diff > noise).any(-1)
