"""Issue 13's coverage table as tests, on the models built in the repo (gradsurrogate.zoo).

Rows: a ResNet-like block stack (BatchNorm, strided 1x1 shortcuts), a depthwise-separable CNN,
a Transformer encoder (causal, key padding mask, dropout), an encoder + decoder layer (causal
self-attention, cross-attention, dropout), Conv1d and Conv3d nets, and a net with every padding
mode and string padding. Columns: converted or skipped with the reason; the exact spec equal
(``torch.equal``) to the unconverted model; a perturbed spec changes exactly the documented
quantity (by hand); bf16 autocast for every mode; ``state_dict`` round trip; compile.

Covered elsewhere (not repeated here): DFA against a hand computation on a 3-layer MLP
(tests/test_feedback.py::test_dfa_equals_hand_computation_on_mlp, and biotorch's numbers in
test_dfa_matches_biotorch_gradients_bitwise); compile fullgraph of every deterministic mode on
linear layers (tests/test_layers_state.py::test_compile_fullgraph_for_every_deterministic_mode);
every conv option bitwise
(tests/test_layers_arch.py::test_every_conv_converts_and_exact_is_bitwise).
"""

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad

import gradsurrogate as gs
from gradsurrogate import zoo
from gradsurrogate.attention import SurrogateMultiheadAttention
from gradsurrogate.backward import MODES, BackwardSpec, Learned
from gradsurrogate.layers import SurrogateMixin

pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel",
                                        "ignore:convert left")


def _padding_net() -> nn.Sequential:
    """Every padding mode and string padding of nn.Conv2d (plus grouped), then a linear head."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="replicate"), nn.Tanh(),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, padding_mode="circular"), nn.ReLU(),
        nn.Conv2d(4, 4, (2, 3), padding="same", padding_mode="reflect"), nn.Tanh(),
        nn.Conv2d(4, 4, 3, padding="valid", groups=2), nn.Flatten(), nn.Linear(64, 3))


def _tokens(n, t, seed):
    return torch.randint(0, 11, (n, t), generator=torch.Generator().manual_seed(seed))


def _padding_mask(n, t):
    mask = torch.zeros(n, t, dtype=torch.bool)
    mask[0, -2:] = True
    return mask


def _image(*shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


# name -> (builder, inputs); every model's top layer (its last nn.Linear) is its output layer
MODELS = {
    "resnet": (lambda: zoo.resnet18_like(3, width=4, blocks=(1, 1), stem="cifar"),
               lambda: (_image(2, 3, 8, 8),)),
    "depthwise": (lambda: zoo.depthwise_separable_cnn(3, widths=(4, 8)),
                  lambda: (_image(2, 3, 8, 8),)),
    "encoder": (lambda: zoo.transformer_encoder(11, 8, 2, 1, 16, 3, 8, 0.1, causal=True),
                lambda: (_tokens(3, 6, 2), _padding_mask(3, 6))),
    "decoder": (lambda: zoo.transformer_decoder_layer_model(11, 8, 2, 16, 8, 0.1),
                lambda: (_tokens(2, 5, 3), _tokens(2, 4, 4), _padding_mask(2, 5))),
    "conv1d": (lambda: zoo.cnn1d(3, channels=(4, 4)), lambda: (_image(2, 1, 16),)),
    "conv3d": (lambda: zoo.resnet18_like(3, width=2, blocks=(1,), dims=3, stem="cifar"),
               lambda: (_image(2, 3, 4, 4, 4),)),
    "padding": (_padding_net, lambda: (_image(2, 3, 6, 6),)),
}
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)


def _build(name, seed=0):
    torch.manual_seed(seed)
    return MODELS[name][0]()


def _top(model):
    """(name, module) of the last nn.Linear: the output layer of every model above."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def _run(model, name, seed=7):
    """Forward (dropout masks from ``seed``), backward of ``sum(out * R)`` (``R`` fixed, so the
    output error is ``R``). Returns (out, R, {param name: grad}, float input grads, top layer's
    input)."""
    inputs = [t.clone().requires_grad_() if t.is_floating_point() else t
              for t in MODELS[name][1]()]
    seen = {}

    def keep_input(module, args):
        seen["h"] = args[0]
        args[0].retain_grad()

    handle = _top(model)[1].register_forward_pre_hook(keep_input)
    torch.manual_seed(seed)
    out = model(*inputs)
    handle.remove()
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    (out * r).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return out, r, grads, [t.grad for t in inputs if t.is_floating_point()], seen["h"]


