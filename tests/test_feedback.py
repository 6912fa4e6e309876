"""The feedback-alignment family (fa, usf, frsf, brsf) and direct feedback alignment (dfa)."""

import copy
import io
import json
import math
import pathlib

import pytest
import torch
from torch import nn

import gradsurrogate as gs
from gradsurrogate.backward import draw_init
from gradsurrogate.dfa import BUFFER, DFASpec, apply_model_spec, is_dfa

F64 = torch.float64
FIXTURE = json.loads((pathlib.Path(__file__).parent / "data" / "biotorch_feedback.json")
                     .read_text())
FAMILY = ("fa", "usf", "frsf", "brsf")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def kaiming_bound(fan_in):
    return 1 / math.sqrt(fan_in)


def xavier_bound(fan_in, fan_out):
    return math.sqrt(6 / (fan_in + fan_out))


# --- definitions, by hand -------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 5), (4, 2, 3, 3)])
@pytest.mark.parametrize("init", ["kaiming", "xavier"])
def test_each_mode_matrix_is_its_definition(shape, init):
    w = torch.randn(shape, generator=gen(0), dtype=F64)
    k = math.prod(shape[2:])
    fan_in, fan_out = shape[1] * k, shape[0] * k
    bound = kaiming_bound(fan_in) if init == "kaiming" else xavier_bound(fan_in, fan_out)
    std = 1 / math.sqrt(3 * fan_in) if init == "kaiming" else math.sqrt(2 / (fan_in + fan_out))
    # fa: R ~ U(-bound, bound), the uniform numbers of the generator
    r = gs.FA(init).init_state(w, gen(1))
    u = torch.rand(shape, generator=gen(1), dtype=F64)
    assert torch.allclose(r, (2 * u - 1) * bound, rtol=0, atol=1e-15)
    assert torch.equal(gs.FA(init).matrix(w, r), r)
    # usf: sign(W) * std of the init
    assert torch.equal(gs.USF(init).matrix(w, None), torch.sign(w) * std)
    assert gs.USF(init).init_state(w, gen(1)) is None
    # frsf: |R| sign(W) with R the fa draw, fixed (the state is |R|)
    fr = gs.FRSF(init)
    state = fr.init_state(w, gen(1))
    assert torch.equal(state, r.abs())
    assert torch.equal(fr.matrix(w, state), r.abs() * torch.sign(w))
    w2 = -w  # signs follow W as it trains; magnitudes stay
    assert torch.equal(fr.matrix(w2, state), r.abs() * torch.sign(w2))
    # brsf: |R_t| sign(W) with a fresh R_t per call from the generator
    br, g = gs.BRSF(init), gen(2)
    first, second = br.matrix(w, None, g), br.matrix(w, None, g)
    u2 = torch.rand((2, *shape), generator=gen(2), dtype=F64)
    for got, uu in ((first, u2[0]), (second, u2[1])):
        assert torch.allclose(got, ((2 * uu - 1) * bound).abs() * torch.sign(w), atol=1e-15)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("mode", FAMILY)
def test_surrogate_linear_grad_input_is_g_at_b_and_weight_grad_exact(mode):
    torch.manual_seed(0)
    plain = nn.Linear(6, 4).double()
    layer = gs.convert(copy.deepcopy(plain), f"weight={mode}", generator=3)
    x = torch.randn(5, 6, dtype=F64, requires_grad=True)
    x0 = x.detach().clone().requires_grad_()
    g = torch.randn(5, 4, dtype=F64)
    state = None if mode in ("usf", "brsf") else layer.feedback.clone()
    if mode == "brsf":
        replay = torch.Generator()
        replay.set_state(layer.generator.get_state())
    layer(x).backward(g)
    plain(x0).backward(g)
    b = gs.MODES[mode]().matrix(layer.weight, state, replay if mode == "brsf" else None)
    assert torch.allclose(x.grad, g @ b, rtol=0, atol=1e-14)
    assert torch.equal(layer.weight.grad, plain.weight.grad)  # exact
    assert torch.equal(layer.bias.grad, plain.bias.grad)
    assert not torch.allclose(x.grad, x0.grad)


