"""Surrogate layers on real architectures: every conv, Linear subclasses, parametrisations,
shared modules, the convert registry and report, mixed precision, state and torch.compile."""

import copy
import json
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import gradsurrogate as gs
from gradsurrogate.backward import MODES, FeedbackMode

F64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}

# (dim, kwargs): every padding mode, string padding (even kernels: asymmetric 'same'),
# strides, dilation, grouped and depthwise
CASES = [
    (1, dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1)),
    (1, dict(in_channels=4, out_channels=4, kernel_size=4, padding="same", groups=4)),
    (1, dict(in_channels=4, out_channels=6, kernel_size=3, padding=2, padding_mode="circular")),
    (2, dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, padding_mode="reflect")),
    (2, dict(in_channels=4, out_channels=6, kernel_size=(2, 3), padding="same", dilation=1)),
    (2, dict(in_channels=4, out_channels=8, kernel_size=3, padding="valid", groups=2,
             stride=(2, 1), dilation=(1, 2))),
    (2, dict(in_channels=4, out_channels=4, kernel_size=4, padding="same",
             padding_mode="replicate", groups=4)),
    (3, dict(in_channels=4, out_channels=4, kernel_size=2, padding="same", groups=2)),
    (3, dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, padding_mode="reflect",
             stride=2)),
]


def _pair(dim, kw, spec, seed=0):
    torch.manual_seed(seed)
    ref = CONVS[dim](**kw)
    new = gs.convert(copy.deepcopy(ref), spec, generator=0)
    return ref, new


def _grads(module, x, go):
    x = x.detach().clone().requires_grad_()
    y = module(x)
    y.backward(go)
    return y, x.grad, module.weight.grad, module.bias.grad


@pytest.mark.parametrize("dim,kw", CASES)
def test_every_conv_converts_and_exact_is_bitwise(dim, kw):
    """Exact spec: outputs and all gradients ``torch.equal`` to the torch layer. With
    ``grad_input=sign`` the weight/bias gradients stay bitwise torch's (the same
    ``convolution_backward`` kernel) and the conv's input gradient is the sign of the true one
    (padding modes and asymmetric 'same' pad outside the surrogate op, so the sign applies
    before the pad's own exact backward)."""
    ref, new = _pair(dim, kw, "exact")
    assert type(new).__name__ == f"SurrogateConv{dim}d"
    assert list(new.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 4, *([7] * dim))
    go = torch.randn_like(ref(x))
    for a, b in zip(_grads(ref, x, go), _grads(new, x, go)):
        assert torch.equal(a, b)
    new.spec = "grad_input=sign"
    ref.zero_grad()
    new.zero_grad()
    y0, gx0, gw0, gb0 = _grads(ref, x, go)
    y1, gx1, gw1, gb1 = _grads(new, x, go)
    assert torch.equal(y0, y1) and torch.equal(gw0, gw1) and torch.equal(gb0, gb1)
    simple = kw.get("padding_mode", "zeros") == "zeros" and kw.get("padding") != "same"
    if simple:
        assert torch.equal(gx1, torch.sign(gx0))
    else:
        assert not torch.equal(gx1, gx0) and gx1.shape == gx0.shape


def test_functional_conv_matches_torch_for_string_padding_and_unbatched():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 2, 2, 4, generator=g, dtype=F64)
    x = torch.randn(2, 5, 6, generator=g, dtype=F64)
    for pad in ("same", "valid"):
        ref = nn.functional.conv2d(x, w, None, 1, pad, (2, 1))
        assert torch.equal(gs.surrogate_conv(x, w, None, "grad_input=sign", padding=pad,
                                             dilation=(2, 1)), ref)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        gs.surrogate_conv(x, w, padding="same", stride=2)
    with pytest.raises(ValueError, match="padding_mode"):
        gs.surrogate_conv(x, w, padding_mode="mirror")


