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
        2: (nn.Conv2d, gs.SurrogateConv2d, gs.EnsembleSurrogateConv2d)}
SPECS = ["exact", "grad_input=flip:0.3", "grad_weight=sign", "weight=fa", "weight=brsf",
         "weight=usf,grad_weight=flip:0.2", "input=flip:0.2,grad_input=flip:0.4",
         "grad_input=sign:rescale,input=blend:0.5"]


def _pair(dim: int, e: int, c: int, o: int, kernel: int, spec: str, **kw):
    """e torch convs (float64) and their ensemble, members seeded 0..e-1."""
    torch_conv, _, ens_conv = CONV[dim]
    torch.manual_seed(1)
    singles = [torch_conv(c, o, kernel, dtype=F64, **kw) for _ in range(e)]
    gens = [torch.Generator().manual_seed(k) for k in range(e)]
    return singles, ens_conv.from_convs(singles, spec, gens)


@settings(max_examples=30, deadline=None)
@given(dim=st.sampled_from([1, 2]), e=st.integers(1, 3), n=st.integers(0, 3),
       groups=st.sampled_from([1, 2]), kernel=st.integers(1, 3), stride=st.integers(1, 2),
       padding=st.sampled_from([0, 1, "same"]), mode=st.sampled_from(["zeros", "reflect"]),
       bias=st.booleans(), spec=st.sampled_from(SPECS))
def test_ensemble_conv_matches_its_members(dim, e, n, groups, kernel, stride, padding, mode,
                                           bias, spec):
    if padding == "same":
        stride = 1
    if mode == "reflect" and padding == 0:
        mode = "zeros"
    c, o, size = 2 * groups, 2 * groups, 5
    kw = dict(stride=stride, padding=padding, groups=groups, bias=bias, padding_mode=mode)
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
    flip = gs.EnsembleSurrogateConv1d.from_convs(singles, "weight=usf")
    xg = x.clone().requires_grad_()
    # a deterministic surrogate has the exact forward-mode derivative (jvp) and its own backward
    assert torch.autograd.gradcheck(lambda t: ens(t), (xg,))
    y = flip(xg)
    assert y.shape == (3, 2, 6, 5)


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
