"""Tests of gradsurrogate.integrate: accuracy against closed forms and scipy, gradients,
error estimates, schedules and error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from gradsurrogate.integrate import (
    INTEGRATORS,
    BentPath,
    NodeSchedule,
    ToleranceSchedule,
    get_integrator,
    kronrod_rule,
    line_integral,
    solve_path_ode,
)

F64 = torch.float64



def poly_jac(coef: torch.Tensor):
    """1-d ``p(x) = Σ_k coef_k x^k``; returns ``(p, jac)`` with ``jac (B, 1) -> (B, 1, 1)``."""
    k = torch.arange(coef.numel(), dtype=coef.dtype)

    def p(x):
        return (coef * x**k).sum(-1, keepdim=True)

    def jac(x):
        return (coef[1:] * k[1:] * x ** (k[1:] - 1)).sum(-1)[:, None, None]

    return p, jac


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 14), seed=st.integers(0, 10_000))
def test_gauss_legendre_exact_on_polynomials(n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    coef = torch.randn(2 * n + 1, generator=g, dtype=F64)  # p' has degree 2n - 1
    p, jac = poly_jac(coef)
    x0 = torch.rand(1, 1, generator=g, dtype=F64) * 2 - 1
    x1 = torch.rand(7, 1, generator=g, dtype=F64) * 2 - 1
    res = line_integral(jac, x0, x1, y0=p(x0), n=n)
    assert res.n_evals == n and res.n_calls == 1
    scale = coef.abs().sum().item()
    assert (res.value - p(x1)).abs().max().item() <= 1e-12 * max(1.0, scale)


def test_gauss_legendre_not_exact_beyond_degree() -> None:
    coef = torch.zeros(6, dtype=F64)
    coef[5] = 1.0  # p' = 5 x^4 has degree 4 > 2·2 - 1
    _, jac = poly_jac(coef)
    x1 = torch.ones(1, 1, dtype=F64)
    res = line_integral(jac, torch.zeros(1, dtype=F64), x1, n=2)
    assert abs(res.value.item() - 1.0) > 1e-3


@pytest.mark.parametrize("n", [1, 2, 4, 7, 10])
def test_kronrod_rule_exact_to_degree_3n_plus_1(n: int) -> None:
    t, wk, wg = kronrod_rule(n)
    assert t.shape == (2 * n + 1,) and np.all(wk > 0)
    for d in range(3 * n + 2):
        assert abs((wk * t**d).sum() - 1 / (d + 1)) < 1e-14
    for d in range(2 * n):  # embedded Gauss rule
        assert abs((wg * t**d).sum() - 1 / (d + 1)) < 1e-14
    if n == 7:  # classical G7-K15 outermost node on [-1, 1]
        assert abs((2 * t - 1).max() - 0.991455371120812639) < 1e-14


def field(x: torch.Tensor) -> torch.Tensor:
    """A non-conservative 2 -> 2 Jacobian field, ``(B, 2) -> (B, 2, 2)``."""
    a, b = x[:, 0], x[:, 1]
    rows = [
        torch.stack([torch.exp(torch.sin(a)), b * torch.cos(a)], -1),
        torch.stack([torch.tanh(a * b), 1 + a**2], -1),
    ]
    return torch.stack(rows, 1)


@pytest.mark.parametrize("path", ["straight", "bent"])
def test_matches_scipy_quad(path: str) -> None:
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 2, generator=g, dtype=F64)
    x1 = torch.randn(4, 2, generator=g, dtype=F64)
    pth = BentPath(0.7) if path == "bent" else None
    res = line_integral(field, x0, x1, method="gauss-legendre", path=pth or path, n=40)
    pfun = pth or (lambda t, a, b: (a + t[:, None, None] * (b - a), (b - a).expand(1, *a.shape)))
    for j in range(4):
        for o in range(2):

            def g_t(t, j=j, o=o):
                c, dc = pfun(torch.tensor([t], dtype=F64), x0[j : j + 1], x1[j : j + 1])
                return (field(c[0]) @ dc[0, :, :, None])[0, o, 0].item()

            ref, _ = quad(g_t, 0.0, 1.0, epsabs=1e-13, epsrel=1e-13, limit=200)
            assert abs(res.value[j, o].item() - ref) < 1e-10


def test_methods_agree_with_closed_form() -> None:
    x1 = torch.randn(6, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    x0 = torch.zeros(2, dtype=F64)
    jac = lambda x: torch.diag_embed(torch.cos(x))  # J of sin, elementwise
    tol = {"adaptive": 1e-6, "gauss-legendre": 1e-13, "gauss-kronrod": 1e-13, "rk4": 1e-6,
           "dopri5": 1e-6}
    for name in INTEGRATORS:
        res = line_integral(jac, x0, x1, y0=torch.zeros(2, dtype=F64), method=name)
        assert (res.value - torch.sin(x1)).abs().max().item() < tol[name], name
        assert res.n_evals > 0 and res.method == name


def test_rk4_is_exact_for_cubics_and_fourth_order_on_odes() -> None:
    coef = torch.tensor([0.3, -1.0, 2.0, 0.5, -0.7], dtype=F64)  # p' cubic
    p, jac = poly_jac(coef)
    x1 = torch.tensor([[1.5], [-0.4]], dtype=F64)
    res = line_integral(jac, torch.zeros(1, dtype=F64), x1, p(torch.zeros(1, 1, dtype=F64)),
                        method="rk4", steps=3)
    assert (res.value - p(x1)).abs().max().item() < 1e-12
    z0 = torch.ones(1, 1, dtype=F64)
    errs = [abs(solve_path_ode(lambda t, z: -z, z0, "rk4", steps=s).value.item() - math.exp(-1))
            for s in (8, 16)]
    assert 12 < errs[0] / errs[1] < 20  # ≈ 2^4


def test_error_estimates_bound_actual_error() -> None:
    x1 = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=F64) * 2
    x0 = torch.zeros(2, dtype=F64)
    exact = line_integral(field, x0, x1, n=60).value
    for method, opts in [("gauss-legendre", {"n": 4, "error": "double"}),
                         ("gauss-kronrod", {"n": 4})]:
        res = line_integral(field, x0, x1, method=method, **opts)
        actual = (res.value - exact).abs()
        assert res.error is not None and not res.error.requires_grad
        assert torch.all(actual <= res.error + 1e-15)
        assert res.error.max().item() > 0
    assert line_integral(field, x0, x1, n=4, error="double").n_evals == 12


def test_gradcheck_through_quadratures() -> None:
    g = torch.Generator().manual_seed(4)
    W = torch.randn(3, 2, generator=g, dtype=F64, requires_grad=True)
    x0 = torch.randn(2, 2, generator=g, dtype=F64, requires_grad=True)
    x1 = torch.randn(2, 2, generator=g, dtype=F64, requires_grad=True)
    y0 = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)

    def make(method, opts, path):
        def fn(W, x0, x1, y0):
            jac = lambda x: torch.tanh(x @ W.T)[:, :, None] * W[None] + W[None] ** 2
            return line_integral(jac, x0, x1, y0, method=method, path=path, **opts).value
        return fn

    for method, opts in [("gauss-legendre", {"n": 5}), ("gauss-kronrod", {"n": 3}),
                         ("rk4", {"steps": 3}), ("gauss-legendre", {"n": 3, "error": "double"})]:
        for path in ("straight", "bent"):
            assert torch.autograd.gradcheck(make(method, opts, path), (W, x0, x1, y0))


def test_dopri5_gradients_match_gauss_legendre_and_adjoint() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    net = net.double()
    jac = lambda x: net(x)[:, :, None]
    x1 = torch.linspace(-1, 1, 5, dtype=F64)[:, None]
    x0 = torch.zeros(1, dtype=F64)
    grads = []
    for method, opts in [("gauss-legendre", {"n": 24}), ("dopri5", {"rtol": 1e-10, "atol": 1e-12}),
                         ("dopri5", {"rtol": 1e-10, "atol": 1e-12, "adjoint": True,
                                     "adjoint_params": tuple(net.parameters())})]:
        net.zero_grad()
        line_integral(jac, x0, x1, method=method, **opts).value.pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-8)
    assert torch.allclose(grads[0], grads[2], atol=1e-8)


def test_dtype_and_shape_follow_inputs() -> None:
    x1 = torch.randn(3, 2)
    res = line_integral(field, torch.zeros(2), x1, y0=torch.ones(2))
    assert res.value.dtype == torch.float32 and res.value.shape == (3, 2)
    res = line_integral(lambda x: field(x)[:, :1], torch.zeros(2), x1, method="dopri5")
    assert res.value.shape == (3, 1)


def test_solve_path_ode_dopri5() -> None:
    z0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    res = solve_path_ode(lambda t, z: t * z, z0, rtol=1e-10, atol=1e-12)
    assert (res.value - z0 * math.exp(0.5)).abs().max().item() < 1e-8
    assert res.n_evals > 0


def test_schedules() -> None:
    s = ToleranceSchedule()
    assert s.options() == {"rtol": 0.1, "atol": 0.1}
    assert not s.step(0.5, y_mag=1.0)  # 0.5 >= 0.1 + 0.1
    assert s.step(0.15, y_mag=1.0)  # 0.15 < 0.2 -> halve
    assert s.options() == {"rtol": 0.05, "atol": 0.05} and s.history == [(0.1, 0.1)] * 2
    ns = NodeSchedule(n=4, max_n=16)
    assert not ns.step(1.0) and ns.n == 4
    assert ns.step(0.01) and ns.n == 8 and ns.atol == 0.05  # tightened, no estimate: double
    assert not ns.step(1.0, error=1e-3) and ns.n == 8  # estimate below tolerance
    assert ns.step(1.0, error=1.0) and ns.n == 16
    assert not ns.step(1.0, error=1.0) and ns.n == 16  # capped
    assert ns.options() == {"n": 16}


def test_error_messages() -> None:
    x = torch.zeros(2, 1)
    jac = lambda x: x[:, :, None]
    with pytest.raises(ValueError, match=r"unknown integrator 'simpson'.*gauss-legendre"):
        line_integral(jac, x, x, method="simpson")
    with pytest.raises(ValueError, match=r"unknown option of integrator 'rk4': 'tol'; "
                                         r"accepted: steps"):
        get_integrator("rk4", tol=1)
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 4096\]; got 0"):
        get_integrator("gauss-legendre", n=0)
    with pytest.raises(ValueError, match="unknown gauss-legendre error mode"):
        get_integrator("gauss-legendre", error="richardson")
    with pytest.raises(ValueError, match=r"x1 must have shape \(n, d_in\)"):
        line_integral(jac, x, torch.zeros(2))
    with pytest.raises(ValueError, match=r"x0 must be \(d_in,\), \(1, d_in\) or \(n, d_in\)"):
        line_integral(jac, torch.zeros(3, 1), x)
    with pytest.raises(ValueError, match="unknown path 'zigzag'"):
        line_integral(jac, x, x, path="zigzag")
    with pytest.raises(ValueError, match="BentPath needs d_in >= 2"):
        line_integral(jac, x, x, path="bent")
    with pytest.raises(ValueError, match=r"jac must map \(B, 1\) to \(B, d_out, 1\)"):
        line_integral(lambda x: x, x, x)
    with pytest.raises(ValueError, match="cannot solve ODEs"):
        solve_path_ode(lambda t, z: z, x, method="gauss-legendre")
    with pytest.raises(ValueError, match="adjoint_params"):
        get_integrator("dopri5", adjoint=True)


@pytest.mark.parametrize("build, message", [
    (lambda: get_integrator("gauss-legendre", n=float("nan")), r"node count n .*got nan"),
    (lambda: get_integrator("gauss-legendre", n=float("inf")), r"node count n .*got inf"),
    (lambda: get_integrator("gauss-legendre", n=2.5), r"node count n .*got 2.5"),
    (lambda: get_integrator("gauss-legendre", n=True), r"node count n .*got True"),
    (lambda: get_integrator("gauss-legendre", n=10**6), r"in \[1, 4096\]; got 1000000"),
    (lambda: get_integrator("gauss-kronrod", n=float("nan")), r"gauss-kronrod node count"),
    (lambda: get_integrator("rk4", steps=float("inf")), r"rk4 steps .*got inf"),
    (lambda: get_integrator("dopri5", rtol=float("nan")), r"dopri5 rtol must be a finite"),
    (lambda: get_integrator("dopri5", atol=0.0), r"dopri5 atol must be a finite .*got 0.0"),
    (lambda: get_integrator("dopri5", atol=1e300), r"dopri5 atol .*got 1e\+300"),
    (lambda: get_integrator("dopri5", max_num_steps=0), r"max_num_steps .*>= 1; got 0"),
    (lambda: BentPath(float("inf")), r"BentPath amount .*got inf"),
    (lambda: BentPath(0.5, plane=(1, 1)), r"two distinct coordinates"),
    (lambda: ToleranceSchedule(atol=float("nan")), r"schedule atol .*got nan"),
    (lambda: ToleranceSchedule(factor=1.0), r"schedule factor .*\(0, 1\); got 1.0"),
    (lambda: NodeSchedule(n=8, max_n=4), r"schedule max_n must be an integer >= 8; got 4"),
    (lambda: solve_path_ode(lambda t, z: z, torch.zeros(1, 1), t1=float("nan")),
     r"t1 must be a finite number"),
    (lambda: line_integral(field, torch.zeros(2), torch.ones(3, 2, dtype=torch.long)),
     r"x1 must be a floating-point tensor; got dtype torch.int64"),
    (lambda: line_integral(field, torch.zeros(2), torch.ones(0, 2), method="dopri5"),
     r"x1 must hold at least one point; got shape \(0, 2\)"),
    (lambda: solve_path_ode(lambda t, z: z, torch.ones(2, 1, dtype=torch.int32)),
     r"z0 must be a floating-point tensor"),
])
def test_bad_numbers_raise_value_errors_naming_them(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_names_are_normalised_and_integral_floats_accepted() -> None:
    assert get_integrator(" Gauss-Legendre ", n=8.0).n == 8
    assert get_integrator("RK4", steps=3).steps == 3