def test_gradcheck_float64_every_new_op():
    """Function path (forced by a recorder) in float64: conv 1-d, 3-d, grouped, asymmetric
    'same', every padding mode."""
    g = torch.Generator().manual_seed(1)
    rec = lambda *a: None
    cases = [((1, 2, 5), (4, 1, 3), dict(groups=2, stride=2, padding=1)),
             ((1, 2, 4, 4, 3), (2, 2, 2, 1, 2), dict(padding="same")),
             ((1, 2, 5, 4), (3, 2, 2, 3), dict(padding=1, padding_mode="reflect")),
             ((1, 2, 5), (3, 2, 2), dict(padding=1, padding_mode="circular", dilation=2)),
             ((2, 4, 4), (3, 2, 3, 3), dict(padding=1, padding_mode="replicate"))]
    for xs, ws, kw in cases:
        x = torch.randn(xs, generator=g, dtype=F64, requires_grad=True)
        w = torch.randn(ws, generator=g, dtype=F64, requires_grad=True)
        b = torch.randn(ws[0], generator=g, dtype=F64, requires_grad=True)
        f = lambda x, w, b, kw=kw: gs.surrogate_conv(x, w, b, "exact", recorder=rec, **kw)
        assert torch.autograd.gradcheck(f, (x, w, b))
        # forward mode stays exact for a perturbed spec (the jvp Function outside compile)
        s = lambda x, w, b, kw=kw: gs.surrogate_conv(x, w, b, "grad_input=sign", **kw)
        tangents = tuple(torch.randn_like(t) for t in (x, w, b))
        _, d0 = torch.func.jvp(f, (x, w, b), tangents)
        _, d1 = torch.func.jvp(s, (x, w, b), tangents)
        assert torch.allclose(d0, d1)


@settings(max_examples=25, deadline=None)
@given(dim=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 2),
       dilation=st.integers(1, 2), groups=st.sampled_from([1, 2]), k=st.integers(1, 3),
       mode=st.sampled_from(["sign", "flip:1", "exact"]))
def test_hypothesis_conv_shapes(dim, stride, padding, dilation, groups, k, mode):
    g = torch.Generator().manual_seed(dim * 100 + k)
    x = torch.randn(2, 2, *([6] * dim), generator=g, dtype=F64, requires_grad=True)
    w = torch.randn(4, 2 // groups, *([k] * dim), generator=g, dtype=F64, requires_grad=True)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y0 = getattr(nn.functional, f"conv{dim}d")(x, w, None, **kw)
    gx0, gw0 = torch.autograd.grad(y0, (x, w), torch.ones_like(y0))
    y = gs.surrogate_conv(x, w, None, f"grad_input={mode},grad_weight={mode}",
                          recorder=lambda *a: None, **kw)
    gx, gw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
    f = {"sign": torch.sign, "flip:1": lambda t: -t, "exact": lambda t: t}[mode]
    assert torch.equal(y, y0)
    assert torch.equal(gx, f(gx0)) and torch.equal(gw, f(gw0))  # same kernels: bitwise


@pytest.mark.parametrize("spec", [
    "weight=fa", "weight=brsf", "grad_input=flip:0.3,weight=brsf",
    "grad_input=sign,grad_weight=flip:0.2", "input=flip:0.1,grad_weight=flip:0.4",
    "input=flip:0.1,grad_input=flip:0.3,weight=brsf"])
def test_conv_fused_backward_equals_one_by_one_with_the_same_draws(spec, monkeypatch):
    # One convolution_backward call for the three gradients gives bitwise the numbers (and the
    # random draws, in the same order) of forming them one by one.
    from gradsurrogate._conv import ConvOp

    calls = []
    grads_fn = ConvOp.grads
    monkeypatch.setattr(ConvOp, "grads", lambda *a: calls.append(1) or grads_fn(*a))

    def grads(fused: bool):
        monkeypatch.setattr(ConvOp, "fused", fused)
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, groups=3), nn.Tanh(),
                            nn.Conv2d(6, 4, 2, stride=2, bias=False), nn.Flatten(2, 3),
                            nn.Conv1d(4, 2, 3, padding=1, padding_mode="reflect"))
        model = gs.convert(net, spec, generator=7)
        x = torch.randn(2, 3, 7, 7, requires_grad=True)
        model(x).square().sum().backward()
        return [x.grad] + [p.grad for p in model.parameters()]

    for a, b in zip(grads(True), grads(False), strict=True):
        assert torch.equal(a, b)
    # the fused kernel ran, except where both the input and grad_input modes draw
    assert len(calls) == (0 if spec.startswith("input=flip:0.1,grad_input") else 3)


