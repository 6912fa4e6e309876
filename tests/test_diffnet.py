"""DifferentialMLP against torch.func, weight gradients, ensembles, and the quick experiment."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import hessian, jacrev, vmap

from gradsurrogate.activations import ACTIVATIONS
from gradsurrogate.diffnet import DifferentialMLP

F64 = torch.float64


def _reference(net: DifferentialMLP, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """y, J, H by torch.func on ``net.value`` (per ensemble member via the diagonal blocks)."""
    n = net.n_in
    if net.ensemble is None:
        flat = x.reshape(-1, n)
        jac, hes = vmap(jacrev(net.value))(flat), vmap(hessian(net.value))(flat)
        lead = x.shape[:-1]
    else:
        e = net.ensemble
        flat = x.reshape(e, -1, n).transpose(0, 1)  # (B, E, n): one point per member
        jac = vmap(jacrev(net.value))(flat)  # (B, E, m, E, n)
        hes = vmap(hessian(net.value))(flat)  # (B, E, m, E, n, E, n)
        idx = torch.arange(e)
        jac = jac[:, idx, :, idx]  # (E, B, m, n)
        hes = hes[:, idx, :, idx, :, idx]  # (E, B, m, n, n)
        lead = x.shape[:-1]
        jac, hes = jac.reshape(*lead, *jac.shape[-2:]), hes.reshape(*lead, *hes.shape[-3:])
        return net.value(x), jac, hes
    return net.value(x), jac.reshape(*lead, *jac.shape[1:]), hes.reshape(*lead, *hes.shape[1:])


def _assert_machine_close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    scale = max(1.0, want.abs().max().item())
    err = (got - want).abs().max().item() if got.numel() else 0.0
    assert err <= 1e-10 * scale, f"max error {err:.3e} at scale {scale:.3e}"


@settings(max_examples=80, deadline=None)
@given(
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    mode=st.sampled_from(["auto", "forward", "reverse"]),
    depth=st.integers(1, 3),
    n=st.integers(1, 3),
    m=st.integers(1, 3),
    lead=st.sampled_from([(), (4,), (2, 3), (0,)]),
    ensemble=st.sampled_from([None, 2]),
    seed=st.integers(0, 2**16),
)
def test_matches_torch_func(
    activation: str,
    mode: str,
    depth: int,
    n: int,
    m: int,
    lead: tuple[int, ...],
    ensemble: int | None,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    net = DifferentialMLP(
        n, m, width=6, depth=depth, activation=activation, ensemble=ensemble,
        generator=gen, dtype=F64,
    )
    shape = ((ensemble,) if ensemble else ()) + lead + (n,)
    x = torch.randn(shape, generator=gen, dtype=F64)
    y0, j0 = net(x, mode=mode)
    y1, j1, h1 = net(x, hessian=True, mode=mode)
    out = (ensemble,) if ensemble else ()
    assert y0.shape == (*out, *lead, m) and j0.shape == (*out, *lead, m, n)
    assert h1.shape == (*out, *lead, m, n, n)
    if x.numel() == 0:
        return
    y_ref, j_ref, h_ref = _reference(net, x)
    for got, want in ((y0, y_ref), (y1, y_ref), (j0, j_ref), (j1, j_ref), (h1, h_ref)):
        _assert_machine_close(got, want)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_mode_and_depth(activation: str, mode: str) -> None:
    """Deterministic sweep on top of the random one: every activation × mode × depth 1..3."""
    for depth in (1, 2, 3):
        gen = torch.Generator().manual_seed(depth)
        net = DifferentialMLP(2, 2, width=5, depth=depth, activation=activation,
                              generator=gen, dtype=F64)
        x = torch.randn(2, 3, 2, generator=gen, dtype=F64)
        y, jac, hes = net(x, hessian=True, mode=mode)
        _, jac_only = net(x, mode=mode)
        for got, want in zip((y, jac, hes, jac_only), (*_reference(net, x), _reference(net, x)[1])):
            _assert_machine_close(got, want)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_weight_gradients_match_torch_func(mode: str) -> None:
    """Losses on J and H train: their weight gradients equal those through torch.func."""
    gen = torch.Generator().manual_seed(1)
    net = DifferentialMLP(3, 2, width=5, depth=2, activation="tanh", generator=gen, dtype=F64)
    x = torch.randn(7, 3, generator=gen, dtype=F64)

    def loss(y: torch.Tensor, jac: torch.Tensor, hes: torch.Tensor) -> torch.Tensor:
        return y.sin().sum() + (jac**2).sum() + (hes**3).sum()

    ours = torch.autograd.grad(loss(*net(x, hessian=True, mode=mode)), list(net.parameters()))
    ref = torch.autograd.grad(loss(*_reference(net, x)), list(net.parameters()))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    _, jac = net(x, mode=mode)
    params = list(net.parameters())[:-1]  # J does not depend on the output bias
    g_j = torch.autograd.grad(jac.square().sum(), params)
    g_ref = torch.autograd.grad(_reference(net, x)[1].square().sum(), params)
    for a, b in zip(g_j, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_ensemble_members_are_independent_networks() -> None:
    gen = torch.Generator().manual_seed(2)
    ens = DifferentialMLP(2, 1, width=8, depth=2, activation="softplus", ensemble=3,
                          generator=gen, dtype=F64)
    x = torch.randn(3, 5, 2, generator=gen, dtype=F64)
    y, jac, hes = ens(x, hessian=True)
    assert y.shape == (3, 5, 1) and jac.shape == (3, 5, 1, 2) and hes.shape == (3, 5, 1, 2, 2)
    for e in range(3):
        single = DifferentialMLP(2, 1, width=8, depth=2, activation="softplus", dtype=F64)
        with torch.no_grad():
            for p_single, p_ens in zip(single.parameters(), ens.parameters()):
                p_single.copy_(p_ens[e : e + 1])
        for a, b in zip(single(x[e], hessian=True), (y[e], jac[e], hes[e])):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    # members start from different weights; a loss on one member moves only that member
    assert not torch.equal(ens.weights[0][0], ens.weights[0][1])
    y[0].sum().backward()
    assert ens.weights[0].grad[1:].abs().max() == 0 and ens.weights[0].grad[0].abs().max() > 0


def test_modes_dtype_device_and_init() -> None:
    net = DifferentialMLP(2, 1, width=16, depth=2)
    assert net.resolve_mode(False) == "reverse" and net.resolve_mode(True) == "reverse"
    wide = DifferentialMLP(1, 4)
    assert wide.resolve_mode(False) == "forward" and wide.resolve_mode(True) == "forward"
    assert DifferentialMLP(16, 16).resolve_mode(True) == "forward"
    assert DifferentialMLP(16, 15).resolve_mode(True) == "reverse"
    x = torch.randn(4, 2)
    y, jac, hes = net(x, hessian=True)
    assert y.dtype == jac.dtype == hes.dtype == torch.float32
    assert y.device == x.device
    assert all(torch.all(b == 0.1) for b in net.biases)
    big = DifferentialMLP(200, 300, width=300, depth=1, generator=torch.Generator().manual_seed(0))
    std = big.weights[0].std().item()  # xavier normal, gain √2: √2·√(2/(200+300))
    assert abs(std - math.sqrt(2) * math.sqrt(2 / 500)) < 0.01
    ortho = DifferentialMLP(3, 1, width=4, w_init="orthogonal", gain_hidden=1.0, b_init=0.0)
    w = ortho.weights[0][0]
    torch.testing.assert_close(w.T @ w, torch.eye(3))
    sparse = DifferentialMLP(3, 1, width=10, w_init="sparse", p_sparse=0.5)
    assert (sparse.weights[0][0] == 0).sum() >= 10
    a = DifferentialMLP(2, 1, generator=torch.Generator().manual_seed(5))
    b = DifferentialMLP(2, 1, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_bad_arguments_raise_value_error() -> None:
    net = DifferentialMLP(2, 1, width=4)
    with pytest.raises(ValueError, match="sideways"):
        net(torch.zeros(3, 2), mode="sideways")
    with pytest.raises(ValueError, match="n_in=2"):
        net(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"unknown activation 'swish'; accepted: .*tanh"):
        DifferentialMLP(2, 1, activation="swish")
    with pytest.raises(ValueError, match="xavier_normal"):
        DifferentialMLP(2, 1, w_init="kaiming")
    with pytest.raises(ValueError, match="E=3"):
        DifferentialMLP(2, 1, ensemble=3)(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="depth must be an integer >= 1; got 0"):
        DifferentialMLP(2, 1, depth=0)
    with pytest.raises(ValueError, match=r"b_init must be a finite number.*got nan"):
        DifferentialMLP(2, 1, b_init=float("nan"))
    with pytest.raises(ValueError, match=r"p_sparse must be a finite number in \[0, 1\]"):
        DifferentialMLP(2, 1, w_init="sparse", p_sparse=1.5)


@pytest.mark.parametrize("problem", ["sin1d", "cossin2d"])
def test_problem_truths_are_consistent(problem: str) -> None:
    """The experiments' exact J and H equal autograd derivatives of their f."""
    from gradsurrogate.diffnet import DIFFNET_PROBLEMS

    truth = DIFFNET_PROBLEMS[problem].truth
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, DIFFNET_PROBLEMS[problem].n_in, dtype=F64, generator=gen)
    f = lambda p: truth(p[None])[0][0]
    _, jac, hes = truth(x)
    torch.testing.assert_close(jac, vmap(jacrev(f))(x))
    torch.testing.assert_close(hes, vmap(hessian(f))(x))


