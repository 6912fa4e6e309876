"""Ensemble convolutions: member k of an EnsembleSurrogateConvNd equals a SurrogateConvNd with
its parameters and generator seed (outputs, every gradient, every random draw), in float64."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gradsurrogate as gs

F64 = torch.float64
CONV = {1: (nn.Conv1d, gs.SurrogateConv1d, gs.EnsembleSurrogateConv1d),
        2: (nn.Conv2d, gs.SurrogateConv2d, gs.EnsembleSurrogateConv2d),
        3: (nn.Conv3d, gs.SurrogateConv3d, gs.EnsembleSurrogateConv3d)}
SPECS = ["exact", "grad_input=flip:0.3", "grad_weight=sign", "weight=fa", "weight=brsf",
         "weight=frsf", "weight=random", "weight=usf,grad_weight=flip:0.2",
         "input=flip:0.2,grad_input=flip:0.4", "grad_input=sign:rescale,input=blend:0.5"]


def _pair(dim: int, e: int, c: int, o: int, kernel: int, spec: str, **kw):
    """e torch convs (float64) and their ensemble, members seeded 0..e-1."""
    torch_conv, _, ens_conv = CONV[dim]
    torch.manual_seed(1)
    singles = [torch_conv(c, o, kernel, dtype=F64, **kw) for _ in range(e)]
    gens = [torch.Generator().manual_seed(k) for k in range(e)]
    return singles, ens_conv.from_convs(singles, spec, gens)


@settings(max_examples=30, deadline=None)
@given(dim=st.sampled_from([1, 2, 3]), e=st.integers(1, 3), n=st.integers(0, 3),
       groups=st.sampled_from([1, 2]), kernel=st.integers(1, 3), stride=st.integers(1, 2),
       dilation=st.integers(1, 2), padding=st.sampled_from([0, 1, "same"]),
       mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
       bias=st.booleans(), spec=st.sampled_from(SPECS))
def test_ensemble_conv_matches_its_members(dim, e, n, groups, kernel, stride, dilation, padding,
                                           mode, bias, spec):
    if padding == "same":
        stride = 1
    if mode != "zeros" and padding == 0:
        mode = "zeros"
    c, o, size = 2 * groups, 2 * groups, 5
    kw = dict(stride=stride, dilation=dilation, padding=padding, groups=groups, bias=bias,
              padding_mode=mode)
    singles, ens = _pair(dim, e, c, o, kernel, spec, **kw)
    x = torch.randn(e, n, c, *[size] * dim, dtype=F64, requires_grad=True)
    y = ens(x)
    go = torch.randn_like(y)
    y.backward(go)
    for k, conv in enumerate(singles):
        layer = CONV[dim][1](c, o, kernel, spec=spec, generator=k, dtype=F64, **kw)
        layer.load_state_dict(conv.state_dict(), strict=False)
        layer.set_spec(spec, k)  # the feedback matrix drawn as the member drew its own
        xk = x[k].detach().clone().requires_grad_()
        yk = layer(xk)
        yk.backward(go[k])
        torch.testing.assert_close(yk, y[k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(xk.grad, x.grad[k], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(layer.weight.grad, ens.weight.grad[k], rtol=1e-10,
                                   atol=1e-12)
        if bias:
            torch.testing.assert_close(layer.bias.grad, ens.bias.grad[k], rtol=1e-10,
                                       atol=1e-12)
        if layer.feedback is not None:
            assert torch.equal(layer.feedback, ens.feedback[k])


def test_exact_ensemble_conv_is_torch_conv_per_member_and_gradchecks():
    singles, ens = _pair(1, 3, 4, 6, 3, "exact", stride=2, padding=1)
    x = torch.randn(3, 2, 4, 9, dtype=F64)
    for k, conv in enumerate(singles):
        torch.testing.assert_close(ens(x)[k], conv(x[k]), rtol=0, atol=1e-14)
    assert torch.autograd.gradcheck(ens, (x.clone().requires_grad_(),))


@pytest.mark.parametrize("spec", ["weight=usf", "grad_weight=sign", "grad_input=flip:0.3"])
def test_ensemble_conv_forward_mode_and_vmap_are_the_members(spec):
    """The surrogate Function's jvp (input, weight and bias tangents) is the exact derivative
    of each member's convolution; vmap over the batch gives the members' outputs."""
    singles, ens = _pair(1, 2, 2, 3, 3, spec, stride=2, padding=1)
    x, dx = torch.randn(2, 3, 2, 8, dtype=F64), torch.randn(2, 3, 2, 8, dtype=F64)
    dw, db = torch.randn_like(ens.weight), torch.randn_like(ens.bias)
    params = {"weight": ens.weight.detach(), "bias": ens.bias.detach()}

    def f(xx, w, b):
        return torch.func.functional_call(ens, {"weight": w, "bias": b}, (xx,))

    y, dy = torch.func.jvp(f, (x, params["weight"], params["bias"]), (dx, dw, db))
    for k, conv in enumerate(singles):
        def g(xx, w, b, conv=conv):
            return torch.func.functional_call(conv, {"weight": w, "bias": b}, (xx,))

        yk, dyk = torch.func.jvp(g, (x[k], conv.weight.detach(), conv.bias.detach()),
                                 (dx[k], dw[k], db[k]))
        torch.testing.assert_close(y[k], yk, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(dy[k], dyk, rtol=1e-12, atol=1e-12)
    out = torch.func.vmap(lambda xx: ens(xx.unsqueeze(1)).squeeze(1), in_dims=1,
                          randomness="different")(x)  # (n, e, o, l')
    torch.testing.assert_close(out.transpose(0, 1), y, rtol=1e-12, atol=1e-12)


def test_ensemble_conv_state_round_trips_feedback_and_generators():
    """A fresh layer given the state_dict (feedback, generator states) draws the same
    backward: the same gradients as the original from that point on."""
    _, ens = _pair(1, 2, 2, 2, 3, "weight=fa,grad_input=flip:0.3", padding=1)
    state = {k: v.clone() for k, v in ens.state_dict().items()}
    assert state["feedback"].shape == ens.weight.shape
    assert state["generator_state"].shape[0] == 2
    twin = gs.EnsembleSurrogateConv1d(2, 2, 2, 3, padding=1, dtype=F64,
                                      spec="weight=fa,grad_input=flip:0.3")
    twin.load_state_dict(state)
    x = torch.randn(2, 3, 2, 6, dtype=F64)
    grads = []
    for layer in (ens, twin):
        xx = x.clone().requires_grad_()
        layer(xx).sum().backward()
        grads.append((xx.grad, layer.weight.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_ensemble_conv_bad_shapes_and_generators_name_the_values():
    singles, ens = _pair(1, 2, 2, 2, 3, "exact")
    with pytest.raises(ValueError, match=r"needs input \(e, n, c, \*spatial\)"):
        ens(torch.randn(2, 2, 7, dtype=F64))
    with pytest.raises(ValueError, match=r"got shapes \(3, 1, 2, 7\)"):
        ens(torch.randn(3, 1, 2, 7, dtype=F64))
    with pytest.raises(ValueError, match="one generator per member"):
        gs.EnsembleSurrogateConv1d.from_convs(singles, "exact", [torch.Generator()])
    with pytest.raises(ValueError, match="divisible by groups"):
        gs.EnsembleSurrogateConv1d(2, 3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="at least one convolution"):
        gs.EnsembleSurrogateConv1d.from_convs([])
    with pytest.raises(ValueError, match=r"member 1 has stride=\(2,\), member 0 has"):
        gs.EnsembleSurrogateConv1d.from_convs([nn.Conv1d(2, 2, 3), nn.Conv1d(2, 2, 3, stride=2)])
    with pytest.raises(ValueError, match=r"member 0 is a Conv2d; every member must be an nn\."):
        gs.EnsembleSurrogateConv1d.from_convs([nn.Conv2d(2, 2, 3)])
    with pytest.raises(ValueError, match="member 1 has no bias"):
        gs.EnsembleSurrogateConv1d.from_convs([nn.Conv1d(2, 2, 3), nn.Conv1d(2, 2, 3, bias=False)])
    with pytest.raises(ValueError, match="member 1 has out_features=3"):
        gs.EnsembleSurrogateLinear.from_linears([nn.Linear(2, 2), nn.Linear(2, 3)])
    with pytest.raises(ValueError, match="unknown padding_mode 'bogus'; accepted: zeros, reflect"):
        gs.EnsembleSurrogateConv1d(2, 2, 2, 3, padding_mode="bogus")
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        gs.EnsembleSurrogateConv1d(2, 2, 2, 3, padding="same", stride=2)


def test_from_linears_and_from_convs_draw_nothing_but_the_feedback_state():
    """Built on the meta device: the global RNG is untouched, and a stateful spec draws its
    feedback matrix from the generator it is given (per member, as a layer of its own)."""
    torch.manual_seed(0)
    lin = [nn.Linear(3, 2), nn.Linear(3, 2)]
    convs = [nn.Conv1d(2, 2, 3), nn.Conv1d(2, 2, 3)]
    before = torch.random.get_rng_state()
    gs.EnsembleSurrogateLinear.from_linears(lin, "grad_input=sign")
    gs.EnsembleSurrogateConv1d.from_convs(convs, "grad_input=sign")
    assert torch.equal(before, torch.random.get_rng_state())
    ens = gs.EnsembleSurrogateLinear.from_linears(lin, "weight=fa", 5)
    alone = gs.SurrogateLinear(3, 2, spec="weight=fa", generator=5)
    assert torch.equal(ens.feedback[0], alone.feedback)