def test_fixed_modes_keep_b_brsf_redraws_each_backward():
    torch.manual_seed(0)
    x, g = torch.randn(3, 5), torch.randn(3, 2)
    grads = {}
    for mode in FAMILY:
        layer = gs.SurrogateLinear(5, 2, spec=f"weight={mode}", generator=1)
        out = []
        for _ in range(2):
            xi = x.clone().requires_grad_()
            layer(xi).backward(g)
            out.append(xi.grad)
        grads[mode] = out
    for mode in ("fa", "usf", "frsf"):
        assert torch.equal(grads[mode][0], grads[mode][1])
    assert not torch.equal(grads["brsf"][0], grads["brsf"][1])


@pytest.mark.parametrize("mode", ["fa", "frsf", "brsf"])
def test_same_seed_same_b_other_seed_other_b(mode):
    w = torch.randn(4, 3)
    m = gs.MODES[mode]()
    draw = (lambda s: m.init_state(w, gen(s))) if m.stateful else \
        (lambda s: m.matrix(w, None, gen(s)))
    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


@pytest.mark.parametrize("mode", FAMILY)
def test_ensemble_members_match_separate_layers(mode):
    w = torch.randn(3, 4, 5, generator=gen(0))
    m = gs.MODES[mode]()
    gens = [gen(10 + e) for e in range(3)]
    state = m.init_state(w, gens, ensemble=True)
    b = m.matrix(w, state, [gen(20 + e) for e in range(3)], ensemble=True)
    for e in range(3):
        s_e = m.init_state(w[e], gen(10 + e))
        assert (state is None) == (s_e is None)
        if state is not None:
            assert torch.equal(state[e], s_e)
        assert torch.equal(b[e], m.matrix(w[e], s_e, gen(20 + e)))


@pytest.mark.parametrize("mode", FAMILY)
def test_family_under_bf16_autocast_follows_float32(mode):
    torch.manual_seed(0)
    layer = gs.SurrogateLinear(8, 4, spec=f"weight={mode}", generator=0)
    x, g = torch.randn(6, 8), torch.randn(6, 4)
    grads = []
    for autocast in (False, True):
        if mode == "brsf":
            layer.generator.manual_seed(1)
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            y = layer(xi)
        y.backward(g.to(y.dtype))
        grads.append(xi.grad)
    assert grads[1].dtype == torch.float32 and torch.isfinite(grads[1]).all()
    assert torch.allclose(grads[1], grads[0], rtol=0.05, atol=0.02)


def test_draws_in_float32_for_half_weights():
    w = torch.randn(4, 6)
    r32 = gs.FA().init_state(w, gen(0))
    r16 = gs.FA().init_state(w.bfloat16(), gen(0))
    assert r16.dtype == torch.bfloat16 and torch.equal(r16, r32.bfloat16())
    assert draw_init((2, 3), "kaiming", gen(0), dtype=F64).dtype == F64


# --- strings and errors ---------------------------------------------------------------------
@pytest.mark.parametrize(("text", "canonical"), [
    ("fa", "fa"), ("fa:kaiming", "fa"), (" FA:Xavier ", "fa:xavier"), ("usf", "usf"),
    ("usf:xavier", "usf:xavier"), ("frsf", "frsf"), ("brsf:xavier", "brsf:xavier"),
])
def test_family_strings_round_trip(text, canonical):
    spec = gs.BackwardSpec(weight=text)
    assert str(spec) == f"weight={canonical}"
    assert gs.BackwardSpec.parse(str(spec)) == spec
    assert gs.BackwardSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_accepted_modes_lists_the_family():
    text = gs.backward.accepted_modes("weight")
    for mode in FAMILY:
        assert f"{mode}[:kaiming|xavier]" in text
    assert "fa" not in gs.backward.accepted_modes("grad_input")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"weight": "fa:foo"}, "unknown init of mode 'fa' 'foo'; accepted: kaiming, xavier"),
    ({"weight": "usf:2"}, "unknown init of mode 'usf' '2'; accepted: kaiming, xavier"),
    ({"weight": "frsf:"}, "bad backward mode for weight 'frsf:'"),
    ({"grad_input": "brsf"}, "backward mode 'brsf' does not apply to grad_input; accepted: "
                             "exact, flip, sign, blend, none, learned"),
    ({"weight": "fsa"}, "unknown backward mode 'fsa'; accepted: exact, flip, sign, blend, none, "
                        "random, learned, fa, usf, frsf, brsf"),
])
def test_family_bad_arguments_name_value_and_accepted(kwargs, message):
    with pytest.raises(ValueError) as err:
        gs.BackwardSpec(**kwargs)
    assert message in str(err.value)