def test_plain_sequential_value_and_no_grad_passes() -> None:
    """value() equals an nn.Sequential (nn.Linear + nn.Softplus) holding the same weights,
    at preactivations past nn.Softplus's switch to the identity too; the passes that reuse
    buffers in place when no graph is built equal the autograd ones, with and without an
    ensemble, for every scheme."""
    gen = torch.Generator().manual_seed(3)
    net = DifferentialMLP(3, 2, width=7, depth=3, generator=gen, dtype=F64)
    layers: list[torch.nn.Module] = []
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        lin = torch.nn.Linear(w.shape[2], w.shape[1], dtype=F64)
        with torch.no_grad():
            lin.weight.copy_(w[0])
            lin.bias.copy_(b[0])
        layers += [lin, torch.nn.Softplus()] if k < len(net.weights) - 1 else [lin]
    x = 12.0 * torch.randn(40, 3, generator=gen, dtype=F64)  # some |a| > 20
    _assert_machine_close(net.value(x), torch.nn.Sequential(*layers)(x))
    for ensemble in (None, 2):
        for n, m in ((2, 1), (3, 2), (1, 3)):
            net = DifferentialMLP(n, m, width=6, depth=3, ensemble=ensemble, dtype=F64,
                                  generator=gen, activation="tanh")
            x = torch.randn(*(ensemble,) * (ensemble is not None), 5, n, generator=gen,
                            dtype=F64)
            for mode in ("forward", "reverse"):
                graph = (*net(x, mode=mode), *net(x, hessian=True, mode=mode))
                with torch.no_grad():
                    free = (*net(x, mode=mode), *net(x, hessian=True, mode=mode))
                for a, b in zip(graph, free):
                    assert torch.equal(a, b)
