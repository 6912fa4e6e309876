"""Online restoration of convolutions (``ConvRestorer``) and the restore report's drift flag."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradsurrogate as gs
from gradsurrogate.diagnostics import end_to_end_fidelity
from gradsurrogate.restore.online import ConvRestorer, OnlineRestorer
from gradsurrogate.restore.report import loss_sign_flag


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_cnn() -> nn.Sequential:
    """Conv1d (plain), Conv1d (groups 2, stride 2, dilation 2, reflect padding), Conv2d (groups
    2, 'same' padding) and a Linear head; input (n, 2, 13)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(2, 6, 3, padding=1), nn.Tanh(),
        nn.Conv1d(6, 4, 5, stride=2, dilation=2, padding=2, groups=2, padding_mode="reflect"),
        nn.Tanh(), nn.Unflatten(1, (4, 1)),
        nn.Conv2d(4, 6, (1, 3), padding="same", groups=2), nn.Flatten(), nn.Linear(30, 3))


def test_one_lsq_step_restores_every_conv_and_gives_exact_backprop() -> None:
    model = small_cnn()
    rest = OnlineRestorer(model, seed=0)
    assert set(rest.restorers) == {"0", "2", "5", "7"}
    assert isinstance(rest.restorers["2"], ConvRestorer)
    assert all(isinstance(model[k].spec.weight, gs.Learned) for k in (0, 2, 5, 7))
    x, y = torch.randn(8, 2, 13, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 3
    before = rest.metrics()
    model(x)
    rest.step()
    after = rest.metrics()
    assert max(m["cosine"] for m in before.values()) < 0.5  # random start: the test can fail
    assert all(m["rel_error"] < 1e-5 for m in after.values())
    # probes: conv '0' fan_in 6, 13 positions -> 1; '2' fan_in 15, 5 positions -> 6;
    # '5' fan_in 6, 5 positions -> 3; the linear head fan_in 30
    assert rest.jvp_evals == 1 + 6 + 3 + 30
    fid = end_to_end_fidelity(model, lambda: nn.functional.cross_entropy(model(x), y))
    assert set(fid) == {n for n, _ in model.named_parameters()}
    assert all(m["cosine"] > 1 - 1e-6 and m["rel_error"] < 1e-4 for m in fid.values())


def test_conv_backward_uses_B_never_W_and_follows_moving_weights() -> None:
    model = small_cnn()
    rest = OnlineRestorer(model, seed=0)
    x = torch.randn(8, 2, 13, generator=torch.Generator().manual_seed(1))
    model(x)
    rest.step()
    conv = model[2]
    B = rest.restorers["2"].surrogate.B.detach().clone()
    with torch.no_grad():
        conv.weight.mul_(-1.0)  # moved after the restoration: backward still uses B
    h = torch.randn(3, 6, 13, requires_grad=True)
    out = conv(h)
    g = torch.randn_like(out)
    (gi,) = torch.autograd.grad(out, h, g)
    pad = nn.functional.pad(h.detach(), (2, 2), mode="reflect")
    ref_pad = torch.nn.grad.conv1d_input(pad.shape, B, g, stride=2, dilation=2, groups=2)
    ref = torch.func.vjp(lambda z: nn.functional.pad(z, (2, 2), mode="reflect"), h.detach())[1](
        ref_pad)[0]
    torch.testing.assert_close(gi, ref, atol=1e-5, rtol=1e-5)
    drift = rest.step()["2"]  # the next round follows the moved W at once
    assert drift > 1.0 and rest.metrics()["2"]["rel_error"] < 1e-5


def test_conv_restorer_fd_sgd_and_bare_layers() -> None:
    model = small_cnn()
    x = torch.randn(8, 2, 13, generator=torch.Generator().manual_seed(1))
    fd = OnlineRestorer(model, seed=0, target="fd")
    model(x)
    fd.step()
    assert all(m["rel_error"] < 1e-3 for m in fd.metrics().values())  # fd: exact up to rounding
    conv = nn.Sequential(nn.Conv1d(3, 4, 3, padding=1))
    sgd = OnlineRestorer(conv, seed=0, method="sgd", lr=5e-2)
    conv(torch.randn(2, 3, 9))
    start = sgd.metrics()["0"]["cosine"]
    for _ in range(150):
        sgd.step()
    assert sgd.metrics()["0"]["cosine"] > 0.999 > start
    conv3 = nn.Sequential(nn.Conv3d(2, 4, 2, stride=(1, 2, 1), padding=1, groups=2))
    lsq3 = OnlineRestorer(conv3, seed=0)
    conv3(torch.randn(2, 2, 3, 4, 3))
    lsq3.step()
    assert lsq3.metrics()["0"]["rel_error"] < 1e-5
    with pytest.raises(ValueError, match=r"bare layer \(Conv2d\)"):
        OnlineRestorer(nn.Conv2d(1, 2, 3))
    with pytest.raises(RuntimeError, match="forward pass first"):
        OnlineRestorer(nn.Sequential(nn.Conv1d(1, 2, 3))).step()


def _history(loss: list[float], sign: list[float], rel: list[float] | None = None) -> list[dict]:
    out = [{"epoch": 10 * (k + 1), "loss": v, "sign_agreement": s}
           for k, (v, s) in enumerate(zip(loss, sign))]
    for h, r in zip(out, rel or []):
        h["rel_error"] = r
    return out


def test_loss_sign_flag_fires_only_when_loss_rises_as_signs_improve() -> None:
    falling = [2.0 * 0.8 ** k for k in range(20)]
    signs = [0.6 + 0.015 * k for k in range(20)]
    rising = falling[:10] + [falling[9] * 1.1 ** k for k in range(1, 11)]
    flag = loss_sign_flag(_history(rising, signs))
    assert flag is not None and flag["series"] == "loss" and flag["to_epoch"] == 200
    assert flag["value_to"] > 1.1 * flag["value_from"]
    assert flag["sign_to"] >= flag["sign_from"] + 0.01
    assert loss_sign_flag(_history(falling, signs)) is None
    # isolated blips of a noisy minibatch loss are not a rise (medians of 5 evaluations)
    blips = [v * (3.0 if k % 4 == 3 else 1.0) for k, v in enumerate(falling)]
    assert loss_sign_flag(_history(blips, signs)) is None
    # the loss rises but the signs get worse too: plain divergence, not this observation
    assert loss_sign_flag(_history(rising, signs[:10] + signs[9::-1])) is None
    # a scale-free loss falls while the relative error (scale drift) rises
    drift = loss_sign_flag(_history(falling, signs, [1.0 - 0.05 * k for k in range(8)]
                                    + [0.6 + 0.3 * k for k in range(12)]))
    assert drift is not None and drift["series"] == "rel_error"
    assert loss_sign_flag([]) is None


def test_online_restorer_tracks_layers_without_reading_W_in_backward() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    rest = OnlineRestorer(model, loss="mse", dim_sample=1.0, lr=5e-2, steps=1, seed=0,
                          method="sgd")
    assert set(rest.restorers) == {"0", "2"}
    assert all(isinstance(m.spec.weight, gs.Learned) for m in (model[0], model[2]))
    x = torch.randn(16, 3, generator=gen(1))
    model(x)
    before = rest.metrics()["2"]["cosine"]
    for _ in range(300):
        rest.step()
    after = rest.metrics()
    assert after["2"]["cosine"] > 0.999 and after["0"]["cosine"] > 0.999 > before
    assert rest.jvp_evals == 300 * 4 * (3 + 8)


def test_online_restorer_rejects_a_bare_layer() -> None:
    with pytest.raises(ValueError, match=r"bare layer \(Linear\).*nn.Sequential"):
        OnlineRestorer(torch.nn.Linear(3, 2))
    wrapped = torch.nn.Sequential(torch.nn.Linear(3, 2))
    rest = OnlineRestorer(wrapped)
    assert set(rest.restorers) == {"0"} and isinstance(wrapped[0].spec.weight, gs.Learned)


def test_online_least_squares_restores_the_current_weights_each_step() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    rest = OnlineRestorer(model, seed=0)  # default: lsq on fan_in probes per step
    model(torch.randn(16, 3, generator=gen(1)))
    rest.step()
    assert all(m["rel_error"] < 1e-5 for m in rest.metrics().values())
    with torch.no_grad():  # the weights move: the next step follows at once (no lag)
        model[2].weight.add_(0.1)
    drift = rest.step()["2"]
    assert drift > 1e-2 and rest.metrics()["2"]["rel_error"] < 1e-5
    assert rest.jvp_evals == 2 * (3 + 8)