def _pair(name, spec, generator=0):
    ref = _build(name)
    return ref, gs.convert_with_report(copy.deepcopy(ref), spec, generator=generator)


def _converted_params(model):
    """Names of the parameters that belong to converted layers (their own weight and bias)."""
    names = set()
    for prefix, m in model.named_modules():
        if isinstance(m, (SurrogateMixin, SurrogateMultiheadAttention)):
            names |= {f"{prefix}.{n}" for n, _ in m.named_parameters()}
    return names


# --- converted or skipped with the reason -----------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_converted_or_skipped_with_reason(name):
    """Every Linear / Conv1d-3d / MultiheadAttention is converted (an attention as one layer: its
    out_proj is not a separate entry); every other module with own parameters is reported with
    the reason; no stock weight layer is left behind."""
    ref, (model, report) = _pair(name, "grad_input=sign")
    want, skipped = [], {}
    for n, m in ref.named_modules():
        inside = [w for w in want if n.startswith(w + ".")]
        if not n or inside:
            continue
        if isinstance(m, LAYERS):
            want.append(n)
        elif any(True for _ in m.parameters(recurse=False)):
            skipped[n] = f"{type(m).__name__} has no surrogate"
    assert report.converted == want and report.skipped == skipped and not report.shared
    for n, m in model.named_modules():
        if isinstance(m, LAYERS):
            assert isinstance(m, (SurrogateMixin, SurrogateMultiheadAttention)), n
    if skipped:
        counts = {}
        for reason in skipped.values():
            kind = reason.split()[0]
            counts[kind] = counts.get(kind, 0) + 1
        assert report.summary() == "left " + ", ".join(
            f"{k} {t}" for t, k in counts.items()) + " unchanged (they have no surrogate)"


