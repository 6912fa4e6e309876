"""Restoration losses: hand-computed values and gradients, zero vectors, registry errors."""

from __future__ import annotations

import math

import pytest
import torch

from gradsurrogate.restore import RESTORE_LOSSES, get_loss
from gradsurrogate.restore.losses import LOG_EPS

S2 = math.sqrt(2.0)


def value_and_grad(name: str, x: list[float], y: list[float]) -> tuple[float, list[float]]:
    xt = torch.tensor([x], dtype=torch.float64, requires_grad=True)
    yt = torch.tensor([y], dtype=torch.float64)
    loss = get_loss(name)(xt, yt)
    (g,) = torch.autograd.grad(loss, xt)
    return loss.item(), g[0].tolist()


# (loss, x, y, value, d value / d x), all worked out by hand
CASES = [
    ("mse", [1.0, 2.0], [0.0, 0.0], 5.0, [2.0, 4.0]),
    ("mse", [1.0, 1.0], [1.0, 1.0], 0.0, [0.0, 0.0]),
    # cos = 1/√2; d(1-cos)/dx = -(y/(|x||y|) - cos x/|x|²) = (0, -1/√2)
    ("cosine", [1.0, 0.0], [1.0, 1.0], 1 - 1 / S2, [0.0, -1 / S2]),
    # DotSim = 2/4; d(1-d)²/dx = -2(1-d) y/|y|² = (-1/2, 0)
    ("dot", [1.0, 0.0], [2.0, 0.0], 0.25, [-0.5, 0.0]),
    # the orthogonal part of x is invisible to DotSim
    ("dot", [1.0, 3.0], [1.0, 0.0], 0.0, [0.0, 0.0]),
    # GenSim_0 = DotSim = 3 -> (3-1)² = 4; grad 2(3-1) y/|y|² = (4, 0)
    ("gensim:0", [3.0, 4.0], [1.0, 0.0], 4.0, [4.0, 0.0]),
    # GenSim_1 = cos = 3/5 -> (0.6-1)² = 0.16; dcos/dx = y/5 - 0.6 x/25 = (0.128, -0.096)
    ("gensim:1", [3.0, 4.0], [1.0, 0.0], 0.16, [-0.8 * 0.128, 0.8 * 0.096]),
    # GenSim_2 = <x,y>/|x|² = 3/25; d/dx = y/25 - 2·3 x/625 = (0.0112, -0.0384)
    ("gensim:2", [3.0, 4.0], [1.0, 0.0], (0.12 - 1) ** 2, [-1.76 * 0.0112, 1.76 * 0.0384]),
    # 1 - 1/√2 + (1 - 1/2)²; grads add: (0, -1/√2) + (-2·0.5·(1,1)/2)
    ("mixed", [1.0, 0.0], [1.0, 1.0], 1 - 1 / S2 + 0.25, [-0.5, -1 / S2 - 0.5]),
    # log(5 + eps); grad (2, 4) / 5
    ("log_mse", [1.0, 2.0], [0.0, 0.0], math.log(5 + LOG_EPS), [0.4, 0.8]),
    ("log_cosine", [1.0, 0.0], [1.0, 1.0], math.log(1 - 1 / S2),
     [0.0, -1 / S2 / (1 - 1 / S2)]),
    # gate sigmoid(β(cos-1)) = 1/2 at cos = 1; DotSim = 2 -> 0.5·(1-2)² = 0.5, gate flat at cos 1
    ("gated:10", [2.0, 0.0], [1.0, 0.0], 0.5, [1.0, 0.0]),
]


@pytest.mark.parametrize(("name", "x", "y", "value", "grad"), CASES)
def test_loss_value_and_gradient(name, x, y, value, grad) -> None:
    v, g = value_and_grad(name, x, y)
    assert v == pytest.approx(value, abs=1e-9)
    assert g == pytest.approx(grad, abs=1e-9)