def test_stateful_modes_need_their_state():
    with pytest.raises(RuntimeError, match="needs the layer's fixed matrix R"):
        gs.FRSF().matrix(torch.ones(2, 2), None)


# --- biotorch parity (numbers recorded by tests/data/make_biotorch_fixture.py) --------------
def unhex(entry):
    return torch.tensor([float.fromhex(v) for v in entry["hex"]]).reshape(entry["shape"])


def burn(g, shape, times):
    for s in times:
        torch.empty(shape if s == "w" else shape[:1]).uniform_(generator=g)


@pytest.mark.parametrize("case", FIXTURE["layers"],
                         ids=[f"{c['kind']}-{c['mode']}-{c['init']}" for c in FIXTURE["layers"]])
def test_matches_biotorch_bitwise(case):
    w = unhex(case["weight"])
    mode = gs.BackwardSpec(weight=f"{case['mode']}:{case['init']}").weight
    g = gen(case["seed"])
    # biotorch's draws: torch's own init of W and b, then its init of W (and b for kaiming)
    burn(g, tuple(w.shape), ["w", "b", "w"])
    if case["mode"] == "brsf":
        burn(g, tuple(w.shape), ["w"])  # the matrix drawn at construction, then one per forward
    state = mode.init_state(w, g)
    b = mode.matrix(w, state, g)
    assert torch.equal(b, unhex(case["matrix"]))
    spec = gs.BackwardSpec(weight=mode)
    if case["kind"] == "linear":
        layer, x = gs.SurrogateLinear(5, 3, spec=spec, generator=0), torch.linspace(-1, 1, 20)
    else:
        layer, x = gs.SurrogateConv2d(2, 3, 2, spec=spec, generator=0), torch.linspace(-1, 1, 64)
    with torch.no_grad():
        layer.weight.copy_(w)
    layer.feedback = state
    if case["mode"] == "brsf":
        layer.generator = gen(case["seed"])
        burn(layer.generator, tuple(w.shape), ["w", "b", "w", "w"])
    x = x.reshape(unhex(case["grad_input"]).shape).requires_grad_()
    y = layer(x)
    y.backward(torch.cos(torch.arange(y.numel(), dtype=torch.float32)).reshape(y.shape))
    assert torch.equal(x.grad, unhex(case["grad_input"]))
    assert torch.equal(layer.weight.grad, unhex(case["grad_weight"]))


# --- direct feedback alignment --------------------------------------------------------------
def mlp(seed, dtype=F64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 6), nn.Tanh(),
                         nn.Linear(6, 3)).to(dtype)


def ce_error(out, y):
    e = torch.softmax(out, 1)
    e[torch.arange(len(y)), y] -= 1
    return e / len(y)


