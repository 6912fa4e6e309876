"""Surrogate layers: exactness, each mode's backward, torch.func, convert, determinism."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

import gradsurrogate as gs
from gradsurrogate.functional import LinearOp, Plan, SurrogateFunction

F64 = torch.float64


def _data(batch=(5,), i=4, o=3, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, i, generator=g, dtype=dtype)
    w = torch.randn(o, i, generator=g, dtype=dtype)
    b = torch.randn(o, generator=g, dtype=dtype)
    go = torch.randn(*batch, o, generator=g, dtype=dtype)
    return x, w, b, go


def _grads(spec, x, w, b, go, generator=None, feedback=None):
    x, w, b = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y = gs.surrogate_linear(x, w, b, spec, generator, feedback)
    y.backward(go)
    return x.grad, w.grad, b.grad, y


def test_exact_function_passes_gradcheck_float64():
    x, w, b, _ = _data(batch=(2, 3))
    plan = Plan(LinearOp(), gs.BackwardSpec())
    f = lambda x, w, b: SurrogateFunction.apply(x, w, b, None, plan)
    assert torch.autograd.gradcheck(f, tuple(t.requires_grad_() for t in (x, w, b)))
    # and with the ensemble layout
    xe, we, be = torch.randn(2, 3, 4, dtype=F64), torch.randn(2, 5, 4, dtype=F64), \
        torch.randn(2, 5, dtype=F64)
    plan_e = Plan(LinearOp(), gs.BackwardSpec(), ensemble=True)
    fe = lambda x, w, b: SurrogateFunction.apply(x, w, b, None, plan_e)
    assert torch.autograd.gradcheck(fe, tuple(t.requires_grad_() for t in (xe, we, be)))


def test_exact_layer_is_bitwise_nn_linear():
    torch.manual_seed(0)
    ref = nn.Linear(6, 3)
    layer = gs.SurrogateLinear(6, 3)
    layer.load_state_dict(ref.state_dict())
    assert list(layer.state_dict()) == list(ref.state_dict())
    x = torch.randn(4, 6, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    ref(x).square().sum().backward()
    layer(x2).square().sum().backward()
    assert torch.equal(x.grad, x2.grad) and torch.equal(ref.weight.grad, layer.weight.grad)


def test_same_init_as_nn_linear_under_same_seed():
    torch.manual_seed(3)
    ref = nn.Linear(5, 2)
    torch.manual_seed(3)
    layer = gs.SurrogateLinear(5, 2, spec="grad_input=sign")
    assert torch.equal(ref.weight, layer.weight) and torch.equal(ref.bias, layer.bias)


def test_sign_modes():
    x, w, b, go = _data()
    gx, gw, gb, _ = _grads(gs.BackwardSpec(), x, w, b, go)
    sx, sw, sb, _ = _grads("grad_input=sign,grad_weight=sign", x, w, b, go)
    assert torch.equal(sx, torch.sign(gx))
    assert torch.equal(sw, torch.sign(gw)) and torch.equal(sb, torch.sign(gb))
    wx, ww, _, _ = _grads("weight=sign", x, w, b, go)
    assert torch.allclose(wx, go @ torch.sign(w)) and torch.equal(ww, gw)
    ix, iw, _, _ = _grads("input=sign", x, w, b, go)
    assert torch.allclose(iw, go.T @ torch.sign(x)) and torch.equal(ix, gx)


def test_blend_endpoints_and_none():
    x, w, b, go = _data()
    gx, gw, _, _ = _grads(None, x, w, b, go)
    bx, bw, _, _ = _grads("grad_input=blend:0,grad_weight=blend:0", x, w, b, go)
    assert torch.equal(bx, gx) and torch.equal(bw, gw)
    bx, _, _, _ = _grads("grad_input=blend:1", x, w, b, go)
    assert torch.allclose(bx, torch.sign(gx) * gx.abs().mean())
    nx, nw, nb, _ = _grads("grad_weight=none", x, w, b, go)
    assert torch.equal(nx, gx) and nw is None and nb is None
    nx, nw, _, _ = _grads("grad_input=none", x, w, b, go)
    assert nx is None and torch.equal(nw, gw)


def test_flip_endpoints_and_fraction():
    x, w, b, go = _data(batch=(400,), i=50, o=40)
    gx, gw, _, _ = _grads(None, x, w, b, go)
    fx, fw, _, _ = _grads("grad_input=flip:1,grad_weight=flip:1", x, w, b, go)
    assert torch.equal(fx, -gx) and torch.equal(fw, -gw)
    gen = torch.Generator().manual_seed(1)
    fx, fw, _, _ = _grads("grad_input=flip:0.3", x, w, b, go, gen)
    frac = (torch.sign(fx) != torch.sign(gx)).double().mean().item()
    n = gx.numel()
    assert abs(frac - 0.3) < 5 * (0.3 * 0.7 / n) ** 0.5 and torch.equal(fw, gw)


def test_random_feedback_is_fixed_and_used():
    layer = gs.SurrogateLinear(4, 3, spec="weight=random", generator=0, dtype=F64)
    fb = layer.feedback.clone()
    assert list(layer.state_dict()) == ["weight", "bias", "feedback"]  # persistent (resume)
    x = torch.randn(5, 4, dtype=F64, requires_grad=True)
    go = torch.randn(5, 3, dtype=F64)
    for _ in range(2):
        x.grad = None
        layer(x).backward(go)
        assert torch.allclose(x.grad, go @ fb)
    assert torch.equal(layer.feedback, fb)
    again = gs.SurrogateLinear(4, 3, spec="weight=random", generator=0, dtype=F64)
    assert torch.equal(again.feedback, fb)
    with pytest.raises(ValueError, match="feedback matrix"):
        gs.surrogate_linear(x, layer.weight, None, "weight=random")


def test_learned_modes_call_surrogate():
    x, w, b, go = _data()
    seen = {}

    def g(grad_out, inp):
        seen["shapes"] = (grad_out.shape, inp.shape)
        return grad_out @ (2 * w)

    lx, lw, _, _ = _grads(gs.BackwardSpec(grad_input=gs.Learned(g)), x, w, b, go)
    gx, gw, _, _ = _grads(None, x, w, b, go)
    assert seen["shapes"] == (go.shape, x.shape)
    assert torch.allclose(lx, 2 * gx) and torch.equal(lw, gw)
    B = torch.randn_like(w)
    wx, _, _, _ = _grads(gs.BackwardSpec(weight=gs.Learned(lambda W: B)), x, w, b, go)
    assert torch.allclose(wx, go @ B)


def test_same_seed_bitwise_same_gradients():
    x, w, b, go = _data(batch=(64,), i=16, o=8)
    spec = "grad_input=flip:0.4,grad_weight=flip:0.2,weight=flip:0.1,input=flip:0.3"
    run = lambda s: _grads(spec, x, w, b, go, torch.Generator().manual_seed(s))[:3]
    a, b2, c = run(7), run(7), run(8)
    assert all(torch.equal(u, v) for u, v in zip(a, b2))
    assert not torch.equal(a[0], c[0])


def test_ensemble_layer_equals_separate_layers():
    spec_p = [0.1, 0.5, 0.9]
    torch.manual_seed(0)
    singles = [nn.Linear(4, 3) for _ in spec_p]
    ens = gs.EnsembleSurrogateLinear.from_linears(
        singles, spec=gs.BackwardSpec(grad_input=gs.Flip(torch.tensor(spec_p)), weight="sign"),
        generator=[torch.Generator().manual_seed(s) for s in range(3)])
    x = torch.randn(3, 7, 4, requires_grad=True)
    go = torch.randn(3, 7, 3)
    ens(x).backward(go)
    for e, (lin, p) in enumerate(zip(singles, spec_p)):
        s = gs.convert(lin, f"grad_input=flip:{p},weight=sign", generator=e)
        xe = x[e].detach().clone().requires_grad_()
        ye = s(xe)
        assert torch.allclose(ye, ens(x)[e])
        ye.backward(go[e])
        assert torch.equal(xe.grad, x.grad[e]) and torch.allclose(s.weight.grad, ens.weight.grad[e])


def test_torch_func_grad_vmap_functional_call_jvp():
    x, w, b, go = _data(batch=(6,))
    layer = gs.SurrogateLinear(4, 3, spec="grad_input=sign", dtype=F64)
    params = dict(layer.named_parameters())
    loss = lambda p, x: (functional_call(layer, p, (x,)) * go[0]).sum()
    gx = vmap(grad(loss, argnums=1), in_dims=(None, 0))(params, x)
    assert torch.equal(gx, torch.sign(go[0] @ layer.weight.detach()).expand_as(gx))
    gp = grad(loss)(params, x[0])
    assert torch.allclose(gp["weight"], torch.outer(go[0], x[0]))
    # vmap with random modes needs randomness="different"; each row draws its own flips
    flip = lambda x: gs.surrogate_linear(x, w, b, "grad_input=flip:0.5").sum()
    rows = vmap(grad(flip), randomness="different")(torch.zeros(64, 4, dtype=F64))
    true = w.sum(0)
    assert torch.equal(rows.abs(), true.abs().expand_as(rows))
    assert len({tuple(torch.sign(r).tolist()) for r in rows}) > 1
    # forward-mode: the forward is exact, so jvp is the exact directional derivative
    v = torch.randn_like(x)
    _, dy = jvp(lambda x: gs.surrogate_linear(x, w, b, "grad_input=sign"), (x,), (v,))
    assert torch.allclose(dy, v @ w.T)


@settings(max_examples=30, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    i=st.integers(1, 5), o=st.integers(1, 5),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    mode=st.sampled_from(["exact", "sign", "flip:0", "flip:1", "blend:0", "sign:rescale"]),
    target=st.sampled_from(["grad_input", "grad_weight", "weight", "input"]),
)
def test_hypothesis_shapes_dtypes_modes(batch, i, o, dtype, mode, target):
    x, w, b, go = _data(tuple(batch), i, o, dtype)
    ux, uw, ub, y = _grads(gs.BackwardSpec(**{target: mode}), x, w, b, go)
    gx, gw, gb, y0 = _grads(None, x, w, b, go)
    assert y.shape == (*batch, o) and y.dtype == dtype and torch.equal(y, y0)
    assert ux.shape == x.shape and uw.shape == w.shape and ub.dtype == dtype
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else {}
    f = {"exact": lambda t: t, "sign": torch.sign, "flip:0": lambda t: t,
         "flip:1": lambda t: -t, "blend:0": lambda t: t,
         "sign:rescale": lambda t: torch.sign(t) * t.abs().mean()}[mode]
    go2, x2 = go.reshape(-1, o), x.reshape(-1, i)
    expect = {
        "grad_input": (f(gx), gw, gb),
        "grad_weight": (gx, f(gw), f(gb)),
        "weight": ((go2 @ f(w)).reshape(x.shape), gw, gb),
        "input": (gx, go2.T @ f(x2), gb),
    }[target]
    for got, want in zip((ux, uw, ub), expect):
        assert torch.allclose(got, want, **tol)


def test_shape_errors_name_shapes():
    w = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"input shape \(2, 5\) does not match weight shape"):
        gs.surrogate_linear(torch.randn(2, 5), w)
    with pytest.raises(ValueError, match="bias shape"):
        gs.surrogate_linear(torch.randn(2, 4), w, torch.randn(4))
    with pytest.raises(ValueError, match="generator must be"):
        gs.SurrogateLinear(2, 2, generator="seed")


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.LayerNorm(64),
        nn.Linear(64, 8), nn.GELU(), nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)),
        nn.ConvTranspose1d(1, 1, 1),
    )


def test_convert_keeps_outputs_and_swaps_selected_layers():
    model = _net()
    x = torch.randn(3, 2, 4, 4)
    y0 = model[:7](x)
    params = {n: p for n, p in model.named_parameters()}
    model, report = gs.convert_with_report(model, "grad_input=sign")
    assert report.converted == ["0", "4", "6.0", "6.1"]
    assert set(report.skipped) == {"3", "7"}
    assert isinstance(model[0], gs.SurrogateConv2d) and isinstance(model[6][1], gs.SurrogateLinear)
    assert type(model[7]) is nn.ConvTranspose1d
    assert all(params[n] is p for n, p in model.named_parameters())  # shared, not copied
    assert torch.equal(model[:7](x), y0)
    sub = _net()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gs.convert(sub, "weight=sign", include="6")
    assert "unchanged" not in " ".join(str(c.message) for c in caught)
    assert isinstance(sub[6][0], gs.SurrogateLinear) and type(sub[4]) is nn.Linear
    sub2 = gs.convert(_net(), lambda name, m: "grad_input=sign" if name == "4" else None,
                      include=["4", "6.*"])
    assert isinstance(sub2[4], gs.SurrogateLinear) and type(sub2[6][0]) is nn.Linear
    with pytest.warns(UserWarning, match="1 ConvTranspose1d unchanged"):
        gs.convert(_net(), "exact")


def test_convert_preserves_dtype_and_rng_state():
    model = nn.Sequential(nn.Linear(3, 3)).double()
    state = torch.get_rng_state()
    gs.convert(model, "weight=sign")
    assert torch.equal(state, torch.get_rng_state())
    assert model[0].weight.dtype == F64


def test_conv2d_modes_match_definitions():
    torch.manual_seed(0)
    conv = gs.SurrogateConv2d(2, 3, 3, stride=2, padding=1, dtype=F64)
    x = torch.randn(2, 2, 7, 7, dtype=F64, requires_grad=True)
    ref = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    ref.load_state_dict(conv.state_dict())
    go = torch.randn_like(ref(x))
    gx, gw = torch.autograd.grad(ref(x), (x, ref.weight), go)
    conv.spec = "grad_input=sign,grad_weight=sign"
    sx, sw = torch.autograd.grad(conv(x), (x, conv.weight), go)
    assert torch.equal(sx, torch.sign(gx)) and torch.equal(sw, torch.sign(gw))
    conv.spec = "weight=sign"
    wx, = torch.autograd.grad(conv(x), (x,), go)
    ref_sign = nn.functional.conv2d
    y_s = lambda x: ref_sign(x, torch.sign(conv.weight.detach()), None, 2, 1)
    assert torch.allclose(wx, torch.autograd.grad(y_s(x), x, go)[0])
    plan_spec = gs.BackwardSpec()
    f = lambda x, w, b: gs.surrogate_conv2d(x, w, b, plan_spec, recorder=lambda *a: None,
                                            stride=2, padding=1)
    xs = torch.randn(1, 2, 5, 5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (xs, conv.weight, conv.bias))


def test_ensemble_jvp_with_several_batch_dims_and_bias_tangent():
    g = torch.Generator().manual_seed(0)
    we, be = torch.randn(2, 5, 3, generator=g, dtype=F64), torch.randn(2, 5, generator=g, dtype=F64)
    xe = torch.randn(2, 2, 4, 3, generator=g, dtype=F64)
    tx, tw, tb = torch.randn_like(xe), torch.randn_like(we), torch.randn_like(be)
    f = lambda spec: lambda x, w, b: gs.surrogate_linear(x, w, b, spec)
    _, ref = jvp(f("exact"), (xe, we, be), (tx, tw, tb))
    _, got = jvp(f("grad_input=sign"), (xe, we, be), (tx, tw, tb))
    assert torch.allclose(got, ref)
    _, got_b = jvp(lambda b: gs.surrogate_linear(xe, we, b, "grad_input=sign"), (be,), (tb,))
    assert torch.allclose(got_b, tb[:, None, None, :].expand_as(got_b))


def test_ensemble_random_feedback_has_per_member_fan_in_scale():
    for gen in (0, None, [torch.Generator().manual_seed(s) for s in range(3)]):
        layer = gs.EnsembleSurrogateLinear(3, 16, 8, spec="weight=random", generator=gen)
        bound = 1 / 16 ** 0.5
        assert layer.feedback.abs().max() <= bound and layer.feedback.abs().max() > 0.8 * bound


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_floating_inputs_name_the_dtype(dtype):
    layers = [gs.SurrogateLinear(4, 3), gs.EnsembleSurrogateLinear(2, 4, 3),
              gs.SurrogateConv2d(4, 3, 1)]
    inputs = [torch.ones(2, 4), torch.ones(2, 5, 4), torch.ones(1, 4, 3, 3)]
    for layer, x in zip(layers, inputs):
        with pytest.raises(ValueError) as err:
            layer(x.to(dtype))
        assert f"input has dtype {dtype}; surrogate layers need a floating dtype" in str(err.value)
    with pytest.raises(ValueError, match=r"weight has dtype torch\.int64"):
        gs.surrogate_linear(torch.ones(2, 4), torch.ones(3, 4, dtype=torch.int64))


@pytest.mark.parametrize("spec", ["exact", "grad_input=sign:rescale,grad_weight=flip:0.3",
                                  "input=blend:0.5,weight=random"])
def test_empty_batch_works_like_torch_layers(spec):
    """Batch 0: empty output, empty input gradient, zero parameter gradients, as nn.Linear."""
    cases = [(gs.SurrogateLinear(4, 3, spec=spec, generator=0), nn.Linear(4, 3), (0, 4)),
             (gs.SurrogateLinear(4, 3, spec=spec, generator=0), nn.Linear(4, 3), (2, 0, 4)),
             (gs.SurrogateConv2d(2, 3, 3, spec=spec, generator=0), nn.Conv2d(2, 3, 3),
              (0, 2, 5, 5)),
             (gs.EnsembleSurrogateLinear(2, 4, 3, spec=spec, generator=0), None, (2, 0, 4))]
    for layer, ref, shape in cases:
        x = torch.zeros(shape, requires_grad=True)
        y = layer(x)
        if ref is not None:
            ref.load_state_dict(layer.state_dict(), strict=False)  # + feedback/generator state
            assert y.shape == ref(x).shape
        y.sum().backward()
        assert y.numel() == 0 and x.grad.shape == x.shape
        assert torch.equal(layer.weight.grad, torch.zeros_like(layer.weight))
        assert torch.equal(layer.bias.grad, torch.zeros_like(layer.bias))


def test_bad_shapes_and_sizes_are_value_errors():
    with pytest.raises(ValueError, match=r"input shape \(\) does not match weight shape"):
        gs.SurrogateLinear(4, 3)(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"input shape \(4,\) does not match .* 2 ensemble"):
        gs.EnsembleSurrogateLinear(2, 4, 3)(torch.ones(4))
    with pytest.raises(ValueError, match=r"conv2d needs input .*got shapes \(2, 5\)"):
        gs.SurrogateConv2d(2, 3, 3)(torch.ones(2, 5))
    with pytest.raises(ValueError, match="ensemble must be an integer >= 1; got 0"):
        gs.EnsembleSurrogateLinear(0, 4, 3)
    with pytest.raises(ValueError, match="in_features must be an integer >= 0; got -1"):
        gs.EnsembleSurrogateLinear(2, -1, 3)
    with pytest.raises(ValueError, match=r"at least one nn\.Linear"):
        gs.EnsembleSurrogateLinear.from_linears([])
