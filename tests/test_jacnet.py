"""Tests of gradsurrogate.jacnet: structure guarantees, inverses, path dependence, errors and
quick versions of the paper's experiments."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurrogate.jacnet import STRUCTURES, JacNet

F64 = torch.float64



def model(d_in: int, d_out: int, structure: str, seed: int, scale: float = 1.0, **kw) -> JacNet:
    torch.manual_seed(seed)
    m = JacNet(d_in, d_out, hidden=16, structure=structure, activation="tanh", **kw).double()
    with torch.no_grad():
        for p in m.net[-1].parameters():
            p.mul_(scale)
    return m


def points(n: int, d: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64) * scale


@settings(max_examples=12, deadline=None)
@given(d=st.integers(1, 4), seed=st.integers(0, 1000), scale=st.sampled_from([0.1, 1.0, 30.0]))
def test_invertible_and_orientation_guarantees(d: int, seed: int, scale: float) -> None:
    x = points(32, d, seed)
    J = model(d, d, "invertible", seed, scale, eps=1e-3).jacobian(x)
    assert torch.allclose(J, J.transpose(1, 2))
    assert torch.linalg.eigvalsh(J).min().item() >= 1e-3 * (1 - 1e-9)
    J = model(d, d, "orientation", seed, min(scale, 1.0)).jacobian(x)
    sign, _ = torch.linalg.slogdet(J)
    assert torch.all(sign > 0)
    if d > 1:  # not confined to symmetric positive-definite matrices
        assert not torch.allclose(J, J.transpose(1, 2))


@settings(max_examples=12, deadline=None)
@given(d_in=st.integers(1, 4), d_out=st.integers(1, 4), seed=st.integers(0, 1000),
       scale=st.sampled_from([0.01, 1.0, 100.0]), k=st.sampled_from([0.5, 1.0, 3.0]))
def test_lipschitz_operator_norm_bound(d_in: int, d_out: int, seed: int, scale: float,
                                       k: float) -> None:
    m = model(d_in, d_out, "lipschitz", seed, scale, k=k)
    x = points(64, d_in, seed)
    norms = torch.linalg.matrix_norm(m.jacobian(x), ord=2)
    assert norms.max().item() <= k * (1 + 1e-12)
    if scale == 100.0:
        assert norms.max().item() > 0.9 * k  # the bound is approached, not just respected
    a, b = x[:32], x[32:]  # the integrated function is k-Lipschitz
    ya, yb = m(a, x0=b, y0=m(b, n=48), n=48), m(b, n=48)
    assert torch.all((ya - yb).norm(dim=-1) <= k * (a - b).norm(dim=-1) + 1e-9)


def test_lipschitz_is_k_tanh_in_1d() -> None:
    m = model(1, 1, "lipschitz", 0, k=2.0)
    x = points(10, 1, 0)
    assert torch.allclose(m.jacobian(x)[:, 0, 0], 2.0 * torch.tanh(m.net(x)[:, 0]))


@pytest.mark.parametrize("d_in,d_out", [(2, 2), (4, 2), (2, 6)])
def test_complex_satisfies_cauchy_riemann(d_in: int, d_out: int) -> None:
    J = model(d_in, d_out, "complex", 1).jacobian(points(20, d_in, 1))
    du_da, du_db = J[:, 0::2, 0::2], J[:, 0::2, 1::2]
    dv_da, dv_db = J[:, 1::2, 0::2], J[:, 1::2, 1::2]
    assert torch.equal(du_da, dv_db) and torch.equal(du_db, -dv_da)
    assert du_db.abs().max() > 1e-3


def test_complex_learns_a_holomorphic_map_exactly_representable() -> None:
    # z -> z² has Jacobian [[2a, -2b], [2b, 2a]]: a complex JacNet integrates it exactly
    m = model(2, 2, "complex", 0)
    m.net = torch.nn.Linear(2, 2, bias=False).double()  # raw (a, b) = 2 (Re z, Im z)
    with torch.no_grad():
        m.net.weight.copy_(2 * torch.eye(2))
    x = points(8, 2, 3)
    z = torch.complex(x[:, 0], x[:, 1]) ** 2
    assert torch.allclose(m(x), torch.stack([z.real, z.imag], -1), atol=1e-12)


def test_conservative_is_curl_free_and_path_independent() -> None:
    x = points(16, 3, 2, scale=1.0)
    cons = model(3, 1, "conservative", 2)
    J = cons.jacobian(x)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(cons.net(xg).sum(), xg)
    assert torch.allclose(J[:, 0], grad)
    H = torch.autograd.functional.jacobian(lambda z: cons.jacobian(z[None])[0, 0], x[0])
    assert torch.allclose(H, H.T, atol=1e-12)  # curl-free
    assert cons.path_gap(x, n=32).max().item() < 1e-12
    free = model(3, 1, "none", 2)
    assert free.path_gap(x, n=32).max().item() > 1e-3
    cons(x).sum().backward()  # trainable through create_graph
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cons.net.parameters())


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_every_structure_trains_and_follows_dtype(structure: str) -> None:
    d_in, d_out = (2, 1) if structure == "conservative" else (2, 2)
    torch.manual_seed(0)
    m = JacNet(d_in, d_out, hidden=8, structure=structure, learn_y0=True)
    y = m(torch.randn(5, d_in))
    assert y.dtype == torch.float32 and y.shape == (5, d_out)
    y.pow(2).sum().backward()
    assert m.y0.grad is not None and all(p.grad is not None for p in m.net.parameters())
    m64 = m.double()
    assert m64(torch.randn(3, d_in, dtype=F64)).dtype == F64


@pytest.mark.parametrize("structure", ["invertible", "orientation"])
def test_inverse_round_trip_1d(structure: str) -> None:
    # eps = 0.05 keeps dx/dy = 1/J bounded (J = a² + eps with tiny eps makes the ODE stiff
    # where the raw output a crosses zero; see docs/jacnet.md)
    m = model(1, 1, structure, 5, **({"eps": 0.05} if structure == "invertible" else {}))
    x = points(20, 1, 5, scale=1.5)
    y = m(x, n=64)
    tol = {"rtol": 1e-10, "atol": 1e-10}
    assert (m.inverse(y, **tol) - x).abs().max().item() < 1e-7
    assert (m.inverse(y, refine=2, **tol) - x).abs().max().item() < 1e-12
    if structure == "orientation":  # well conditioned: J = exp(raw) is not near 0
        assert (m.inverse(y, method="rk4", steps=100) - x).abs().max().item() < 1e-6


def test_inverse_round_trip_nd_with_refinement() -> None:
    m = model(3, 3, "orientation", 7, scale=0.3)
    x = points(10, 3, 7, scale=1.0)
    y = m(x, n=48)
    plain = (m.inverse(y) - x).abs().max().item()
    refined = (m.inverse(y, refine=8) - x).abs().max().item()
    assert refined < 1e-10 and refined < plain


def test_anchor_from_data_point() -> None:
    m = model(1, 1, "none", 0)
    m.set_anchor(torch.tensor([0.5], dtype=F64), torch.tensor([2.0], dtype=F64))
    assert torch.allclose(m(torch.tensor([[0.5]], dtype=F64)), torch.tensor([[2.0]], dtype=F64))
    x = points(4, 1, 0)
    assert torch.allclose(m(x, method="dopri5", rtol=1e-10, atol=1e-10), m(x, n=64), atol=1e-8)


def test_error_messages() -> None:
    with pytest.raises(ValueError, match=r"unknown structure 'monotone'.*invertible"):
        JacNet(1, 1, structure="monotone")
    with pytest.raises(ValueError, match="'invertible' needs d_in == d_out"):
        JacNet(2, 3, structure="invertible")
    with pytest.raises(ValueError, match="'orientation' needs d_in == d_out"):
        JacNet(1, 2, structure="orientation")
    with pytest.raises(ValueError, match="'complex' needs even d_in and d_out"):
        JacNet(3, 2, structure="complex")
    with pytest.raises(ValueError, match=r"'conservative'.*needs d_out == 1"):
        JacNet(2, 2, structure="conservative")
    with pytest.raises(ValueError, match=r"unknown option of structure 'invertible': 'k'; "
                                         r"accepted: eps"):
        JacNet(1, 1, structure="invertible", k=1.0)
    with pytest.raises(ValueError, match="structure 'orientation' takes no options"):
        JacNet(1, 1, structure="orientation", eps=1.0)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        JacNet(1, 1, activation="swish")
    with pytest.raises(ValueError, match="inverse needs an invertible structure"):
        JacNet(1, 1, structure="lipschitz").inverse(torch.zeros(2, 1), pseudo=False)
    with pytest.raises(ValueError, match="path dependence needs d_in >= 2"):
        JacNet(1, 1).path_gap(torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"y must have shape \(n, 2\)"):
        JacNet(2, 2, structure="invertible").inverse(torch.zeros(2, 1))


def test_exp_experiment_quick() -> None:
    from gradsurrogate.jacnet.exp1d import Config1D, run_1d

    r = run_1d(Config1D(target="exp", seed=2, grid=401))
    s, b = r["structured"], r["baseline"]
    assert s["test_mae"] < 0.2 and s["test_mae"] < b["test_mae"]
    assert s["min_slope"] > 0 and s["min_J"] >= 1e-4 * (1 - 1e-6)  # monotone on [-2, 2]
    assert s["inverse_mae"] < 0.3 and s["round_trip_max"] < 0.05
    assert s["history"][-1]["loss"] < s["history"][0]["loss"] / 5


def test_abs_experiment_quick() -> None:
    from gradsurrogate.jacnet.exp1d import Config1D, run_1d

    r = run_1d(Config1D(target="abs", seed=2, grid=401))
    s, b = r["structured"], r["baseline"]
    assert s["test_mae"] < 0.15 and s["test_mae"] < b["test_mae"] / 3
    assert s["max_abs_slope"] <= 1 + 1e-6 and s["max_abs_J"] <= 1.0
    assert b["max_abs_slope"] > 2  # the unconstrained fit extrapolates steeply


@pytest.mark.parametrize("structure, opts, message", [
    ("lipschitz", {"k": 0.0}, r"'lipschitz' constant k must be a finite number in \(0, .*got 0.0"),
    ("lipschitz", {"k": float("nan")}, r"'lipschitz' constant k must be a finite .*got nan"),
    ("invertible", {"eps": float("nan")}, r"'invertible' eps must be a finite .*got nan"),
    ("invertible", {"eps": -1e-3}, r"'invertible' eps must be a finite .*got -0.001"),
    ("none", {"bound": float("inf")}, r"'none' bound must be a finite .*got inf"),
    ("none", {"bound": 1e300}, r"'none' bound must be a finite .*got 1e\+300"),
])
def test_structure_parameters_are_finite_and_positive(structure: str, opts: dict,
                                                      message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JacNet(1, 1, structure=structure, **opts)
    with pytest.raises(ValueError, match=message):
        STRUCTURES[structure](1, 1, **opts)


def test_model_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="JacNet hidden must be an integer >= 1; got 0"):
        JacNet(1, 1, hidden=0)
    with pytest.raises(ValueError, match=r"JacNet d_in must be an integer >= 1; got 1\.5"):
        JacNet(1.5, 1)
    with pytest.raises(ValueError, match="unknown integrator 'euler'"):
        JacNet(1, 1, method="euler")
    with pytest.raises(ValueError, match=r"node count n must be an integer in .*got nan"):
        JacNet(1, 1, integrator_opts={"n": float("nan")})
    with pytest.raises(ValueError, match=r"the anchor must be finite; got x0=\[nan\]"):
        JacNet(1, 1, x0=torch.tensor([float("nan")]))
    m = JacNet(1, 1, structure="invertible")
    with pytest.raises(ValueError, match="inverse refine must be an integer >= 0; got -1"):
        m.inverse(torch.zeros(2, 1), refine=-1)
    with pytest.raises(ValueError, match=r"BentPath amount must be a finite number .*got nan"):
        JacNet(2, 2).path_gap(torch.zeros(2, 2), amount=float("nan"))
