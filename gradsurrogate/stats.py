"""Seed statistics that survive a different machine: means with Student-t confidence intervals,
seed spreads, an ``unstable`` flag, and comparison of two tables by overlap of intervals.

Convention (used by every benchmark table of the package):

* a cell's value is the **mean over its n seeds** ± the **half-width of its 95% confidence
  interval**, ``h = t_{0.975, n-1} · s / √n`` with ``s`` the sample standard deviation (n − 1 in
  the denominator) and ``t`` the Student-t quantile with n − 1 degrees of freedom (exact, no
  scipy: :func:`t_quantile`). A cell with one seed has no interval (``h`` is NaN);
* a cell is **unstable** when its seed spread ``s`` exceeds ``max_std`` (default
  :data:`UNSTABLE_STD` = 0.05 accuracy). The flag describes the cell (seeds reach different
  outcomes), not the precision of its mean: it does not shrink as seeds are added;
* two tables **agree** on a cell when the cell's two intervals overlap
  (:func:`intervals_overlap`); digits are never compared.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

__all__ = ["LEVEL", "UNSTABLE_STD", "CellStats", "cell_stats", "compare", "intervals_overlap",
           "t_cdf", "t_quantile"]

#: confidence level of every interval
LEVEL = 0.95
#: seed standard deviation (in accuracy units) above which a cell is flagged unstable. 0.05 is
#: 3-8x the test-set sampling noise of one run (binomial sd √(a(1-a)/n_test): 0.006 for XOR's
#: 2,048 test points at 0.91, 0.015 for MNIST-1D's 1,000 at 0.68), so a larger spread means the
#: seeds end in different places, not that the test set is small; and at 5 seeds it makes the
#: 95% half-width 2.776·0.05/√5 ≈ 0.062, larger than most differences between methods.
UNSTABLE_STD = 0.05


def t_cdf(t: float, dof: int) -> float:
    """P(T ≤ t) for Student's t with integer ``dof`` ≥ 1 degrees of freedom.

    Closed form (Abramowitz & Stegun 26.7.3-4) with θ = atan(t/√ν): A = P(|T| ≤ |t|) is
    ``(2/π)(θ + sinθ Σ_{k odd terms} cos^{2j-1}θ ...)`` for odd ν and
    ``sinθ (1 + ½cos²θ + (1·3)/(2·4)cos⁴θ + ...)`` for even ν; exact up to rounding.
    """
    if dof < 1 or int(dof) != dof:
        raise ValueError(f"degrees of freedom must be an integer >= 1; got {dof!r}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    theta = math.atan(abs(t) / math.sqrt(dof))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if dof % 2 == 1:
        total, term = 0.0, math.cos(theta)
        for j in range(1, (dof - 1) // 2 + 1):  # cos θ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ ...)
            total += term
            term *= c2 * (2 * j) / (2 * j + 1)
        a = 2.0 / math.pi * (theta + s * total)
    else:
        total, term = 0.0, 1.0
        for j in range(1, dof // 2 + 1):  # 1 + ½ cos²θ + (1·3)/(2·4) cos⁴θ ...
            total += term
            term *= c2 * (2 * j - 1) / (2 * j)
        a = s * total
    a = min(max(a, 0.0), 1.0)
    return 0.5 + 0.5 * a if t >= 0 else 0.5 - 0.5 * a


def t_quantile(q: float, dof: int) -> float:
    """The q-quantile of Student's t with ``dof`` degrees of freedom (bisection on
    :func:`t_cdf` to 1e-12; e.g. ``t_quantile(0.975, 4)`` = 2.7764)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1); got {q!r}")
    if q < 0.5:
        return -t_quantile(1.0 - q, dof)
    t_cdf(0.0, dof)  # validates dof
    lo, hi = 0.0, 1.0
    while t_cdf(hi, dof) < q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, dof) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclasses.dataclass(frozen=True)
class CellStats:
    """Seed statistics of one table cell: ``n`` finite values, their ``mean``, sample ``std``
    (n − 1), ``half_width`` of the ``level`` confidence interval [``low``, ``high``],
    ``min``/``max``, and ``unstable`` (std > ``max_std``). NaN where undefined (n < 2)."""

    n: int
    mean: float
    std: float
    half_width: float
    low: float
    high: float
    min: float
    max: float
    unstable: bool
    level: float = LEVEL

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.half_width)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cell_stats(values: Iterable[float | None], level: float = LEVEL,
               max_std: float = UNSTABLE_STD) -> CellStats:
    """:class:`CellStats` of ``values`` (``None`` and non-finite values are left out: a diverged
    run has no accuracy; count those separately)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1); got {level!r}")
    if not (math.isfinite(max_std) and max_std >= 0):
        raise ValueError(f"max_std must be a finite number >= 0; got {max_std!r}")
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    nan = math.nan
    if n == 0:
        return CellStats(0, nan, nan, nan, nan, nan, nan, nan, False, level)
    mean = math.fsum(xs) / n
    if n == 1:
        return CellStats(1, mean, nan, nan, nan, nan, xs[0], xs[0], False, level)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return CellStats(n, mean, std, half, mean - half, mean + half, min(xs), max(xs),
                     std > max_std, level)


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when the closed intervals ``a = (low, high)`` and ``b`` share a point."""
    return a[0] <= b[1] and b[0] <= a[1]


def _interval(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """(low, high) of a row holding ``low``/``high`` or ``mean``/``half_width`` (None when it
    has no finite interval)."""
    if row.get("low") is not None and row.get("high") is not None:
        lo, hi = float(row["low"]), float(row["high"])
    elif row.get("mean") is not None and row.get("half_width") is not None:
        lo = float(row["mean"]) - float(row["half_width"])
        hi = float(row["mean"]) + float(row["half_width"])
    else:
        return None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def compare(old_rows: Sequence[Mapping[str, Any]], new_rows: Sequence[Mapping[str, Any]],
            key: Callable[[Mapping[str, Any]], Hashable] = lambda r: r["key"]
            ) -> list[dict[str, Any]]:
    """Cell-by-cell comparison of two tables by overlap of their confidence intervals.

    Each row is a mapping with a cell identity (``key(row)``, default ``row["key"]``) and an
    interval (``low``/``high``, or ``mean``/``half_width``). Returns one dict per key of either
    table, in ``old_rows`` order then new-only keys: ``key``, ``old``, ``new`` ((low, high) or
    None) and ``verdict``: ``"agree"`` (intervals overlap), ``"disagree"`` (disjoint),
    ``"no interval"`` (a side has fewer than 2 seeds), ``"only old"`` / ``"only new"``.
    """
    old = {key(r): r for r in old_rows}
    new = {key(r): r for r in new_rows}
    out = []
    for k in [*old, *(k for k in new if k not in old)]:
        a = _interval(old[k]) if k in old else None
        b = _interval(new[k]) if k in new else None
        if k not in new:
            verdict = "only old"
        elif k not in old:
            verdict = "only new"
        elif a is None or b is None:
            verdict = "no interval"
        else:
            verdict = "agree" if intervals_overlap(a, b) else "disagree"
        out.append({"key": k, "old": a, "new": b, "verdict": verdict})
    return out