class _MaskedLinear(nn.Linear):
    """A subclass that keeps nn.Linear's forward but adds its own state."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", torch.ones(self.out_features))
        self.scale = nn.Parameter(torch.ones(1))


def test_subclass_with_its_own_state_is_skipped_not_stripped():
    """A surrogate keeps weight and bias only: converting this subclass dropped ``mask`` and
    ``scale`` from the model (state_dict keys and an optimizer's parameter gone silently); it
    is reported with the reason and left as it is."""
    model = nn.Sequential(_MaskedLinear(3, 2), nn.Linear(2, 2))
    keys = list(model.state_dict())
    model, report = gs.convert_with_report(model, "weight=fa", generator=0)
    assert report.converted == ["1"] and isinstance(model[0], _MaskedLinear)
    assert report.skipped["0"].startswith("_MaskedLinear subclasses nn.Linear and adds mask, "
                                          "scale, which a surrogate would drop")
    assert [k for k in model.state_dict() if not k.endswith("feedback")] == keys


# --- exact spec: bitwise the unconverted model --------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_exact_spec_equals_unconverted_bitwise(name):
    """Outputs, every parameter gradient and input gradient ``torch.equal`` (train mode: same
    dropout masks, BatchNorm batch statistics); same state_dict keys and values."""
    ref, (model, _) = _pair(name, "exact")
    assert list(model.state_dict()) == list(ref.state_dict())
    out0, _, g0, x0, _ = _run(ref, name)
    out1, _, g1, x1, _ = _run(model, name)
    assert torch.equal(out0, out1)
    assert g0.keys() == g1.keys() and all(torch.equal(g0[k], g1[k]) for k in g0)
    assert all(torch.equal(a, b) for a, b in zip(x0, x1))
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(),
                                                 model.state_dict().values()))


@pytest.mark.parametrize("name", list(MODELS))
def test_grad_weight_sign_signs_exactly_the_converted_layers_parameter_gradients(name):
    """``grad_weight=sign`` leaves every grad_input exact, so each layer receives the true
    grad_output: the weight and bias gradients of converted layers are exactly the sign of the
    unconverted model's; every other gradient (embeddings, norms, inputs) is unchanged."""
    ref, (model, _) = _pair(name, "grad_weight=sign")
    out0, _, g0, x0, _ = _run(ref, name)
    out1, _, g1, x1, _ = _run(model, name)
    assert torch.equal(out0, out1)
    signed = _converted_params(model)
    assert signed and signed <= set(g0)
    for k in g0:
        want = torch.sign(g0[k]) if k in signed else g0[k]
        assert torch.equal(g1[k], want), k
    assert all(torch.equal(a, b) for a, b in zip(x0, x1))


def _hand_b(spec, top, state):
    """``B`` of ``grad_input = g @ B`` for the top layer, from the definitions."""
    w = top.weight.detach()
    fan_in = w.shape[1]
    if spec == "weight=sign":
        return torch.sign(w)
    if spec in ("weight=random", "weight=fa"):
        assert top.feedback.abs().max() <= 1 / math.sqrt(fan_in)  # U(±1/√fan_in)
        return top.feedback
    if spec == "weight=usf":
        return torch.sign(w) * (1 / math.sqrt(3 * fan_in))
    if spec == "weight=frsf":
        assert bool((top.feedback >= 0).all())  # the layer keeps |R|
        return top.feedback * torch.sign(w)
    if spec == "weight=brsf":  # a fresh R from the generator state of this backward
        gen = torch.Generator().set_state(state)
        r = nn.init.kaiming_uniform_(torch.empty(w.shape), a=math.sqrt(5), generator=gen)
        return r.abs() * torch.sign(w)
    raise AssertionError(spec)


@pytest.mark.parametrize("spec", ["weight=sign", "weight=random", "weight=fa", "weight=usf",
                                  "weight=frsf", "weight=brsf"])
@pytest.mark.parametrize("name", ["resnet", "decoder"])  # (n, d) and (n, t, d) inputs
def test_top_layer_grad_input_is_g_at_b_by_hand(name, spec):
    """The output layer receives the true error ``R``; its grad_input is ``R @ B`` with ``B`` by
    hand from the mode's definition, its weight gradient stays exact, and the feedback reaches
    the layers below (their gradients differ from backprop's)."""
    ref, (model, _) = _pair(name, spec)
    top_name, top = _top(model)
    state = top.generator.get_state()  # the top layer's backward draws first
    _, _, g0, _, _ = _run(ref, name)
    _, r, g1, _, h = _run(model, name)
    assert torch.equal(h.grad, r @ _hand_b(spec, top, state).to(r.dtype))
    for k in (f"{top_name}.weight", f"{top_name}.bias"):
        assert torch.equal(g1[k], g0[k])
    assert any(not torch.equal(g0[k], g1[k]) for k in g0 if not k.startswith(top_name))


@pytest.mark.parametrize("spec", ["grad_input=sign", "grad_input=flip:1", "input=sign",
                                  "grad_input=none"])
def test_top_layer_other_targets_by_hand(spec):
    """grad_input=sign / flip:1 / none: sign, minus, none of the true grad_input; input=sign:
    the weight gradient is ``Rᵀ sign(h)`` (the bias gradient stays ``Σ R``)."""
    name = "decoder"
    ref, (model, _) = _pair(name, spec)
    top_name = _top(model)[0]
    _, _, g0, _, h0 = _run(ref, name)
    _, r, g1, _, h = _run(model, name)
    if spec == "input=sign":
        r2, h2 = r.reshape(-1, r.shape[-1]), h.detach().reshape(-1, h.shape[-1])
        assert torch.equal(g1[f"{top_name}.weight"], r2.T @ torch.sign(h2))
        assert torch.equal(g1[f"{top_name}.bias"], g0[f"{top_name}.bias"])
        return
    if spec == "grad_input=none":  # nothing flows below the top layer: no gradient at all
        # (not zeros: the layers below ran a full backward of zeros, and AdamW's decay and
        # momentum moved "cut" weights)
        assert h.grad is None and all(g is None for k, g in g1.items()
                                      if not k.startswith(top_name))
    else:
        f = {"grad_input=sign": torch.sign, "grad_input=flip:1": torch.neg}[spec]
        assert torch.equal(h.grad, f(h0.grad))
    assert torch.equal(g1[f"{top_name}.weight"], g0[f"{top_name}.weight"])


# --- mixed precision: every mode, every target -----------------------------------------------
def _every_mode_spec():
    """One spec per (mode, target) pair of MODES (a new mode is picked up automatically)."""
    args = {"flip": "flip:0.3", "blend": "blend:0.5"}
    learned = {"grad_input": Learned(lambda g, x: 0.5 * x * g.mean()),
               "weight": Learned(lambda w: torch.sign(w.detach()))}
    specs = []
    for mode, cls in MODES.items():
        for target in sorted(cls.targets) if mode != "exact" else ["grad_input"]:
            if mode == "learned":
                specs.append(BackwardSpec(**{target: learned[target]}))
            else:
                specs.append(f"{target}={args.get(mode, mode)}")
                if mode == "sign":
                    specs.append(f"{target}=sign:rescale")
    return specs


def _outputs(models, inputs, autocast: torch.dtype | None = None) -> list[torch.Tensor]:
    """Each model's output on ``inputs`` from the same RNG state (dropout draws alike), under
    CPU autocast to ``autocast`` when given."""
    outs = []
    for m in models:
        torch.manual_seed(7)
        with torch.autocast("cpu", autocast or torch.bfloat16, enabled=autocast is not None):
            outs.append(m(*inputs))
    return outs


@pytest.mark.parametrize("spec", _every_mode_spec(), ids=str)
@pytest.mark.parametrize("name", ["decoder", "padding"])
def test_autocast_bf16_every_mode(name, spec):
    """Under CPU bf16 autocast the forward equals the unconverted model's under autocast
    bitwise; backward runs, parameter gradients are finite float32."""
    ref, (model, _) = _pair(name, spec)
    inputs = MODELS[name][1]()
    outs = _outputs((ref, model), inputs, torch.bfloat16)
    assert outs[1].dtype == torch.bfloat16 and torch.equal(outs[0], outs[1])
    outs[1].float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads or str(spec) == "grad_weight=none"  # none: every layer frozen
    assert all(g.dtype == torch.float32 and bool(g.isfinite().all()) for g in grads)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("spec", ["weight=fa,grad_input=flip:0.3", "weight=brsf,input=sign",
                                  "weight=frsf,grad_weight=blend:0.5", "weight=usf"])
def test_half_precision_parameters_and_fp16_autocast(spec, dtype):
    """The decoder model in float16 / bfloat16 (no autocast): forward equal to the torch model
    in that dtype, finite gradients in that dtype, feedback kept in that dtype; and float32
    parameters under float16 autocast: forward equal to torch's, finite float32 gradients."""
    name = "decoder"
    ref, (model, _) = _pair(name, spec)
    ref, model = ref.to(dtype), model.to(dtype)
    assert all(b.dtype == dtype for b in model.buffers())
    inputs = MODELS[name][1]()
    outs = _outputs((ref, model), inputs)
    assert outs[1].dtype == dtype and torch.equal(outs[0], outs[1])
    outs[1].float().square().mean().backward()
    assert all(p.grad.dtype == dtype and bool(p.grad.isfinite().all())
               for p in model.parameters() if p.grad is not None)
    if dtype == torch.float16:
        ref, (model, _) = _pair(name, spec)
        outs = _outputs((ref, model), inputs, torch.float16)
        assert outs[1].dtype == torch.float16 and torch.equal(outs[0], outs[1])
        outs[1].float().square().mean().backward()
        assert all(p.grad.dtype == torch.float32 and bool(p.grad.isfinite().all())
                   for p in model.parameters() if p.grad is not None)


def test_dfa_autocast_bf16_and_attention_reported():
    """DFA on the encoder-decoder model: the linear layers take the output error, the attention
    modules are reported as left exact; forward equals the model's under bf16 autocast, the
    backward gives finite float32 gradients."""
    ref = _build("decoder")
    model = copy.deepcopy(ref)
    handle = gs.dfa(model, generator=0)
    assert list(handle.layers) == ["encoder.linear1", "encoder.linear2", "decoder.linear1",
                                   "decoder.linear2", "head"]
    for attn in ("encoder.self_attn", "decoder.self_attn", "decoder.multihead_attn"):
        assert "leaves its backward as it is" in handle.report.skipped[attn]
    inputs = MODELS["decoder"][1]()
    outs = _outputs((ref, model), inputs, torch.bfloat16)
    assert torch.equal(outs[0], outs[1])
    outs[1].float().square().mean().backward()
    assert handle.feedback("decoder.linear1").shape == (4 * 11, 4, 8)  # (k, t, d)
    assert all(p.grad.dtype == torch.float32 and bool(p.grad.isfinite().all())
               for p in model.parameters() if p.grad is not None)


# --- state ------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["weight=fa", "weight=frsf,grad_weight=flip:0.3"])
@pytest.mark.parametrize("name", ["resnet", "encoder"])
def test_state_dict_round_trip_gives_bitwise_next_gradients(name, spec):
    """Train 2 steps (SGD with momentum), save model + optimizer, take 2 more steps; a model
    built with other weights, feedback and noise stream that loads the checkpoint takes the
    same 2 steps with bitwise equal gradients (feedback matrices, generator state, BatchNorm
    statistics all restored)."""

    def step(model, opt, k):
        opt.zero_grad()
        grads = _run(model, name, seed=100 + k)[2]
        opt.step()
        return [g.clone() for g in grads.values()]

    model = gs.convert(_build(name), spec, generator=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for k in range(2):
        step(model, opt, k)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict()))
    assert any(k.endswith(".feedback") for k in saved[0])
    want = [step(model, opt, k) for k in (2, 3)]
    other = gs.convert(_build(name, seed=9), spec, generator=123)
    opt2 = torch.optim.SGD(other.parameters(), lr=0.05, momentum=0.9)
    other.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    got = [step(other, opt2, k) for k in (2, 3)]
    assert all(torch.equal(a, b) for w, g in zip(want, got) for a, b in zip(w, g))


