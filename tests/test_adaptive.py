"""Tests of the adaptive Gauss–Kronrod integrator (the default of ``line_integral`` and of
JacNet's forward): tolerance met against ``scipy.integrate.quad`` on kinked (piecewise-linear
Jacobians of LeakyReLU/ReLU networks, |x|-like) and smooth integrands in float64 and float32,
error estimates bound the true error, gradients (gradcheck), evaluations against fixed nodes,
one Jacobian call per refinement level, budgets and bad options."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from torch import nn

from gradsurrogate.integrate import (
    DEFAULT_TOLERANCES,
    Adaptive,
    AdaptiveWarning,
    BentPath,
    get_integrator,
    line_integral,
)
from gradsurrogate.integrate.adaptive import leaf_rule
from gradsurrogate.jacnet import JacNet

F64 = torch.float64


class MLPJac(nn.Module):
    """``J(x) = net(x)`` reshaped to ``(o, i)``; ``net`` has one hidden layer (``act``), so along
    a straight line ``J`` is piecewise linear with a kink where a hidden unit switches."""

    def __init__(self, d_in: int, d_out: int, hidden: int, act: nn.Module, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.d_in, self.d_out = d_in, d_out
        self.net = nn.Sequential(nn.Linear(d_in, hidden), act, nn.Linear(hidden, d_out * d_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(-1, self.d_out, self.d_in)

    def kinks(self, x0: np.ndarray, x1: np.ndarray) -> list[float]:
        """Parameters ``t ∈ (0, 1)`` where a hidden pre-activation crosses zero."""
        lin = self.net[0]
        w, b = lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()
        num, den = -(w @ x0 + b), w @ (x1 - x0)
        t = num[den != 0] / den[den != 0]
        return sorted(float(v) for v in t if 0 < v < 1)


def abs_jac(x: torch.Tensor) -> torch.Tensor:
    """1-d, ``J(x) = Σ_k a_k |x - c_k|``: kinks at ``c_k``."""
    c = torch.tensor([-1.3, -0.4, 0.05, 0.7, 1.6], dtype=x.dtype)
    a = torch.tensor([1.0, -2.0, 3.0, 0.5, -1.5], dtype=x.dtype)
    return (a * (x - c).abs()).sum(-1)[:, None, None]


def abs_kinks(x0: np.ndarray, x1: np.ndarray) -> list[float]:
    c = np.array([-1.3, -0.4, 0.05, 0.7, 1.6])
    t = (c - x0[0]) / (x1[0] - x0[0])
    return sorted(float(v) for v in t if 0 < v < 1)


def quad_ref(jac, x0: torch.Tensor, x1: torch.Tensor, kinks=None) -> torch.Tensor:
    """``∫_0^1 J(c(t)) c'(t) dt`` per point and output by ``scipy.integrate.quad`` (float64,
    epsabs = epsrel = 1e-12, the kinks given as break points)."""
    out = []
    for a, b in zip(x0.double(), x1.double()):
        a_np, b_np = a.numpy(), b.numpy()
        pts = kinks(a_np, b_np) if kinks else None

        def g(t: float, k: int, a=a, b=b) -> float:
            c = (a + t * (b - a))[None]
            with torch.no_grad():
                return float((jac(c)[0] @ (b - a))[k])

        d_out = jac(a[None]).shape[1]
        out.append([quad(g, 0.0, 1.0, args=(k,), points=pts, epsabs=1e-12, epsrel=1e-12,
                         limit=500)[0] for k in range(d_out)])
    return torch.tensor(out, dtype=F64)


def leaky(d_in: int = 1, d_out: int = 1, hidden: int = 32, seed: int = 0, slope: float = 0.01):
    act = nn.LeakyReLU(slope) if slope else nn.ReLU()
    return MLPJac(d_in, d_out, hidden, act, seed).double()


def ends(n: int, d: int, seed: int, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=F64) * 0.3,
            (torch.rand(n, d, generator=g, dtype=F64) * 2 - 1) * scale)


KINKED = {
    "leaky 1-d": lambda: (leaky(1, 1, 32, 0), *ends(12, 1, 0)),
    "relu 2-d -> 2": lambda: (leaky(2, 2, 24, 1, slope=0.0), *ends(6, 2, 1)),
    "abs": lambda: (abs_jac, *ends(12, 1, 2)),
}


def tolerance(value: torch.Tensor, rtol: float, atol: float) -> torch.Tensor:
    return (rtol * value.abs()).clamp_min(atol)


@pytest.mark.parametrize("case", sorted(KINKED))
@pytest.mark.parametrize("rtol, atol", [(1e-6, 1e-6), (1e-9, 1e-10)])
def test_tolerance_met_on_kinked_integrands_float64(case: str, rtol: float, atol: float) -> None:
    jac, x0, x1 = KINKED[case]()
    kinks = jac.kinks if isinstance(jac, MLPJac) else abs_kinks
    ref = quad_ref(jac, x0, x1, kinks)
    with torch.no_grad():
        res = line_integral(jac, x0, x1, rtol=rtol, atol=atol)
    err = (res.value - ref).abs()
    assert res.method == "adaptive" and bool(res.converged.all())
    assert torch.all(err <= tolerance(ref, rtol, atol))
    assert torch.all(err <= res.error + 1e-14)  # the estimate bounds the true error
    assert res.error.max().item() <= tolerance(ref, rtol, atol).max().item() * 1.01


def test_tolerance_met_on_smooth_integrands_and_bent_paths() -> None:
    torch.manual_seed(3)
    jac = MLPJac(2, 2, 16, nn.Tanh(), 3).double()
    x0, x1 = ends(5, 2, 3)
    for path in ("straight", BentPath(0.7)):
        with torch.no_grad():
            res = line_integral(jac, x0, x1, path=path, rtol=1e-10, atol=1e-10)
            ref = line_integral(jac, x0, x1, path=path, n=200).value  # smooth: GL is exact
        err = (res.value - ref).abs()
        assert torch.all(err <= tolerance(ref, 1e-10, 1e-10)) and torch.all(err <= res.error)
    # a callable path (no vectorised pointwise form) gives the same numbers
    def straight(t, a, b):
        return a + t[:, None, None] * (b - a), (b - a).expand(t.shape[0], *a.shape)

    with torch.no_grad():
        a = line_integral(jac, x0, x1, rtol=1e-10, atol=1e-10).value
        b = line_integral(jac, x0, x1, path=straight, rtol=1e-10, atol=1e-10).value
    assert torch.allclose(a, b, rtol=0, atol=1e-14)


@pytest.mark.parametrize("case", ["leaky 1-d", "abs"])
def test_float32_default_tolerance_relative(case: str) -> None:
    jac64, x0, x1 = KINKED[case]()
    kinks = jac64.kinks if isinstance(jac64, MLPJac) else abs_kinks
    ref = quad_ref(jac64, x0, x1, kinks)
    jac32 = jac64.float() if isinstance(jac64, MLPJac) else abs_jac
    with torch.no_grad():
        res = line_integral(jac32, x0.float(), x1.float())
    assert DEFAULT_TOLERANCES[torch.float32] == (1e-5, 1e-4)
    assert res.value.dtype == torch.float32 and bool(res.converged.all())
    err = (res.value.double() - ref).abs()
    assert torch.all(err <= 1e-4 * ref.abs().clamp_min(1.0))
    assert torch.all(err <= res.error.double() + 4e-7 * ref.abs().clamp_min(1.0))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), hidden=st.integers(4, 48),
       tol=st.sampled_from([1e-5, 1e-7, 1e-9]))
def test_tolerance_met_on_random_leaky_networks(seed: int, hidden: int, tol: float) -> None:
    jac = leaky(1, 1, hidden, seed)
    x0, x1 = ends(4, 1, seed, scale=3.0)
    ref = quad_ref(jac, x0, x1, jac.kinks)
    with torch.no_grad():
        res = line_integral(jac, x0, x1, rtol=tol, atol=tol)
    err = (res.value - ref).abs()
    assert torch.all(err <= tolerance(ref, tol, tol)) and torch.all(err <= res.error + 1e-14)


def test_fewer_evaluations_than_fixed_nodes_at_equal_accuracy() -> None:
    jac, x0, x1 = KINKED["leaky 1-d"]()
    ref = quad_ref(jac, x0, x1, jac.kinks)
    with torch.no_grad():
        res = line_integral(jac, x0, x1, rtol=1e-8, atol=1e-8)
        err = (res.value - ref).abs().max().item()
        # Gauss–Legendre with twice the adaptive's mean evaluations per point is less accurate
        gl = line_integral(jac, x0, x1, n=2 * res.n_evals)
        gl_err = (gl.value - ref).abs().max().item()
    assert res.total_evals == res.evals.sum().item() < gl.total_evals / 2
    assert err < gl_err / 2, (err, gl_err, res.n_evals)


def test_one_jacobian_call_per_level_and_converged_points_stop() -> None:
    jac, _, _ = KINKED["leaky 1-d"]()
    rows: list[int] = []

    def counted(x: torch.Tensor) -> torch.Tensor:
        rows.append(x.shape[0])
        return jac(x)

    x0 = torch.zeros(4, 1, dtype=F64)
    x1 = torch.tensor([[0.0], [1e-3], [2.0], [-2.0]], dtype=F64)  # empty, tiny, long, long
    k = leaf_rule(7)[0].size
    with torch.no_grad():
        res = line_integral(counted, x0, x1, rtol=1e-9, atol=1e-9)
    assert len(rows) == res.n_calls > 3
    assert rows[0] == 4 * k and all(r % k == 0 for r in rows)  # whole leaves, all points
    assert sum(rows) == res.total_evals
    assert res.evals.tolist()[:2] == [k, k]  # converged at once: not refined further
    assert res.evals[2] > 10 * k and res.evals[3] > 10 * k
    rows.clear()  # with gradients: one more call re-evaluates the accepted leaves
    res = line_integral(counted, x0, x1, rtol=1e-9, atol=1e-9)
    assert res.value.requires_grad and len(rows) == res.n_calls and sum(rows) == res.total_evals


def test_gradcheck_through_adaptive_path() -> None:
    torch.manual_seed(5)
    w1 = torch.randn(6, 1, dtype=F64, requires_grad=True)
    b1 = torch.randn(6, dtype=F64, requires_grad=True)
    w2 = torch.randn(1, 6, dtype=F64, requires_grad=True)
    x0 = torch.zeros(1, dtype=F64)
    # the last point converges at the first level (keeps its graph), the others are refined
    x1 = torch.tensor([[1.7], [-1.2], [0.4], [1e-4]], dtype=F64, requires_grad=True)

    def fn(w1, b1, w2, x1):
        jac = lambda x: (torch.nn.functional.leaky_relu(x @ w1.T + b1, 0.1) @ w2.T)[:, :, None]
        res = line_integral(jac, x0, x1, rtol=1e-13, atol=1e-13)
        assert res.n_calls > 2 and res.evals[-1] == 17 and res.evals[0] > 17
        return res.value

    assert torch.autograd.gradcheck(fn, (w1, b1, w2, x1))


def test_budget_runs_out_with_a_warning_and_the_best_estimate() -> None:
    step = lambda x: (x > 0.3).to(x.dtype)[:, :, None]  # a jump: converges slowly
    x0, x1 = torch.zeros(2, 1, dtype=F64), torch.tensor([[1.0], [0.2]], dtype=F64)
    with pytest.warns(AdaptiveWarning, match=r"1 of 2 points did not reach rtol=1e-12"):
        res = line_integral(step, x0, x1, rtol=1e-12, atol=1e-12, max_levels=5)
    assert res.converged.tolist() == [False, True] and res.n_calls == 6
    assert abs(res.value[0, 0].item() - 0.7) <= res.error[0, 0].item()
    with pytest.warns(AdaptiveWarning):
        res = line_integral(step, x0, x1, rtol=1e-12, atol=1e-12, limit=8)
    assert res.evals[0].item() <= 15 * 17 and not res.converged[0]
    with pytest.warns(AdaptiveWarning):  # unreachable tolerance: stops at the width floor
        res = line_integral(step, x0, x1, rtol=1e-300, atol=1e-300, max_levels=200)
    assert abs(res.value[0, 0].item() - 0.7) < 1e-12


def test_non_finite_integrand_returns_nan_without_refining() -> None:
    bad = lambda x: torch.log(x)[:, :, None]  # nan for x < 0
    x0 = torch.zeros(2, 1, dtype=F64) + 0.5
    x1 = torch.tensor([[-1.0], [1.0]], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = line_integral(bad, x0, x1)
    assert torch.isnan(res.value[0, 0]) and not res.converged[0] and bool(res.converged[1])


def test_defaults_follow_dtype_and_method_resolution() -> None:
    assert get_integrator().name == "adaptive"
    assert get_integrator(n=8).name == "gauss-legendre"  # a node count asks for fixed nodes
    ad = get_integrator("adaptive")
    assert ad.tolerances(F64) == DEFAULT_TOLERANCES[F64] == (1e-7, 1e-6)
    assert ad.tolerances(torch.float32) == DEFAULT_TOLERANCES[torch.float32] == (1e-5, 1e-4)
    assert get_integrator("adaptive", rtol=1e-3).tolerances(F64) == (1e-3, 1e-6)
    m = JacNet(1, 1)
    assert m.integrate(torch.ones(2, 1)).method == "adaptive"
    assert m.integrate(torch.ones(2, 1), n=8).method == "gauss-legendre"


@pytest.mark.parametrize("structure, opts", [("invertible", {"eps": 1e-4}),
                                             ("none", {"bound": 10.0}), ("lipschitz", {}),
                                             ("none", {})])
def test_jacnet_default_forward_meets_the_issue_targets(structure: str, opts: dict) -> None:
    torch.manual_seed(11)
    m = JacNet(1, 1, 64, 1, structure, y0=torch.ones(1), **opts).double()
    x = torch.linspace(-2, 2, 9, dtype=F64)[:, None]
    lin = m.net[0]
    w, b = lin.weight.detach()[:, 0].numpy(), lin.bias.detach().numpy()
    kinks = lambda a, c: sorted(float(t) for t in (-(b + w * a[0]) / (w * (c[0] - a[0]) + 1e-300))
                                if 0 < t < 1)
    ref = quad_ref(m.jacobian, torch.zeros_like(x), x, kinks) + 1.0
    with torch.no_grad():
        err64 = (m(x) - ref).abs().max().item()
        y32 = m.float()(x.float()).double()
    assert err64 <= 1e-6
    assert ((y32 - ref).abs() / ref.abs().clamp_min(1.0)).max().item() <= 1e-4


@pytest.mark.parametrize("opts, message", [
    ({"rtol": float("nan")}, r"adaptive rtol must be a finite number .*got nan"),
    ({"rtol": 0.0}, r"adaptive rtol must be a finite number in \(0, .*got 0.0"),
    ({"atol": float("inf")}, r"adaptive atol .*got inf"),
    ({"atol": -1e-3}, r"adaptive atol .*got -0.001"),
    ({"gauss_nodes": 0}, r"adaptive gauss_nodes must be an integer in \[1, 30\]; got 0"),
    ({"limit": 0}, r"adaptive limit must be an integer in \[1, 1000000\]; got 0"),
    ({"limit": 2.5}, r"adaptive limit .*got 2.5"),
    ({"max_levels": -1}, r"adaptive max_levels must be an integer in \[0, 200\]; got -1"),
    ({"split": 1.0}, r"adaptive split must be a finite number in \(0, 1\); got 1.0"),
    ({"initial": 4, "limit": 2}, r"adaptive limit must be an integer in \[4, 1000000\]; got 2"),
    ({"n": 8}, r"unknown option of integrator 'adaptive': 'n'; accepted: rtol, atol"),
])
def test_bad_options_raise_value_errors_naming_them(opts: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_integrator("adaptive", **opts)


def test_leaf_rule_estimate_bounds_single_kinks_and_jumps() -> None:
    for g in (3, 7, 10):
        t, w, tail = leaf_rule(g)
        assert t.size == 2 * g + 3 and abs(w.sum() - 1) < 1e-14 and np.all(w[:-2] > 0)
        c = np.random.default_rng(g).uniform(0, 1, 3000)
        f = np.maximum(0.0, t[None] - c[:, None])
        err = np.abs(f @ w - (1 - c) ** 2 / 2)
        assert np.all(np.linalg.norm(f @ tail.T, axis=1) >= 1.9 * err)
        x = t ** np.arange(2 * g + 3 - tail.shape[0])[:, None]  # low-degree polynomials
        assert np.abs(x @ tail.T).max() < 1e-10


def test_adaptive_instance_and_option_validation_keep_types() -> None:
    ad = Adaptive(rtol=1e-6, gauss_nodes=5.0, limit=100)
    assert ad.gauss_nodes == 5 and ad.limit == 100 and ad.atol is None
