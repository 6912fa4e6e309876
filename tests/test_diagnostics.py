"""gradient_metrics (the one metric implementation) and the gradient recorders."""

import copy
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.checkpoint import checkpoint

import gradsurrogate as gs
from gradsurrogate import zoo
from gradsurrogate.backward import MODES, FeedbackMode
from gradsurrogate.diagnostics import feedback_alignment

F64 = torch.float64


def _floats(m: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in m.items()}


def test_metrics_match_hand_computed_values():
    a = torch.tensor([1.0, 2.0, -2.0])
    t = torch.tensor([2.0, 0.0, -1.0])
    # <a,t> = 2 + 0 + 2 = 4, |a| = 3, |t| = √5, a - t = (-1, 2, -1), signs agree on 2 of 3
    m = _floats(gs.gradient_metrics(a, t))
    assert list(m) == list(gs.METRICS)
    assert m["cosine"] == pytest.approx(4 / (3 * math.sqrt(5)), rel=1e-15)
    assert m["sign_agreement"] == pytest.approx(2 / 3, rel=1e-15)
    assert m["norm_ratio"] == pytest.approx(3 / math.sqrt(5), rel=1e-15)
    assert m["rel_error"] == pytest.approx(math.sqrt(6) / math.sqrt(5), rel=1e-15)
    assert all(v.dtype == F64 and v.shape == () for v in gs.gradient_metrics(a, t).values())


@pytest.mark.parametrize(("a", "t", "want"), [
    # both zero: cosine 0, every sign agrees, ratio and error 0
    ([0.0, 0.0], [0.0, 0.0], (0.0, 1.0, 0.0, 0.0)),
    # only the exact value is zero: ratio and error infinite
    ([1.0, 0.0], [0.0, 0.0], (0.0, 0.5, math.inf, math.inf)),
    # only the approximation is zero: ratio 0, error 1
    ([0.0, 0.0], [3.0, -4.0], (0.0, 0.0, 0.0, 1.0)),
    # opposite: cosine -1, no sign agrees, error 2
    ([-1.0, 2.0], [1.0, -2.0], (-1.0, 0.0, 1.0, 2.0)),
    # empty: nothing to disagree
    ([], [], (0.0, 1.0, 0.0, 0.0)),
])
def test_metric_edge_cases(a, t, want):
    m = _floats(gs.gradient_metrics(torch.tensor(a), torch.tensor(t)))
    assert tuple(m[k] for k in gs.METRICS) == pytest.approx(want, abs=1e-15)


def test_nan_input_gives_nan_not_a_silent_zero():
    m = _floats(gs.gradient_metrics(torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, 1.0])))
    assert math.isnan(m["cosine"]) and math.isnan(m["norm_ratio"]) and math.isnan(m["rel_error"])
    assert m["sign_agreement"] == 0.5


def test_dim_reduces_only_the_named_dims():
    g = torch.Generator().manual_seed(0)
    a, t = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    per_point = gs.gradient_metrics(a, t, dim=(1, 2))
    assert all(v.shape == (4,) for v in per_point.values())
    assert gs.gradient_metrics(a, t, dim=(-2, -1))["cosine"].equal(per_point["cosine"])
    for n in range(4):
        alone = gs.gradient_metrics(a[n], t[n])
        for k in gs.METRICS:
            assert per_point[k][n].item() == pytest.approx(alone[k].item(), rel=1e-12)
    assert gs.gradient_metrics(a, t, dim=0)["cosine"].shape == (3, 5)
    with pytest.raises(ValueError, match=r"dim must name one or more of the 3 dims.*got 3"):
        gs.gradient_metrics(a, t, dim=3)
    with pytest.raises(ValueError, match=r"got \(\)"):
        gs.gradient_metrics(a, t, dim=())
    with pytest.raises(ValueError, match=r"approx shape \(4, 3, 5\) must equal exact shape"):
        gs.gradient_metrics(a, t[0])


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       scale=st.floats(0.01, 100.0), seed=st.integers(0, 2**16))
def test_metric_properties_on_random_tensors(shape, scale, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g, dtype=F64)
    a = torch.randn(*shape, generator=g, dtype=F64)
    m = gs.gradient_metrics(a, t)
    scaled = gs.gradient_metrics(scale * a, t)
    assert -1 <= m["cosine"] <= 1 and 0 <= m["sign_agreement"] <= 1
    # cosine and sign agreement ignore a positive scale; the norm ratio follows it
    assert scaled["cosine"].item() == pytest.approx(m["cosine"].item(), abs=1e-12)
    assert scaled["sign_agreement"] == m["sign_agreement"]
    assert scaled["norm_ratio"].item() == pytest.approx(scale * m["norm_ratio"].item(), rel=1e-12)
    same = gs.gradient_metrics(t, t)
    assert same["cosine"].item() == pytest.approx(1.0, abs=1e-12)
    assert same["sign_agreement"] == 1 and same["rel_error"] == 0 and same["norm_ratio"] == 1


