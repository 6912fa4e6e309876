"""Ensemble machinery: the ensemble optimizer against stock torch.optim, per-member modes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gradsurrogate as gs
from gradsurrogate.backward import MemberModes, stack_modes
from gradsurrogate.ensemble import EnsembleOptimizer

F64 = torch.float64
STOCK = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def _draw(e: int, g: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A (3, 4) weight and a (3,) bias per member, drawn from ``g``."""
    return [(torch.randn(3, 4, generator=g), torch.randn(3, generator=g)) for _ in range(e)]


def _members(e: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return _draw(e, torch.Generator().manual_seed(seed))


def _single_and_stacked(kind: str, lrs: list[float]):
    """Each member as its own parameters with a stock optimizer, and all stacked with an
    EnsembleOptimizer: (singles, stock, stacked, ens)."""
    init = _members(len(lrs))
    singles = [[nn.Parameter(w.clone()), nn.Parameter(b.clone())] for w, b in init]
    stock = [STOCK[kind](p, lr=lr) for p, lr in zip(singles, lrs)]
    stacked = [nn.Parameter(torch.stack([m[k] for m in init])) for k in range(2)]
    return singles, stock, stacked, EnsembleOptimizer(stacked, lrs, kind)


def _step_both(grads, singles, stock, stacked, ens, stepped) -> None:
    """One step with ``grads`` (per member): the stock optimizers of the members in
    ``stepped``, and the ensemble optimizer on the stacked gradients of all members."""
    for m in stepped:
        for p, gp in zip(singles[m], grads[m]):
            p.grad = gp.clone()
        stock[m].step()
    for k, p in enumerate(stacked):
        p.grad = torch.stack([grad[k] for grad in grads])
    ens.step()


@pytest.mark.parametrize("kind", ["adam", "sgd"])
@pytest.mark.parametrize("lrs", [[1e-2, 1e-2, 1e-2], [1e-2, 3e-3, 1e-2, 0.1]])
def test_optimizer_is_bitwise_stock_torch_optim_per_member(kind, lrs):
    """Member e of the ensemble follows torch.optim.<kind>(lr=lrs[e]) on its own tensors."""
    singles, stock, stacked, ens = _single_and_stacked(kind, lrs)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        _step_both(_draw(len(lrs), g), singles, stock, stacked, ens, range(len(lrs)))
        for m, params in enumerate(singles):
            assert torch.equal(stacked[0][m], params[0]) and torch.equal(stacked[1][m], params[1])


def test_in_place_and_masked_updates_agree_bitwise_across_a_freeze():
    """Steps 1-2 take the in-place path (all active, one lr), steps 3-4 the masked one (member
    1 frozen): the active members still follow torch.optim.Adam bitwise, member 1 stays put."""
    singles, stock, stacked, ens = _single_and_stacked("adam", [0.05] * 3)
    g = torch.Generator().manual_seed(2)
    for step in range(4):
        if step == 2:
            ens.active[1] = False
            frozen = [p[1].clone() for p in stacked]
        _step_both(_draw(3, g), singles, stock, stacked, ens, (0, 1, 2) if step < 2 else (0, 2))
    for m in (0, 2):
        assert all(torch.equal(stacked[k][m], singles[m][k]) for k in range(2))
    assert all(torch.equal(stacked[k][1], frozen[k]) for k in range(2))


def test_frozen_members_and_parameters_without_gradient_are_untouched():
    init = _members(3)
    w = nn.Parameter(torch.stack([m[0] for m in init]))
    b = nn.Parameter(torch.stack([m[1] for m in init]))
    opt = EnsembleOptimizer([w, b], [0.1, 0.1, 0.1], "adam")
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt.active[1] = False
    w.grad = torch.ones_like(w)  # b has no gradient: skipped, as torch.optim does
    opt.step()
    assert torch.equal(w[1], w0[1]) and not torch.equal(w[0], w0[0])
    assert torch.equal(b, b0) and 1 not in opt.state
    # Adam's first step moves each coordinate by lr (m/√v = 1 for a constant gradient)
    assert torch.allclose(w0[0] - w[0], torch.full_like(w[0], 0.1))
    opt.zero_grad()
    assert w.grad is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "rmsprop"}, "unknown optimizer 'rmsprop'; accepted: adam, sgd"),
    ({"lr": [1e-2, float("inf")]}, "lr of member 1 must be a finite number in (0, "),
    ({"lr": [1e-2, 1e300]}, "got 1e+300"),
    ({"lr": [0.0, 1e-2]}, "lr of member 0 must be a finite number in (0, "),
    ({"betas": (0.9, 1.0)}, "betas[1] must be a finite number in [0, 1); got 1.0"),
    ({"eps": float("nan")}, "eps must be a finite number"),
    ({"lr": [1e-2] * 3}, "parameter 0 of shape (2, 3) must have the 3 members"),
    ({"lr": []}, "needs parameters and one lr per member"),
])
def test_optimizer_bad_values_name_value_and_range(kwargs, message):
    args = {"params": [nn.Parameter(torch.zeros(2, 3))], "lr": [1e-2, 1e-2], **kwargs}
    with pytest.raises(ValueError) as err:
        EnsembleOptimizer(**args)
    assert message in str(err.value)