def test_dfa_equals_hand_computation_on_mlp():
    model = mlp(0)
    plain = copy.deepcopy(model)
    handle = gs.dfa(model, "dfa", generator=0)
    x = torch.randn(7, 4, generator=gen(1), dtype=F64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    out = model(x)
    assert torch.equal(out, plain(x))  # forward unchanged
    nn.functional.cross_entropy(out, y).backward()
    w1, w2, w3 = (plain[i].weight for i in (0, 2, 4))
    b1, b2, b3 = (plain[i].bias for i in (0, 2, 4))
    with torch.no_grad():
        h1 = torch.tanh(x @ w1.T + b1)
        h2 = torch.tanh(h1 @ w2.T + b2)
        e = ce_error(h2 @ w3.T + b3, y)
        big2, big3 = handle.feedback("2"), handle.feedback("4")
        assert big2.shape == (3, 5) and big3.shape == (3, 6)
        assert handle.feedback("0") is None  # the input needs no gradient: no B drawn
        d2 = (e @ big3) * (1 - h2**2)
        d1 = (e @ big2) * (1 - h1**2)
        want = {0: (d1.T @ x, d1.sum(0)), 2: (d2.T @ h1, d2.sum(0)), 4: (e.T @ h2, e.sum(0))}
    for i, (gw, gb) in want.items():
        assert torch.allclose(model[i].weight.grad, gw, rtol=1e-12, atol=1e-14)
        assert torch.allclose(model[i].bias.grad, gb, rtol=1e-12, atol=1e-14)
    # B: kaiming uniform on (k, d): |B| < 1/sqrt(d), a spread of that size
    assert big3.abs().max() <= 1 / math.sqrt(6) and big3.abs().max() > 0.5 / math.sqrt(6)


def test_dfa_matches_biotorch_gradients_bitwise():
    for case in FIXTURE["dfa"]:
        model = mlp(0, torch.float32)
        handle = gs.dfa(model, f"dfa:{case['init']}", generator=0)
        linears = [model[i] for i in (0, 2, 4)]
        with torch.no_grad():
            for layer, rec in zip(linears, case["layers"]):
                layer.weight.copy_(unhex(rec["weight"]))
                layer.bias.copy_(unhex(rec["bias"]))
        for name, rec in zip(("2", "4"), case["layers"][1:]):
            handle.layers[name].register_buffer(BUFFER, unhex(rec["feedback"]))
        out = model(unhex(case["x"]))
        nn.functional.cross_entropy(out, torch.tensor(case["targets"])).backward()
        for layer, rec in zip(linears, case["layers"]):
            assert torch.equal(layer.weight.grad, unhex(rec["grad_weight"]))
            assert torch.equal(layer.bias.grad, unhex(rec["grad_bias"]))


def conv_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 4)).double()


def test_dfa_conv_layers_receive_e_through_flattened_b():
    model = conv_net(0)
    plain = copy.deepcopy(model)
    handle = gs.dfa(model, "dfa:0.5", generator=1)
    x = torch.randn(3, 2, 5, 5, generator=gen(2), dtype=F64)
    y = torch.tensor([0, 3, 1])
    out = model(x)
    assert torch.equal(out, plain(x))
    nn.functional.cross_entropy(out, y).backward()
    c1, c2, lin = plain[0], plain[2], plain[5]
    with torch.no_grad():
        a1 = c1(x)
        h1 = a1.relu()
        a2 = c2(h1)
        e = ce_error(lin(a2.relu().flatten(1)), y)
        b_c2, b_lin = handle.feedback("2"), handle.feedback("5")
        assert b_c2.shape == (4, 3, 5, 5) and b_lin.shape == (4, 32)
        assert b_lin.abs().max() <= 0.5 / math.sqrt(32)
        d2 = (e @ b_lin).reshape(a2.shape) * (a2 > 0)  # grad w.r.t. conv2's output
        d1 = (e @ b_c2.reshape(4, -1)).reshape(a1.shape) * (a1 > 0)
        gw2 = torch.nn.grad.conv2d_weight(h1, c2.weight.shape, d2)
        gw1 = torch.nn.grad.conv2d_weight(x, c1.weight.shape, d1, padding=1)
    assert torch.allclose(model[2].weight.grad, gw2, rtol=1e-12, atol=1e-13)
    assert torch.allclose(model[0].weight.grad, gw1, rtol=1e-12, atol=1e-13)
    assert torch.allclose(model[5].weight.grad, e.T @ a2.relu().flatten(1), atol=1e-14)


