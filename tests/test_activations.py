"""g' and g'' of every registered activation against autograd, plus registry behaviour."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gradsurrogate.activations import ACTIVATIONS, Activation, get_activation

GRID = torch.cat(
    [torch.linspace(-6.0, 6.0, 241, dtype=torch.float64), torch.tensor([-1e-3, 1e-3, 0.37])]
)
# Keep the grid off the kinks (0) of relu / quad / cubic / elu, where one-sided values differ.
GRID = GRID[GRID.abs() > 1e-9]

PARAMS: list[tuple[str, dict[str, float]]] = [(name, {}) for name in ACTIVATIONS] + [
    ("softplus", {"beta": 0.5}),
    ("softplus", {"beta": 7.0}),
    ("elu", {"alpha": 0.3}),
    ("leaky_relu", {"negative_slope": 0.2}),
    ("cos", {"freq": 3.0}),
    ("sin", {"freq": 0.5}),
]


def _autograd_derivs(act: Activation, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    (d1,) = torch.autograd.grad(act.g(x).sum(), x, create_graph=True)
    if not d1.requires_grad:  # derivative constant in x (linear)
        return d1.detach(), torch.zeros_like(x)
    (d2,) = torch.autograd.grad(d1.sum(), x, allow_unused=True)
    return d1.detach(), (torch.zeros_like(x) if d2 is None else d2)


@pytest.mark.parametrize(("name", "params"), PARAMS)
def test_derivatives_match_autograd(name: str, params: dict[str, float]) -> None:
    act = get_activation(name, **params)
    d1_ref, d2_ref = _autograd_derivs(act, GRID)
    torch.testing.assert_close(act.dg(GRID), d1_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(act.d2g(GRID), d2_ref, rtol=1e-12, atol=1e-12)
    for order in (0, 1, 2):
        got = act.derivatives(GRID, order)
        assert len(got) == order + 1
        want = (act.g(GRID), act.dg(GRID), act.d2g(GRID))[: order + 1]
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    assert torch.equal(act(GRID), act.g(GRID))


def test_values_match_torch_builtins() -> None:
    x = GRID
    cases = {
        "relu": torch.relu(x),
        "softplus": F.softplus(x),
        "tanh": torch.tanh(x),
        "sigmoid": torch.sigmoid(x),
        "gelu": torch.nn.GELU()(x),
        "elu": F.elu(x),
        "linear": x,
        "cos": torch.cos(x),
        "cos2pi": torch.cos(2 * math.pi * x),
        "sin": torch.sin(x),
        "quad": 0.5 * torch.relu(x) ** 2,
        "cubic": torch.relu(x) ** 3 / 6,
        "leaky_relu": F.leaky_relu(x, 0.01),
        "silu": F.silu(x),
    }
    assert set(cases) == set(ACTIVATIONS)
    for name, want in cases.items():
        torch.testing.assert_close(get_activation(name).g(x), want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("beta", [0.1, 1.0, 3.0, 50.0])
def test_softplus_any_beta_and_large_inputs(beta: float) -> None:
    act = get_activation("softplus", beta=beta)
    x = torch.tensor([-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4], dtype=torch.float64)
    z = beta * x
    exact_g = torch.where(z > 0, x, torch.zeros_like(x)) + torch.log1p(torch.exp(-z.abs())) / beta
    torch.testing.assert_close(act.g(x), exact_g, rtol=1e-15, atol=0.0)
    torch.testing.assert_close(act.d2g(x), beta * torch.sigmoid(z) * torch.sigmoid(-z))
    for t in act.derivatives(x, 2):
        assert torch.isfinite(t).all()
    # g'' > 0 wherever it is representable, never cancelled to 0 by 1 - σ.
    assert act.d2g(torch.tensor([30.0 / beta], dtype=torch.float64)).item() > 0
    x32 = torch.tensor([1e4, -1e4, 88.0], dtype=torch.float32)
    assert torch.isfinite(act.g(x32)).all() and act.g(x32).dtype == torch.float32


def test_derivatives_are_trainable() -> None:
    x = torch.linspace(-2, 2, 11, dtype=torch.float64, requires_grad=True)
    for name in ACTIVATIONS:
        act = get_activation(name)
        d2 = act.d2g(x)
        if d2.requires_grad:  # constant for linear / relu
            (g,) = torch.autograd.grad(d2.sum(), x)
            assert torch.isfinite(g).all()


def test_unknown_name_and_bad_params() -> None:
    with pytest.raises(ValueError, match=r"unknown activation 'swishy'; accepted: .*softplus"):
        get_activation("swishy")
    with pytest.raises(ValueError, match="bad parameters"):
        get_activation("tanh", beta=2.0)
    with pytest.raises(ValueError, match="beta"):
        get_activation("softplus", beta=0.0)
    for bad in (float("nan"), float("inf"), -1.0, 1e300):  # finite and positive, up front
        with pytest.raises(ValueError, match=r"softplus beta must be a finite number in \(0"):
            get_activation("softplus", beta=bad)
    with pytest.raises(ValueError, match=r"cos freq must be a finite number.*got nan"):
        get_activation("cos", freq=float("nan"))
    with pytest.raises(ValueError, match="order"):
        get_activation("relu").derivatives(GRID, 3)
    act = get_activation("SoftPlus", beta=2.0)
    assert get_activation(act) is act and act.beta == 2.0
    assert isinstance(torch.nn.Sequential(torch.nn.Linear(2, 3), act), torch.nn.Module)
