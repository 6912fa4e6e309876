"""BackwardSpec parsing/serialisation and the elementwise math of each mode."""

import json
import math

import pytest
import torch

import gradsurrogate as gs
from gradsurrogate.backward import mean_abs, uniform_like


def test_spec_string_round_trip_and_dict():
    spec = gs.BackwardSpec(grad_input="flip:0.3", weight="sign", input="blend:0.25",
                           grad_weight="none")
    text = str(spec)
    assert text == "grad_input=flip:0.3,grad_weight=none,weight=sign,input=blend:0.25"
    assert gs.BackwardSpec.parse(text) == spec
    assert str(gs.BackwardSpec()) == "exact"
    assert gs.BackwardSpec.parse("exact") == gs.BackwardSpec()
    # W&B config: plain JSON of strings, and back.
    blob = json.dumps(spec.to_dict())
    assert gs.BackwardSpec.from_dict(json.loads(blob)) == spec
    assert gs.BackwardSpec.coerce(text) == spec
    assert gs.BackwardSpec(weight="sign:rescale").weight == gs.Sign(rescale=True)
    assert gs.BackwardSpec(weight=gs.RandomFeedback(2.0)).weight.scale == 2.0
    assert str(gs.BackwardSpec(weight="random:2")) == "weight=random:2"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"grad_input": "flp"}, "unknown backward mode 'flp' for grad_input; accepted: exact"),
        ({"grad_input": "flip:1.3"}, "got 1.3"),
        ({"grad_weight": "flip:-0.1"}, "got -0.1"),
        ({"grad_input": "flip:nan"}, "[0, 1]"),
        ({"grad_input": "flip"}, "needs a flip probability p"),
        ({"weight": "blend:x"}, "cannot read 'x'"),
        ({"input": "random"}, "does not apply to input; accepted: exact, flip:P"),
        ({"weight": "none"}, "does not apply to weight"),
        ({"grad_weight": "learned"}, "does not apply to grad_weight"),
        ({"grad_input": 3}, "must be a string or a BackwardMode"),
        ({"grad_input": "sign:foo"}, "'sign:rescale'"),
    ],
)
def test_bad_modes_name_value_and_accepted(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        gs.BackwardSpec(**kwargs)
    assert fragment in str(err.value)


def test_bad_spec_strings_and_targets():
    with pytest.raises(ValueError, match="unknown backward target"):
        gs.BackwardSpec.parse("grad_out=sign")
    with pytest.raises(ValueError, match="target=mode"):
        gs.BackwardSpec.parse("sign")
    with pytest.raises(ValueError, match="unknown backward target"):
        gs.BackwardSpec().replace(bias="sign")
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
        gs.Flip(torch.tensor([0.2, 1.5]))


def test_make_mode_from_cli_pairs():
    assert gs.make_mode("flip", 0.3) == gs.Flip(0.3)
    assert gs.make_mode("blend", 0.5, "weight") == gs.Blend(0.5)
    assert gs.make_mode("sign") == gs.Sign()
    with pytest.raises(ValueError, match="takes no parameter"):
        gs.make_mode("sign", 0.3)


def test_is_exact_flags():
    assert gs.BackwardSpec().is_exact
    assert gs.BackwardSpec(grad_input="flip:0", weight="blend:0").is_exact
    assert not gs.BackwardSpec(grad_input="flip:0.01").is_exact
    assert gs.BackwardSpec(grad_input="flip:0.2").is_random
    assert not gs.BackwardSpec(grad_input="sign").is_random


def test_mode_math():
    t = torch.tensor([[-2.0, 0.0, 1.0], [4.0, -0.5, 3.0]], dtype=torch.float64)
    assert torch.equal(gs.Sign().apply(t), torch.sign(t))
    m = t.abs().mean()
    assert torch.allclose(gs.Sign(rescale=True).apply(t), torch.sign(t) * m)
    assert torch.equal(gs.Blend(0.0).apply(t), t)
    assert torch.allclose(gs.Blend(1.0).apply(t), torch.sign(t) * m)
    assert torch.allclose(gs.Blend(0.25).apply(t), 0.75 * t + 0.25 * torch.sign(t) * m)
    assert torch.equal(gs.Flip(0.0).apply(t), t)
    assert torch.equal(gs.Flip(1.0).apply(t), -t)
    assert torch.equal(gs.NoGrad().apply(t), torch.zeros_like(t))


def test_ensemble_parameters_and_means_are_per_member():
    t = torch.tensor([[1.0, -3.0], [2.0, 2.0]])
    assert torch.equal(mean_abs(t, ensemble=True).flatten(), torch.tensor([2.0, 2.0]))
    out = gs.Blend(torch.tensor([0.0, 1.0])).apply(t, ensemble=True)
    assert torch.equal(out[0], t[0]) and torch.equal(out[1], torch.tensor([2.0, 2.0]))
    out = gs.Flip(torch.tensor([0.0, 1.0])).apply(t, ensemble=True)
    assert torch.equal(out, torch.stack([t[0], -t[1]]))
    with pytest.raises(ValueError, match="per-member parameter"):
        gs.Flip(torch.tensor([0.1, 0.2, 0.3])).apply(t, ensemble=True)


def test_flip_fraction_matches_p_within_binomial_error():
    n = 200_000
    gen = torch.Generator().manual_seed(0)
    for p in (0.05, 0.3, 0.5, 0.9):
        t = torch.ones(n, dtype=torch.float64)
        frac = (gs.Flip(p).apply(t, gen) < 0).double().mean().item()
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_uniform_like_per_member_generators_match_separate_draws():
    t = torch.empty(3, 4, 5)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    u = uniform_like(t, gens, ensemble=True)
    for e, s in enumerate((1, 2, 3)):
        assert torch.equal(u[e], torch.rand(4, 5, generator=torch.Generator().manual_seed(s)))
    with pytest.raises(ValueError, match="generators"):
        uniform_like(torch.empty(2, 4), gens, ensemble=True)


def test_learned_placeholder_requires_binding():
    spec = gs.BackwardSpec(grad_input="learned")
    with pytest.raises(RuntimeError, match="no surrogate"):
        spec.grad_input(torch.ones(1), torch.ones(1))
    bound = spec.bind(lambda g, x: 2 * g)
    assert torch.equal(bound.grad_input(torch.ones(2), torch.ones(2)), 2 * torch.ones(2))
    assert str(bound) == "grad_input=learned"


def test_mode_strings_keep_full_precision():
    p = 0.38217701239287255
    spec = gs.BackwardSpec(grad_input=f"flip:{p}")
    assert gs.BackwardSpec.parse(str(spec)).grad_input.p == p
    assert gs.Flip(0.1234567) != gs.Flip(0.1234571)
    assert str(gs.Flip(1.0)) == "flip:1" and str(gs.Blend(0.5)) == "blend:0.5"
    assert gs.Flip(torch.tensor(0.3, dtype=torch.float64)) == gs.Flip(0.3)  # 0-d: a number