def test_deepcopy_and_functional_call_grad_on_the_transformer():
    """A converted encoder (attention included) with ``weight=fa``: ``torch.func.grad`` of a
    ``functional_call`` equals autograd's gradients bitwise and uses the feedback buffers it is
    given; a deepcopy keeps the feedback and gives the same gradients."""
    name = "encoder"
    model = gs.convert(_build(name), "weight=fa,grad_weight=sign:rescale", generator=0)
    model.eval()  # no dropout: functional and module calls see the same masks
    tokens, mask = MODELS[name][1]()
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    assert "encoder.layers.0.self_attn.in_proj.feedback" in buffers

    def loss(p, b):
        return functional_call(model, (p, b), (tokens, mask)).square().sum()

    g = grad(loss)(params, buffers)
    model(tokens, mask).square().sum().backward()
    assert all(torch.equal(g[k], p.grad) for k, p in params.items())
    doubled = grad(loss)(params, {k: 2 * v for k, v in buffers.items()})
    assert not torch.equal(doubled["encoder.layers.0.self_attn.in_proj_weight"],
                           g["encoder.layers.0.self_attn.in_proj_weight"])
    twin = copy.deepcopy(model)
    twin.zero_grad()
    twin(tokens, mask).square().sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), twin.buffers()))
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(model.parameters(),
                                                           twin.parameters()))