def test_make_ensemble_optimizer_takes_trainable_parameters():
    layer = gs.EnsembleSurrogateLinear(2, 3, 4)
    layer.bias.requires_grad_(False)
    opt = gs.make_ensemble_optimizer(layer, [1e-2, 1e-3], "sgd")
    assert opt.params == [layer.weight] and opt.kind == "sgd"


def test_stack_modes_shares_equal_modes_and_batches_parameters():
    assert stack_modes([gs.Sign(), gs.Sign()]) == gs.Sign()
    flip = stack_modes([gs.Flip(0.1), gs.Flip(0.3)])
    assert isinstance(flip, gs.Flip) and flip.p.tolist() == [0.1, 0.3]
    mixed = stack_modes([gs.Flip(0.2), gs.Exact(), gs.Sign(), gs.Flip(0.4)])
    assert isinstance(mixed, MemberModes)
    assert str(mixed) == "members[flip:0.2;exact;sign;flip:0.4]" and mixed.random
    assert not mixed.is_exact and stack_modes([gs.Exact(), gs.Flip(0.0)]).is_exact


def test_member_modes_equal_each_member_mode_applied_alone():
    """Member e's slice of a mixed-mode ensemble equals modes[e] applied to it with
    generator[e] alone: bitwise the numbers of separate runs."""
    modes = [gs.Flip(0.3), gs.Sign(rescale=True), gs.Exact(), gs.Flip(0.7), gs.Blend(0.5)]
    t = torch.randn(len(modes), 6, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    gens = [torch.Generator().manual_seed(10 + e) for e in range(len(modes))]
    out = stack_modes(modes).apply(t, gens, ensemble=True)
    for e, mode in enumerate(modes):
        alone = mode.apply(t[e], torch.Generator().manual_seed(10 + e))
        assert torch.equal(out[e], alone), (e, str(mode))


def test_member_modes_bad_input():
    with pytest.raises(ValueError, match="a feedback-alignment weight mode cannot be mixed"):
        stack_modes([gs.RandomFeedback(), gs.Sign()])
    with pytest.raises(ValueError, match="'learned' cannot be mixed"):
        stack_modes([gs.Learned(lambda w: w), gs.Sign()])
    with pytest.raises(ValueError, match="at least one mode"):
        stack_modes([])
    with pytest.raises(ValueError, match="needs an ensemble tensor with that many members"):
        stack_modes([gs.Flip(0.2), gs.Sign()]).apply(torch.ones(3, 2), ensemble=True)


@settings(max_examples=25, deadline=None)
@given(e=st.integers(1, 3), batch=st.lists(st.integers(0, 3), min_size=0, max_size=2),
       i=st.integers(1, 4), o=st.integers(1, 4),
       mode=st.sampled_from(["exact", "sign:rescale", "flip:0.5", "blend:0.3"]),
       target=st.sampled_from(["grad_input", "grad_weight", "weight", "input"]))
def test_ensemble_layer_matches_its_members(e, batch, i, o, mode, target):
    """Any shape (empty batches too): member k of an ensemble layer gives the outputs and
    gradients of a SurrogateLinear holding its parameters and generator seed; exact specs
    give nn.Linear's numbers bitwise."""
    torch.manual_seed(0)
    singles = [nn.Linear(i, o) for _ in range(e)]
    spec = f"{target}={mode}"
    ens = gs.EnsembleSurrogateLinear.from_linears(
        singles, spec, [torch.Generator().manual_seed(k) for k in range(e)])
    x = torch.randn(e, *batch, i, requires_grad=True)
    go = torch.randn(e, *batch, o)
    y = ens(x)
    y.backward(go)
    for k, lin in enumerate(singles):
        layer = gs.SurrogateLinear(i, o, spec=spec, generator=k)
        layer.load_state_dict(lin.state_dict())
        refs = [layer] if mode != "exact" else [layer, lin]
        for ref in refs:
            xk = x[k].detach().clone().requires_grad_()
            yk = ref(xk)
            yk.backward(go[k])
            assert torch.allclose(yk, y[k], rtol=1e-6, atol=1e-6)  # bmm vs mm: rounding only
            assert xk.grad.shape == x.grad[k].shape
            assert torch.allclose(xk.grad, x.grad[k], rtol=1e-5, atol=1e-6)
            assert torch.allclose(ref.weight.grad, ens.weight.grad[k], rtol=1e-5, atol=1e-6)
        if mode == "exact":
            assert torch.equal(layer.weight.grad, lin.weight.grad)
            assert torch.equal(layer.bias.grad, lin.bias.grad)


def test_per_member_flip_probability_is_not_rounded_to_bfloat16():
    # p = 0.001 per member: compared in float32, not rounded through bfloat16 first
    t = torch.ones(2, 200_000, dtype=torch.bfloat16)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    out = gs.Flip(torch.tensor([0.001, 0.3])).apply(t, gens, ensemble=True)
    rates = (out < 0).double().mean(1)
    assert abs(rates[0].item() - 0.001) < 3e-4 and abs(rates[1].item() - 0.3) < 5e-3