class _OwnForward(nn.Linear):
    def forward(self, x):
        return super().forward(x) * 2


def _zoo_of_linears():
    torch.manual_seed(0)
    mha_proj = nn.modules.linear.NonDynamicallyQuantizableLinear(4, 4)
    par = parametrize.register_parametrization(nn.Linear(4, 4), "weight", nn.Tanh())
    par_conv = parametrizations.weight_norm(nn.Conv2d(2, 2, 3, padding=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old_wn = torch.nn.utils.weight_norm(nn.Linear(4, 4))
    return nn.ModuleDict(dict(a=mha_proj, b=_OwnForward(4, 4), c=par, d=old_wn, e=par_conv))


def test_linear_subclasses_parametrisations_and_weight_norm():
    """NonDynamicallyQuantizableLinear (MHA's out_proj type) and parametrised layers convert
    (bitwise exact); a subclass with its own forward and the deprecated weight_norm hook are
    skipped with the reason."""
    ref, model = _zoo_of_linears(), _zoo_of_linears()
    model, report = gs.convert_with_report(model, "exact")
    assert report.converted == ["a", "c", "e"]
    assert "overrides forward" in report.skipped["b"]
    assert "torch.nn.utils.parametrizations.weight_norm" in report.skipped["d"]
    assert isinstance(model["c"], gs.SurrogateLinear) and parametrize.is_parametrized(model["c"])
    for key in ("c", "e"):
        assert list(model[key].state_dict()) == list(ref[key].state_dict())
    x, xc = torch.randn(3, 4), torch.randn(1, 2, 5, 5)
    for key, inp in (("a", x), ("c", x), ("e", xc)):
        y0, y1 = ref[key](inp), model[key](inp)
        assert torch.equal(y0, y1)
        g0 = torch.autograd.grad(y0.square().sum(), list(ref[key].parameters()))
        g1 = torch.autograd.grad(y1.square().sum(), list(model[key].parameters()))
        assert all(torch.equal(a, b) for a, b in zip(g0, g1))
    # perturbed: grad of the *computed* weight is signed, then chained through tanh
    model["c"].spec = "grad_weight=sign"
    y = model["c"](x)
    (go,) = torch.autograd.grad(y.sum(), [model["c"].parametrizations.weight.original])
    orig = ref["c"].parametrizations.weight.original
    want = torch.sign(torch.ones(3, 4).T @ x) * (1 - torch.tanh(orig) ** 2)
    assert torch.allclose(go, want)


def test_shared_module_include_and_summary():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.BatchNorm1d(4), lin, nn.BatchNorm1d(4), nn.Embedding(3, 4))
    model, report = gs.convert_with_report(model, "grad_input=sign")
    assert model[0] is model[2] and isinstance(model[0], gs.SurrogateLinear)
    assert report.converted == ["0"] and report.shared == {"2": "0"}
    assert json.loads(json.dumps(report.to_dict()))["skipped"]["4"] == "Embedding has no surrogate"
    assert report.summary() == "left 2 BatchNorm1d, 1 Embedding unchanged (they have no surrogate)"
    listed = "2: BatchNorm1d has no surrogate; 3: Embedding"
    for on_skip, text in (("summary", "left 2 BatchNorm1d, 1 Embedding"), ("list", listed)):
        with pytest.warns(UserWarning, match=text):
            gs.convert(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.BatchNorm1d(4),
                                     nn.Embedding(3, 4)), "exact", on_skip=on_skip)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gs.convert(nn.Sequential(nn.BatchNorm1d(4)), "exact", on_skip="ignore")
    with pytest.raises(ValueError, match=r"include pattern 'encoder\.\*' matches no module"):
        gs.convert(nn.Sequential(nn.Linear(2, 2)), "exact", include=["0", "encoder.*"])
    with pytest.raises(ValueError, match="on_skip"):
        gs.convert(nn.Sequential(nn.Linear(2, 2)), "exact", on_skip="quiet")


