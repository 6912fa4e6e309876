"""Seed statistics: exact Student-t quantiles, confidence intervals, the unstable flag and the
comparison of two tables by overlap of intervals (hand-computed numbers)."""

import math

import pytest

from gradsurrogate.stats import (
    UNSTABLE_STD,
    cell_stats,
    compare,
    intervals_overlap,
    t_cdf,
    t_quantile,
)

# two-sided 95% critical values t_{0.975, dof}, dof = n - 1 for n = 2..31 seeds (printed tables)
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


@pytest.mark.parametrize("dof", range(1, 31))
def test_t_quantile_matches_printed_table(dof):
    assert t_quantile(0.975, dof) == pytest.approx(T975[dof - 1], abs=5e-4)


def test_t_distribution_closed_forms():
    # dof 1 is Cauchy: F(t) = 1/2 + atan(t)/π; dof 2: F(t) = 1/2 + t / (2 √(2 + t²))
    for t in (-3.0, -0.5, 0.0, 1.0, 7.5):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-14)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-14)
    assert t_quantile(0.75, 1) == pytest.approx(1.0, abs=1e-10)  # tan(π/4)
    assert t_quantile(0.025, 4) == pytest.approx(-2.7764451, abs=1e-6)
    assert t_quantile(0.995, 10) == pytest.approx(3.1692727, abs=1e-6)
    assert t_quantile(0.975, 100000) == pytest.approx(1.959964, abs=1e-4)  # → normal
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0.975, 0)
    with pytest.raises(ValueError, match="quantile level"):
        t_quantile(1.0, 3)


def test_t_against_scipy_when_present():
    special = pytest.importorskip("scipy.special")  # stdtr / stdtrit: the t CDF / quantile
    for dof in (1, 2, 3, 5, 9, 17, 40, 151):
        for q in (0.6, 0.9, 0.975, 0.995):
            assert t_quantile(q, dof) == pytest.approx(special.stdtrit(dof, q), rel=1e-9)
        for t in (-4.0, -1.2, 0.3, 2.5):
            assert t_cdf(t, dof) == pytest.approx(special.stdtr(dof, t), abs=1e-12)


def test_cell_stats_hand_computed():
    # 0.80..0.96 step 0.04: mean 0.88, s² = 2(0.04² + 0.08²)/4 = 0.004, h = t_{.975,4} s/√5
    s = cell_stats([0.80, 0.84, 0.88, 0.92, 0.96])
    assert s.n == 5 and s.mean == pytest.approx(0.88)
    assert s.std == pytest.approx(math.sqrt(0.004))
    assert s.half_width == pytest.approx(2.7764451 * math.sqrt(0.004) / math.sqrt(5), rel=1e-6)
    assert s.half_width == pytest.approx(0.078529, abs=1e-6)
    assert (s.low, s.high) == pytest.approx((0.88 - 0.078529, 0.88 + 0.078529), abs=1e-6)
    assert (s.min, s.max) == (0.80, 0.96)
    assert s.unstable  # std 0.063 > 0.05
    # 0.90, 0.91, 0.92: s = 0.01, h = 4.3027 · 0.01 / √3 = 0.024841; stable
    s = cell_stats([0.90, 0.91, 0.92])
    assert s.half_width == pytest.approx(0.024841, abs=1e-6) and not s.unstable
    assert s.has_interval


def test_cell_stats_threshold_is_a_parameter_and_edge_cases():
    values = [0.80, 0.84, 0.88, 0.92, 0.96]  # std 0.0632
    assert UNSTABLE_STD == 0.05
    assert not cell_stats(values, max_std=0.07).unstable
    assert cell_stats(values, max_std=0.06).unstable
    one = cell_stats([0.7, None, float("nan")])  # diverged runs (None/NaN) are left out
    assert one.n == 1 and one.mean == 0.7 and math.isnan(one.half_width)
    assert not one.has_interval and not one.unstable
    assert cell_stats([]).n == 0 and math.isnan(cell_stats([]).mean)
    # a 90% interval is narrower: t_{0.95,4} = 2.1318
    assert cell_stats(values, level=0.90).half_width == pytest.approx(
        2.1318468 * math.sqrt(0.004 / 5), rel=1e-6)
    with pytest.raises(ValueError, match="max_std"):
        cell_stats(values, max_std=float("inf"))


def test_compare_by_interval_overlap():
    assert intervals_overlap((0.1, 0.3), (0.3, 0.5))  # touching counts
    assert not intervals_overlap((0.1, 0.29), (0.3, 0.5))
    old = [{"key": "a", "mean": 0.90, "half_width": 0.01},   # [0.89, 0.91]
           {"key": "b", "low": 0.50, "high": 0.60},
           {"key": "c", "mean": 0.7, "half_width": None},     # one seed: no interval
           {"key": "d", "low": 0.1, "high": 0.2}]
    new = [{"key": "b", "low": 0.61, "high": 0.70},           # disjoint from [0.50, 0.60]
           {"key": "a", "mean": 0.92, "half_width": 0.015},  # [0.905, 0.935]: overlaps
           {"key": "c", "low": 0.6, "high": 0.8},
           {"key": "e", "low": 0.3, "high": 0.4}]
    out = {r["key"]: r for r in compare(old, new)}
    assert [r["key"] for r in compare(old, new)] == ["a", "b", "c", "d", "e"]
    assert out["a"]["verdict"] == "agree" and out["a"]["new"] == pytest.approx((0.905, 0.935))
    assert out["b"]["verdict"] == "disagree"
    assert out["c"]["verdict"] == "no interval"
    assert out["d"]["verdict"] == "only old" and out["e"]["verdict"] == "only new"