# degenerate inputs: (loss, x, y, value, grad) — zero-denominator similarities are 0, flat
ZERO_CASES = [
    ("mse", [0.0, 0.0], [0.0, 0.0], 0.0, [0.0, 0.0]),
    ("cosine", [0.0, 0.0], [1.0, 2.0], 1.0, [0.0, 0.0]),
    ("cosine", [1.0, 2.0], [0.0, 0.0], 1.0, [0.0, 0.0]),
    ("cosine", [0.0, 0.0], [0.0, 0.0], 1.0, [0.0, 0.0]),
    ("dot", [1.0, 2.0], [0.0, 0.0], 1.0, [0.0, 0.0]),
    # x = 0 is regular for DotSim: grad -2 y/|y|²
    ("dot", [0.0, 0.0], [2.0, 0.0], 1.0, [-1.0, 0.0]),
    ("gensim:0.5", [0.0, 0.0], [1.0, 0.0], 1.0, [0.0, 0.0]),
    ("gensim:1.5", [1.0, 0.0], [0.0, 0.0], 0.0, [0.0, 0.0]),  # GenSim(y,y) is 0 too
    ("mixed", [0.0, 0.0], [0.0, 0.0], 2.0, [0.0, 0.0]),
    ("log_mse", [1.0, 1.0], [1.0, 1.0], math.log(LOG_EPS), [0.0, 0.0]),
    ("log_dot", [0.0, 0.0], [0.0, 0.0], math.log(1 + LOG_EPS), [0.0, 0.0]),
    ("gated", [0.0, 0.0], [0.0, 0.0], 1 / (1 + math.exp(10.0)), [0.0, 0.0]),
]


@pytest.mark.parametrize(("name", "x", "y", "value", "grad"), ZERO_CASES)
def test_zero_vectors_are_defined(name, x, y, value, grad) -> None:
    v, g = value_and_grad(name, x, y)
    assert math.isfinite(v) and all(math.isfinite(t) for t in g)
    assert v == pytest.approx(value, abs=1e-12)
    assert g == pytest.approx(grad, abs=1e-12)


@pytest.mark.parametrize("name", ["mse", "cosine", "dot", "gensim:0.7", "mixed", "gated:3",
                                  "log_mse", "log_gensim:1.3"])
def test_gradients_match_finite_differences(name: str) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 4, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: get_loss(name)(t, y), (x,))


def test_batch_mean_over_leading_dims() -> None:
    x = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])
    y = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert get_loss("cosine")(x, y).item() == pytest.approx(0.5)
    assert get_loss("mse")(x, y).item() == pytest.approx(0.5)


def test_minimisers() -> None:
    y = torch.tensor([[1.0, -2.0, 0.5]])
    for name in ("mse", "dot", "mixed", "gensim:0.3", "gensim:1.8"):
        assert get_loss(name)(y.clone(), y).item() == pytest.approx(0.0, abs=1e-12)
    # cosine ignores scale, mse does not
    assert get_loss("cosine")(3 * y, y).item() == pytest.approx(0.0, abs=1e-6)
    assert get_loss("mse")(3 * y, y).item() > 1


def test_registry_and_errors() -> None:
    assert set(RESTORE_LOSSES) >= {"mse", "cosine", "dot", "gensim", "mixed"}
    assert str(get_loss("log_gensim:0.5")) == "log_gensim:0.5"
    with pytest.raises(ValueError, match=r"unknown loss 'huber'.*accepted: mse, cosine"):
        get_loss("huber")
    with pytest.raises(ValueError, match=r"\[0, 2\]; got 2.5"):
        get_loss("gensim:2.5")
    with pytest.raises(ValueError, match="cannot read parameter 'abc'"):
        get_loss("gensim:abc")
    with pytest.raises(ValueError, match=r"^bad loss 'mse:3': loss 'mse' takes no parameter"):
        get_loss("mse:3")
    with pytest.raises(ValueError, match=r"^bad loss 'log_mse:nan': loss 'mse' takes no param"):
        get_loss("log_mse:nan")  # the spec as given, not the inner 'mse:nan'
    with pytest.raises(ValueError, match=r"unknown loss 'log_huber'; accepted: mse, .*log_mse"):
        get_loss("log_huber")
    with pytest.raises(ValueError, match=r"loss 'gated': parameter must be finite; got 'inf'"):
        get_loss("gated:inf")
    with pytest.raises(ValueError, match=r"bad loss 'gensim:'"):
        get_loss("gensim:")
    with pytest.raises(ValueError, match="shapes differ"):
        get_loss("mse")(torch.zeros(2, 3), torch.zeros(2, 4))
