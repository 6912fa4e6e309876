"""BackwardSpec parsing/serialisation and the elementwise math of each mode."""

import json
import math

import pytest
import torch

import gradsurrogate as gs
from gradsurrogate.backward import mean_abs, uniform_like

F64 = torch.float64


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
    ("kwargs", "message"),
    [
        ({"grad_input": "flp"},
         "unknown backward mode 'flp'; accepted: exact, flip, sign, blend, none, random, learned, "
         "fa, usf, frsf, brsf"),
        ({"grad_input": "flip:1.3"},
         "mode 'flip': flip probability p must be a finite number in [0, 1]; got '1.3'"),
        ({"grad_weight": "flip:-0.1"}, "in [0, 1]; got '-0.1'"),
        ({"grad_input": "flip:nan"}, "in [0, 1]; got 'nan'"),
        ({"grad_input": "flip:1.5"}, "in [0, 1]; got '1.5'"),
        ({"grad_input": "flip:inf"}, "in [0, 1]; got 'inf'"),
        ({"grad_input": "flip"}, "mode 'flip' needs a flip probability p, e.g. 'flip:0.3'"),
        ({"weight": "blend:x"}, "blend amount a must be a finite number in [0, 1]; got 'x'"),
        ({"weight": "blend:inf"}, "blend amount a must be a finite number in [0, 1]; got 'inf'"),
        ({"weight": "random:inf"},
         "mode 'random': scale must be a finite number in (0, 3.4e+38]; got 'inf'"),
        ({"weight": "random:nan"}, "scale must be a finite number in (0, 3.4e+38]; got 'nan'"),
        ({"weight": "random:1e300"}, "got '1e300'"),
        ({"weight": "random:0"}, "got '0'"),
        ({"weight": "random:-1"}, "got '-1'"),
        ({"input": "random:2"},
         "backward mode 'random:2' does not apply to input; accepted: exact, flip, sign, blend"),
        ({"weight": "none"},
         "backward mode 'none' does not apply to weight; accepted: exact, flip, sign, blend, "
         "random, learned, fa, usf, frsf, brsf"),
        ({"grad_weight": "learned"},
         "backward mode 'learned' does not apply to grad_weight; accepted: exact, flip, sign, "
         "blend, none"),
        ({"grad_input": 3}, "a backward mode must be a string or a BackwardMode; got 3"),
        ({"grad_input": "sign:foo"},
         "unknown option of mode 'sign' 'foo'; accepted: plain, rescale"),
        ({"grad_input": "sign:"}, "bad backward mode for grad_input 'sign:'"),
        ({"grad_input": " "}, "backward mode for grad_input must be a non-empty string"),
        ({"grad_input": "exact:1"}, "mode 'exact' takes no argument; got exact:1"),
    ],
)
def test_bad_modes_name_value_and_accepted(kwargs, message):
    with pytest.raises(ValueError) as err:
        gs.BackwardSpec(**kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: gs.Flip(float("nan")), "flip probability p must be a finite number in [0, 1]; "
                                        "got nan"),
        (lambda: gs.Flip(True), "got True"),
        (lambda: gs.Blend(2), "blend amount a must be a finite number in [0, 1]; got 2"),
        (lambda: gs.RandomFeedback(float("inf")), "scale must be a finite number in (0, "),
        (lambda: gs.Flip(torch.tensor([0.2, 1.5], dtype=F64)), "got 1.5 in [0.2, 1.5]"),
        (lambda: gs.Flip(torch.tensor([0.2, float("nan")], dtype=F64)), "got nan in [0.2, nan]"),
        (lambda: gs.make_mode("flip", float("nan")), "got nan"),
        (lambda: gs.make_mode("blend", 1.5, "weight"), "blend amount a must be a finite number "
                                                       "in [0, 1]; got 1.5"),
        (lambda: gs.make_mode("random", 2.0, "weight"), "takes no parameter; got p=2.0"),
        (lambda: gs.make_mode("sign", 0.3), "takes no parameter; got p=0.3"),
    ],
)
def test_bad_mode_objects_name_value_and_range(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)


def test_bad_spec_strings_and_targets():
    with pytest.raises(ValueError) as err:
        gs.BackwardSpec.parse("grad_out=sign")
    assert str(err.value) == ("unknown backward target 'grad_out'; accepted: grad_input, "
                              "grad_weight, weight, input")
    with pytest.raises(ValueError, match="target=mode"):
        gs.BackwardSpec.parse("sign")
    with pytest.raises(ValueError, match="unknown backward target 'bias'; accepted: grad_input"):
        gs.BackwardSpec().replace(bias="sign")
    with pytest.raises(ValueError, match="unknown backward target 'bias'; accepted: grad_input"):
        gs.BackwardSpec.from_dict({"bias": "sign"})
    with pytest.raises(ValueError, match="a backward spec string is expected; got 3"):
        gs.BackwardSpec.parse(3)


@pytest.mark.parametrize("text", [
    "grad_input=sign,grad_input=flip:0.3",
    "grad_input=sign,weight=sign, GRAD_INPUT =flip:0.3",
])
def test_spec_naming_a_target_twice_is_rejected(text):
    with pytest.raises(ValueError) as err:
        gs.BackwardSpec.parse(text)
    assert "names target 'grad_input' twice ('sign' and 'flip:0.3')" in str(err.value)


def test_spec_parse_normalises_case_and_spaces():
    spec = gs.BackwardSpec.parse(" Grad_Input = FLIP:0.25 , weight=Sign:Rescale ")
    assert spec == gs.BackwardSpec(grad_input=gs.Flip(0.25), weight=gs.Sign(rescale=True))
    assert gs.BackwardSpec.parse(" EXACT ") == gs.BackwardSpec()


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