def test_recorder_reports_metrics_per_layer():
    torch.manual_seed(0)
    model = gs.convert(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)),
                       lambda n, m: "grad_input=flip:1" if n == "2" else "exact")
    x = torch.randn(16, 4)
    with gs.record_gradients(model) as rec:
        loss = model(x).square().sum()
    loss.backward()
    s = rec.summary()
    assert json.loads(json.dumps(s, allow_nan=False)) == s  # strict-JSON ready
    flipped = s["2/grad_input"]
    assert flipped["cosine"] == pytest.approx(-1.0) and flipped["sign_agreement"] == 0.0
    assert flipped["norm_ratio"] == pytest.approx(1.0) and flipped["rel_error"] == pytest.approx(2)
    assert s["2/grad_weight"]["cosine"] == pytest.approx(1.0)
    # layer 0 receives the flipped gradient, but its own backward is exact w.r.t. what it got
    assert s["0/grad_weight"]["rel_error"] == 0.0
    assert rec.summary(nested=True)["2"]["grad_input"] == flipped
    # flipping every sign: the used grad_input points exactly opposite the true one
    # (layer 0's input needs no gradient, so it has no grad_input angle)
    assert rec.angles() == {"2": pytest.approx(180.0)}
    assert {r.call for r in rec.records} == {0}
    assert model[0].recorder is None  # detached after the block


def test_ensemble_recorder_gives_one_value_per_member():
    layer = gs.EnsembleSurrogateLinear(
        3, 4, 2, spec=gs.BackwardSpec(grad_input=gs.Flip(torch.tensor([0.0, 1.0, 0.0]))))
    x = torch.randn(3, 5, 4, requires_grad=True)
    with gs.record_gradients(layer) as rec:
        y = layer(x)
    y.square().sum().backward()
    gi = next(r for r in rec.records if r.target == "grad_input")
    assert gi.cosine == pytest.approx([1.0, -1.0, 1.0])
    assert gi.rel_error == pytest.approx([0.0, 2.0, 0.0])


def test_empty_batch_diagnostics_are_finite():
    model = gs.convert(nn.Sequential(nn.Linear(4, 3)), "grad_input=sign")
    x = torch.zeros(0, 4, requires_grad=True)
    with gs.record_gradients(model) as rec:
        y = model(x)
    y.sum().backward()
    for values in rec.summary().values():
        assert all(math.isfinite(v) for v in values.values())


def test_end_to_end_fidelity_is_exact_for_exact_specs_only():
    torch.manual_seed(0)
    x = torch.randn(32, 3)
    model = gs.convert(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)), "exact")
    loss_fn = lambda: model(x).square().mean()
    for name, m in gs.end_to_end_fidelity(model, loss_fn).items():
        assert m["rel_error"] == 0.0 and m["sign_agreement"] == 1.0, name
    gs.convert(model, "grad_input=flip:1", include="2")
    fid = gs.end_to_end_fidelity(model, loss_fn)
    assert fid["0.weight"]["cosine"] == pytest.approx(-1.0) and fid["2.weight"]["rel_error"] == 0
    with pytest.raises(ValueError, match="no trainable parameters"):
        gs.end_to_end_fidelity(model.requires_grad_(False), loss_fn)