def test_include_matching_only_an_attention_part_is_reported():
    """``include="*.out_proj"`` cannot convert the out_proj alone (the attention converts as
    one layer): the attention is reported with the reason instead of nothing happening."""
    _, report = gs.convert_with_report(_build("encoder"), "grad_input=sign",
                                       include="*.out_proj")
    assert report.converted == []
    reason = report.skipped["encoder.layers.0.self_attn"]
    assert "encoder.layers.0.self_attn.out_proj" in reason and "include" in reason
    with pytest.warns(UserWarning, match="MultiheadAttention converts as one layer"):
        gs.convert(_build("encoder"), "grad_input=sign", include="*.out_proj")


# --- torch.compile ----------------------------------------------------------------------------
def test_compile_fullgraph_through_the_surrogate_attention():
    """``fullgraph=True`` (backend "eager") through the Transformer encoder (surrogate attention
    with causal and key padding masks) for a deterministic spec of the FA family; gradients
    equal eager mode's bitwise. (Every deterministic mode on linear layers:
    tests/test_layers_state.py::test_compile_fullgraph_for_every_deterministic_mode.)"""
    name = "encoder"
    model = gs.convert(_build(name), "weight=frsf,grad_weight=sign", generator=0)
    model.eval()  # no dropout: the same numbers in both runs
    eager = _run(model, name)[2]
    model.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    inputs = [t.clone().requires_grad_() if t.is_floating_point() else t
              for t in MODELS[name][1]()]
    out = compiled(*inputs)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(5))).sum().backward()
    assert all(torch.equal(eager[k], p.grad) for k, p in model.named_parameters())