def test_dfa_state_dict_round_trip_same_seed_same_b_and_remove():
    def step(model):
        x = torch.randn(4, 4, generator=gen(3), dtype=F64)
        model.zero_grad()
        nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 1])).backward()
        return [p.grad.clone() for p in model.parameters()]

    a, b = mlp(0), mlp(0)
    ha, hb = gs.dfa(a, generator=7), gs.dfa(b, generator=7)
    assert [torch.equal(x, y) for x, y in zip(step(a), step(b))] == [True] * 6
    assert f"4.{BUFFER}" in a.state_dict() and f"0.{BUFFER}" not in a.state_dict()
    c = mlp(1)
    hc = gs.dfa(c, generator=8)
    c.load_state_dict(a.state_dict())  # B materialised from the checkpoint
    assert torch.equal(hc.feedback("4"), ha.feedback("4"))
    assert all(torch.equal(x, y) for x, y in zip(step(c), step(a)))
    other = mlp(0)
    gs.dfa(other, generator=9)
    step(other)
    assert not torch.equal(other[4].dfa_feedback, a[4].dfa_feedback)
    plain = mlp(0)
    hb.remove()
    assert all(torch.equal(x, y) for x, y in zip(step(b), step(plain)))
    assert BUFFER not in dict(b[4].named_buffers())


def test_dfa_model_deepcopies_and_pickles_with_its_own_b():
    model = mlp(0)
    gs.dfa(model, generator=0)
    x, y = torch.randn(6, 4, generator=gen(4), dtype=F64), torch.tensor([0, 1, 2, 0, 1, 2])

    def step(m):
        m.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        return [p.grad.clone() for p in m.parameters()]

    first = step(model)
    twin = copy.deepcopy(model)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for other in (twin, loaded):
        assert all(torch.equal(a, b) for a, b in zip(step(other), first))
        assert other[4].dfa_feedback.data_ptr() != model[4].dfa_feedback.data_ptr()


def test_dfa_spec_strings_and_errors():
    for text, canon in [("dfa", "dfa"), (" DFA:Xavier ", "dfa:xavier"), ("dfa:0.5", "dfa:0.5"),
                        ("dfa:xavier:2", "dfa:xavier:2"), ("dfa:kaiming:1", "dfa")]:
        assert str(DFASpec.parse(text)) == canon
        assert DFASpec.parse(canon) == DFASpec.parse(text)
    assert is_dfa("dfa:2") and is_dfa(DFASpec()) and not is_dfa("weight=fa")
    for text, message in [
        ("dfa:foo", "unknown init of spec 'dfa' 'foo'; accepted: kaiming, xavier"),
        ("dfa:0", "spec 'dfa': scale must be a finite number in (0, 3.4e+38]; got '0'"),
        ("dfa:inf", "scale must be a finite number"),
        ("dfa:1:2", "gives scale twice; accepted: dfa[:kaiming|xavier][:SCALE]"),
        ("flip", "not a DFA spec: 'flip'; accepted: dfa[:kaiming|xavier][:SCALE]"),
    ]:
        with pytest.raises(ValueError) as err:
            DFASpec.parse(text)
        assert message in str(err.value)
    with pytest.raises(ValueError, match=r"no nn\.Linear / nn\.Conv layer"):
        gs.dfa(nn.Sequential(nn.Tanh()))


def test_dfa_keeps_other_targets_of_a_surrogate_layer():
    model = gs.convert(mlp(0), "grad_weight=none")
    handle = gs.dfa(model, generator=0)
    assert str(model[2].spec) == "grad_input=learned,grad_weight=none"
    out = model(torch.randn(2, 4, dtype=F64))
    nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    assert model[2].weight.grad is None and handle.feedback("4") is not None
    handle.remove()
    assert str(model[2].spec) == "grad_weight=none"


def test_apply_model_spec_dispatches():
    model, handle = apply_model_spec(mlp(0), "dfa", generator=0)
    assert handle is not None and list(handle.layers) == ["0", "2", "4"]
    model, handle = apply_model_spec(mlp(0), "weight=usf")
    assert handle is None and str(model[0].spec) == "weight=usf"


def test_dfa_without_model_output_error_fails_loudly():
    model = mlp(0)
    gs.dfa(model, generator=0)
    h = torch.randn(2, 5, dtype=F64, requires_grad=True)
    with pytest.raises(RuntimeError, match="no output error captured"):
        model[2](h).sum().backward()