def test_summary_maps_non_finite_means_to_none():
    # zero input: the true grad_weight is 0, so norm_ratio/rel_error are inf for a nonzero used
    layer = gs.convert(nn.Sequential(nn.Linear(3, 2)), "grad_weight=flip:1")
    rec = gs.GradientRecorder()
    rec.for_layer("0")("grad_weight", torch.ones(2, 3), torch.zeros(2, 3), False)
    s = rec.summary()
    assert s["0/grad_weight"]["norm_ratio"] is None and s["0/grad_weight"]["cosine"] == 0.0
    assert rec.records[0].as_dict()["rel_error"] is None
    json.dumps(s, allow_nan=False)
    del layer


def _ckpt_model(spec):
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))
    return gs.convert(nn.Sequential(block, nn.Linear(4, 1)), spec, generator=0)


@pytest.mark.parametrize("spec", ["exact", "grad_input=sign", "grad_input=flip:0.3"])
@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("backward_inside", [False, True])
def test_recorder_with_activation_checkpointing(spec, reentrant, backward_inside):
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    plain = _ckpt_model(spec)
    with gs.record_gradients(plain) as want:
        plain(x).sum().backward()
    model = _ckpt_model(spec)
    with gs.record_gradients(model) as rec:
        out = model[1](checkpoint(model[0], x, use_reentrant=reentrant)).sum()
        if backward_inside:
            out.backward()
    if not backward_inside:
        out.backward()
    # every layer recorded once per target, with the numbers of the uncheckpointed model
    got, ref = rec.summary(), want.summary()
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    assert sorted((r.layer, r.target, r.call) for r in rec.records) == \
        sorted((r.layer, r.target, r.call) for r in want.records)
    for p, q in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    # the binding ends: a later checkpointed step is neither recorded nor broken
    n = len(rec.records)
    model[1](checkpoint(model[0], x, use_reentrant=reentrant)).sum().backward()
    assert len(rec.records) == n and all(m.recorder is None for m in model.modules()
                                         if isinstance(m, gs.SurrogateMixin))


def _train_mode_bitwise(model, loss_fn):
    fid = gs.end_to_end_fidelity(model, loss_fn)
    assert fid
    for name, m in fid.items():
        assert m["cosine"] == pytest.approx(1.0, abs=1e-12), name
        assert m["rel_error"] <= 1e-12 and m["sign_agreement"] == 1.0, name


@pytest.mark.filterwarnings("ignore:convert left")
def test_end_to_end_fidelity_fixes_dropout_and_batchnorm_on_zoo_models():
    torch.manual_seed(0)
    net = zoo.resnet18_like(num_classes=3, width=4, blocks=(1, 1))
    net.insert(len(net) - 1, nn.Dropout(0.5))  # dropout before the head
    ref = copy.deepcopy(net)
    model = gs.convert(net, "exact")
    x = torch.randn(4, 3, 16, 16)
    torch.manual_seed(5)
    _train_mode_bitwise(model, lambda: model(x).square().mean())
    after = torch.get_rng_state()
    # BatchNorm statistics are updated once, as by one training forward of the plain model,
    # and the RNG stream advanced as by one forward pass
    torch.manual_seed(5)
    ref(x)
    assert torch.equal(after, torch.get_rng_state())
    for (name, b), r in zip(model.named_buffers(), ref.buffers()):
        assert torch.equal(b, r), name

    torch.manual_seed(0)
    enc = gs.convert(zoo.transformer_encoder(vocab=16, d_model=16, nhead=2, num_layers=2,
                                             dim_feedforward=32, num_classes=3, dropout=0.3),
                     "exact")
    tokens = torch.randint(0, 16, (4, 9))
    _train_mode_bitwise(enc, lambda: enc(tokens).logsumexp(-1).mean())