def test_register_surrogate_most_specific_type_wins():
    class Scaled(nn.Linear):
        pass

    calls = []

    @gs.register_surrogate(Scaled)
    def _factory(module, spec, generator):
        calls.append(str(spec))
        return "Scaled is refused by its own factory"

    try:
        _, report = gs.convert_with_report(nn.Sequential(Scaled(2, 2), nn.Linear(2, 2)),
                                           "weight=sign")
        assert calls == ["weight=sign"] and report.converted == ["1"]
        assert report.skipped == {"0": "Scaled is refused by its own factory"}
    finally:
        del gs.SURROGATES[Scaled]
    with pytest.raises(ValueError, match=r"nn\.Module subclasses"):
        gs.register_surrogate(int)


def _every_spec():
    weight_modes = [n for n, c in MODES.items() if issubclass(c, FeedbackMode)]
    return (["exact", "grad_input=sign", "grad_weight=flip:0.3", "grad_input=blend:0.5",
             "weight=sign", "input=sign:rescale", "grad_input=none", "grad_weight=none"]
            + [f"weight={m}" for m in weight_modes])


def _net(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding="same", padding_mode="reflect"), nn.ReLU(),
                         nn.Flatten(), nn.Linear(64, 5)).to(dtype)


@pytest.mark.parametrize("spec", _every_spec())
def test_autocast_bf16_and_bf16_parameters(spec):
    """Under CPU autocast the forward equals the torch model's under autocast bitwise, the
    backward runs (parameter gradients in float32); bf16 parameters work without autocast."""
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    ref, model = _net(), gs.convert(_net(), spec, generator=0)
    with torch.autocast("cpu", torch.bfloat16):
        y0, y1 = ref(x), model(x)
    assert y1.dtype == torch.bfloat16 and torch.equal(y0, y1)
    y1.float().square().sum().backward()
    grads = [p.grad for p in [*model.parameters(), x] if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and g.isfinite().all() for g in grads)
    half = gs.convert(_net(torch.bfloat16), spec, generator=0)
    y = half(x.detach().bfloat16())
    assert torch.equal(y, _net(torch.bfloat16)(x.detach().bfloat16()))
    y.float().square().sum().backward()
    assert half[3].weight.grad is None or half[3].weight.grad.dtype == torch.bfloat16


def test_flip_rate_is_p_in_every_dtype():
    """Flip masks are drawn in float32: bf16 ``flip:0.001`` flips 0.1% (it flipped 0.29%, and
    ``flip:0.999`` 100%, with bf16 draws), and one seed gives the same mask in every dtype."""
    n = 400_000
    for p in (0.001, 0.999):
        masks = []
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            gen = torch.Generator().manual_seed(0)
            masks.append(gs.Flip(p).apply(torch.ones(n, dtype=dtype), gen) < 0)
            rate = masks[-1].double().mean().item()
            assert abs(rate - p) < 5 * (p * (1 - p) / n) ** 0.5, (dtype, p, rate)
        assert all(torch.equal(m, masks[0]) for m in masks)


def test_linear_perturbed_spec_keeps_the_exact_parts_bitwise_and_hooks():
    """``grad_input=sign`` on (*, i) inputs of 1-3 batch dims: weight and bias gradients
    ``torch.equal`` to nn.Linear's; forward hooks of a converted layer keep running."""
    for shape in ((5, 6), (3, 5, 6), (2, 3, 4, 6)):
        torch.manual_seed(0)
        ref = nn.Linear(6, 4)
        new = gs.convert(copy.deepcopy(ref), "grad_input=sign")
        x, go = torch.randn(*shape), torch.randn(*shape[:-1], 4)
        a = torch.autograd.grad(ref(x), list(ref.parameters()), go)
        b = torch.autograd.grad(new(x), list(new.parameters()), go)
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    seen = []
    lin = nn.Linear(2, 2)
    lin.register_forward_hook(lambda m, i, o: seen.append(type(m).__name__))
    gs.convert(nn.Sequential(lin), "weight=sign")[0](torch.ones(1, 2))
    assert seen == ["SurrogateLinear"]