def test_feedback_alignment_angle_is_hand_computed():
    torch.manual_seed(0)
    model = gs.convert(nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)),
                       lambda n, m: "weight=random" if n == "0" else "grad_input=sign",
                       generator=0)
    angles = feedback_alignment(model)
    assert list(angles) == ["0"]  # only feedback-mode layers
    w, b = model[0].weight.detach().double(), model[0].feedback.double()
    cos = (w * b).sum() / (w.norm() * b.norm())
    assert angles["0"] == pytest.approx(math.degrees(math.acos(cos)), rel=1e-12)
    state = model[0].generator.get_state()
    feedback_alignment(model)
    assert torch.equal(model[0].generator.get_state(), state)  # drew nothing
    # B = W (an aligned feedback) is 0 degrees, B = -W is 180
    with torch.no_grad():
        model[0].feedback.copy_(model[0].weight)
    assert feedback_alignment(model)["0"] == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        model[0].feedback.copy_(-model[0].weight)
    assert feedback_alignment(model)["0"] == pytest.approx(180.0, abs=1e-5)


FEEDBACK_MODES = sorted(n for n, c in MODES.items()
                        if isinstance(c, type) and issubclass(c, FeedbackMode))


@pytest.mark.parametrize("mode", FEEDBACK_MODES)
def test_feedback_alignment_is_the_angle_of_the_next_backward(mode):
    # y = x W^T with grad_output = I: grad_input = I B = B and the true one is W, so the
    # recorded grad_input angle is the angle between the B of that backward and W (for brsf,
    # whose B is redrawn every backward, feedback_alignment reads the B the next one draws)
    torch.manual_seed(0)
    model = gs.convert(nn.Sequential(nn.Linear(6, 3, bias=False)), f"weight={mode}", generator=1)
    x = torch.randn(3, 6, requires_grad=True)
    angle = feedback_alignment(model)["0"]
    assert 0.0 <= angle <= 180.0
    with gs.record_gradients(model) as rec:
        y = model(x)
    y.backward(torch.eye(3))
    assert rec.angles()["0"] == pytest.approx(angle, abs=1e-4)


def test_feedback_alignment_gives_one_angle_per_ensemble_member():
    layer = gs.EnsembleSurrogateLinear(3, 4, 2, spec="weight=random", generator=0)
    (name, angles), = feedback_alignment(layer).items()
    assert name == "EnsembleSurrogateLinear"
    want = [math.degrees(math.acos(float(gs.gradient_metrics(layer.feedback[k],
                                                             layer.weight[k])["cosine"])))
            for k in range(3)]
    assert angles == pytest.approx(want, rel=1e-9)


@pytest.mark.filterwarnings("ignore:convert left")
@pytest.mark.parametrize("reentrant", [False, True])
def test_recorder_with_checkpointed_transformer_layers(reentrant):
    # every projection (attention included) is recorded once, as without checkpointing
    torch.manual_seed(0)
    model = gs.convert(zoo.transformer_encoder(vocab=16, d_model=16, nhead=2, num_layers=2,
                                               dim_feedforward=32, num_classes=3, dropout=0.0),
                       "weight=fa", generator=0)
    tokens = torch.randint(0, 16, (4, 9))

    def run(ckpt: bool) -> gs.GradientRecorder:
        with gs.record_gradients(model) as rec:
            x = model.embed(tokens) + model.pos[:, :9]
            for layer in model.encoder.layers:
                x = checkpoint(layer, x, use_reentrant=reentrant) if ckpt else layer(x)
            loss = model.head(model.norm(x).mean(1)).square().sum()
        loss.backward()
        return rec

    want, got = run(False).summary(), run(True).summary()
    assert got.keys() == want.keys() and any("self_attn" in k for k in want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_checkpointed_forward_before_the_block_is_not_recorded_nor_broken():
    model = _ckpt_model("exact")
    x = torch.randn(5, 4, requires_grad=True)
    out = model[1](checkpoint(model[0], x, use_reentrant=False)).sum()
    with gs.record_gradients(model) as rec:
        out.backward()  # recomputes layers whose forward ran without a recorder
    assert rec.records == []
