"""SurrogateMultiheadAttention: torch's numbers for the exact spec, documented perturbations."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradsurrogate import BackwardSpec, convert, convert_with_report, exact_backward
from gradsurrogate.attention import AttentionProjection, SurrogateMultiheadAttention
from gradsurrogate.layers import SurrogateLinear

E, H, L, S, N = 8, 2, 5, 4, 3


def _mha(seed=0, **kw):
    torch.manual_seed(seed)
    return nn.MultiheadAttention(E, H, **kw)


def _grads(module, *inputs):
    return [p.grad for p in module.parameters()] + [x.grad for x in inputs]


def _same(a, b):
    return all((u is None and v is None) or torch.equal(u, v) for u, v in zip(a, b, strict=True))


def _run(module, q, k, v, seed, **kw):
    torch.manual_seed(seed)
    out, weights = module(q, k, v, **kw)
    loss = out.square().sum() + (0 if weights is None else weights.square().sum())
    loss.backward()
    return out, weights, torch.get_rng_state()  # the state tells how many draws were made


def test_constructor_matches_torch_init_and_state_dict_keys():
    for kw in ({}, {"bias": False}, {"add_bias_kv": True}, {"kdim": 6, "vdim": 5}):
        torch.manual_seed(3)
        ref = nn.MultiheadAttention(E, H, **kw)
        torch.manual_seed(3)
        sur = SurrogateMultiheadAttention(E, H, **kw)
        assert list(sur.state_dict()) == list(ref.state_dict())
        assert _same(sur.state_dict().values(), ref.state_dict().values())
        assert [n for n, _ in sur.named_parameters()] == [n for n, _ in ref.named_parameters()]
        assert isinstance(sur.out_proj, SurrogateLinear) and isinstance(sur, nn.MultiheadAttention)


CASES = {
    "self": dict(qkv="self"),
    "self_batch_first_weights_per_head": dict(qkv="self", batch_first=True,
                                              average_attn_weights=False),
    "cross_kv_same": dict(qkv="cross"),
    "distinct_kv": dict(qkv="distinct"),
    "kdim_vdim": dict(qkv="distinct", kdim=6, vdim=5, batch_first=True),
    "bool_kpm_causal": dict(qkv="self", kpm="bool", causal=True, need_weights=False),
    "float_kpm_float_mask": dict(qkv="self", kpm="float", causal="float"),
    "is_causal_sdpa": dict(qkv="self", causal=True, is_causal=True, need_weights=False),
    "dropout_weights": dict(qkv="self", dropout=0.3, batch_first=True),
    "dropout_sdpa": dict(qkv="cross", dropout=0.3, need_weights=False, kpm="bool"),
    "bias_kv_zero_attn": dict(qkv="cross", add_bias_kv=True, add_zero_attn=True, kpm="bool"),
    "no_bias": dict(qkv="self", bias=False, need_weights=False),
    "unbatched": dict(qkv="self", unbatched=True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_bitwise_equal_torch(name):
    case = dict(CASES[name])
    qkv, kpm_kind, causal = case.pop("qkv"), case.pop("kpm", None), case.pop("causal", None)
    unbatched, is_causal = case.pop("unbatched", False), case.pop("is_causal", False)
    call = {k: case.pop(k) for k in ("need_weights", "average_attn_weights") if k in case}
    ref = _mha(**case).double()
    sur = SurrogateMultiheadAttention.from_module(copy.deepcopy(ref))
    bf, kdim, vdim = case.get("batch_first", False), case.get("kdim", E), case.get("vdim", E)
    g = torch.Generator().manual_seed(1)

    def make(length, dim):
        shape = (length, dim) if unbatched else (N, length, dim) if bf else (length, N, dim)
        return torch.randn(shape, generator=g, dtype=torch.float64)

    src = L if qkv == "self" else S
    if qkv == "self":
        x = make(L, E)
        inputs = [[t, t, t] for t in (x.clone().requires_grad_(), x.clone().requires_grad_())]
    else:
        q, k, v = make(L, E), make(S, kdim), make(S, vdim)
        inputs = []
        for _ in range(2):
            qq, kk = q.clone().requires_grad_(), k.clone().requires_grad_()
            vv = kk if qkv == "cross" else v.clone().requires_grad_()
            inputs.append([qq, kk, vv])
    if kpm_kind:
        mask = torch.zeros(N, src, dtype=torch.bool)
        mask[1, -2:] = True
        call["key_padding_mask"] = mask if kpm_kind == "bool" else \
            torch.zeros(N, src, dtype=torch.float64).masked_fill(mask, -1e9)
    if causal:
        m = torch.triu(torch.ones(L, src, dtype=torch.bool), 1)
        call["attn_mask"] = m if causal is True else \
            torch.zeros(L, src, dtype=torch.float64).masked_fill(m, float("-inf"))
        call["is_causal"] = is_causal
    out_r, w_r, rng_r = _run(ref, *inputs[0], seed=7, **call)
    out_s, w_s, rng_s = _run(sur, *inputs[1], seed=7, **call)
    assert torch.equal(out_r, out_s)
    assert torch.equal(rng_r, rng_s)  # same global RNG consumption (dropout masks)
    assert (w_r is None and w_s is None) or torch.equal(w_r, w_s)
    leaves = lambda ins: list(dict.fromkeys(ins))  # k is v counts once
    assert _same(_grads(ref, *leaves(inputs[0])), _grads(sur, *leaves(inputs[1])))


def _layer_inputs(bf, dtype=torch.float32, seed=2):
    g = torch.Generator().manual_seed(seed)
    shape = lambda n: (N, n, E) if bf else (n, N, E)
    return (torch.randn(shape(L), generator=g, dtype=dtype),
            torch.randn(shape(S), generator=g, dtype=dtype))


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_encoder_and_decoder_layers_convert_exact_bitwise(norm_first, batch_first):
    kw = dict(dim_feedforward=16, dropout=0.2, batch_first=batch_first, norm_first=norm_first)
    torch.manual_seed(0)
    enc, dec = nn.TransformerEncoderLayer(E, H, **kw), nn.TransformerDecoderLayer(E, H, **kw)
    x, mem = _layer_inputs(batch_first)
    causal = nn.Transformer.generate_square_subsequent_mask(L)
    kpm = torch.zeros(N, S, dtype=torch.bool)
    kpm[0, -1] = True
    runs = {
        "enc": (enc, lambda m, a, b: m(a, src_mask=causal, is_causal=True)),
        "dec": (dec, lambda m, a, b: m(a, b, tgt_mask=causal, tgt_is_causal=True,
                                       memory_key_padding_mask=kpm.float() * -1e9)),
    }
    for name, (layer, fwd) in runs.items():
        conv, report = convert_with_report(copy.deepcopy(layer), "exact")
        attn = [n for n, m in conv.named_modules() if isinstance(m, SurrogateMultiheadAttention)]
        assert attn == (["self_attn"] if name == "enc" else ["self_attn", "multihead_attn"])
        assert set(attn) <= set(report.converted)
        assert all("LayerNorm" in why for why in report.skipped.values())
        results = []
        for model in (layer, conv):
            a, b = (t.clone().requires_grad_() for t in (x, mem))
            torch.manual_seed(5)
            out = fwd(model, a, b)
            out.square().sum().backward()
            results.append((out, _grads(model, a) + ([b.grad] if name == "dec" else [])))
        assert torch.equal(results[0][0], results[1][0]), name
        assert _same(results[0][1], results[1][1]), name


def test_eval_no_grad_runs_torch_forward_bitwise():
    torch.manual_seed(0)
    enc = nn.TransformerEncoderLayer(E, H, 16, batch_first=True).eval()
    conv = convert(copy.deepcopy(enc), "weight=random", generator=0, on_skip="ignore")
    x, _ = _layer_inputs(True)
    kpm = torch.zeros(N, L, dtype=torch.bool)
    kpm[2, -2:] = True
    with torch.no_grad():  # torch's fast path for both
        assert torch.equal(enc(x, src_key_padding_mask=kpm), conv(x, src_key_padding_mask=kpm))


def _sign_where_clear(true, used):
    """``used == sign(true)`` wherever ``true`` is not rounding noise around an exact zero (the
    key-bias gradient is exactly 0 in exact arithmetic: softmax ignores a constant shift)."""
    clear = true.abs() > 1e-9 * true.abs().max()
    return torch.equal(used[clear], true.sign()[clear]) and bool((used.abs() <= 1).all())


@pytest.mark.parametrize("qkv", ["self", "cross"])
def test_grad_weight_sign_gives_sign_of_true_projection_gradients(qkv):
    ref = _mha(batch_first=True).double()
    sur = SurrogateMultiheadAttention.from_module(copy.deepcopy(ref), "grad_weight=sign")
    x, mem = (t.double() for t in _layer_inputs(True))
    k = x if qkv == "self" else mem
    xs = [x.clone().requires_grad_() for _ in range(2)]
    for model, q in zip((ref, sur), xs):
        out, _ = model(q, q if qkv == "self" else k, q if qkv == "self" else k)
        out.tanh().sum().backward()
    for (name, p), p_sur in zip(ref.named_parameters(), sur.parameters()):
        assert _sign_where_clear(p.grad, p_sur.grad), name
    # grad_input is untouched: the gradient reaching the input is torch's
    torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=1e-12, atol=1e-12)


def _core(q, k, v):
    """torch's attention core (identity projections): (L, N, E) projected q, k, v -> (L, N, E)."""
    eye = torch.eye(E, dtype=q.dtype)
    return F.multi_head_attention_forward(
        q, k, v, E, H, None, None, None, None, False, 0.0, eye, None, training=False,
        need_weights=False, use_separate_proj_weight=True, q_proj_weight=eye,
        k_proj_weight=eye, v_proj_weight=eye)[0]


def test_weight_random_uses_fixed_feedback_in_grad_input_hand_computation():
    ref = _mha().double()
    sur = SurrogateMultiheadAttention.from_module(copy.deepcopy(ref), "weight=random", 11)
    b_in, b_out = sur.in_proj.feedback, sur.out_proj.feedback
    assert b_in.shape == (3 * E, E) and b_out.shape == (E, E)
    assert not torch.equal(b_in[:E], b_out)  # one shared generator, separate draws
    assert {"in_proj.feedback", "out_proj.feedback"} <= set(sur.state_dict())
    x, _ = (t.double() for t in _layer_inputs(False))
    t = torch.randn(L, N, E, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    xs = x.clone().requires_grad_()
    out, _ = sur(xs, xs, xs, need_weights=False)
    (out * t).sum().backward()
    # hand computation on torch's own core: g_a = t B_out, g_P = core-vjp(g_a), g_x = g_P B_in
    w_in, w_out = ref.in_proj_weight.detach(), ref.out_proj.weight.detach()
    proj = F.linear(x, w_in, ref.in_proj_bias.detach())
    a, vjp = torch.func.vjp(_core, *proj.chunk(3, dim=-1))
    torch.testing.assert_close(out, F.linear(a, w_out, ref.out_proj.bias), rtol=0, atol=1e-14)
    g_p = torch.cat(vjp(t @ b_out), dim=-1)
    torch.testing.assert_close(xs.grad, g_p @ b_in, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sur.in_proj_weight.grad,
                               g_p.reshape(-1, 3 * E).T @ x.reshape(-1, E), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sur.out_proj.weight.grad, t.reshape(-1, E).T @ a.reshape(-1, E),
                               rtol=1e-12, atol=1e-12)


def test_feedback_state_dict_round_trip_and_separate_weights():
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(E, H, kdim=6, vdim=5)
    sur = SurrogateMultiheadAttention.from_module(copy.deepcopy(ref), "weight=random", 1)
    keys = [k for k in sur.state_dict() if k.endswith("feedback")]
    assert keys == ["out_proj.feedback", "q_proj.feedback", "k_proj.feedback", "v_proj.feedback"]
    assert sur.k_proj.feedback.shape == (E, 6) and sur.v_proj.feedback.shape == (E, 5)
    other = SurrogateMultiheadAttention.from_module(copy.deepcopy(ref), "weight=random", 99)
    assert not torch.equal(other.q_proj.feedback, sur.q_proj.feedback)
    other.load_state_dict(sur.state_dict())
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(n, N, d, generator=g) for n, d in ((L, E), (S, 6), (S, 5)))
    grads = []
    for model in (sur, other):
        qs = q.clone().requires_grad_()
        model(qs, k, v)[0].sum().backward()
        grads.append(_grads(model, qs))
    assert _same(*grads)
    plain = copy.deepcopy(ref)
    plain.load_state_dict(SurrogateMultiheadAttention.from_module(copy.deepcopy(ref))
                          .state_dict())  # exact: torch's keys exactly


def test_reconversion_deepcopy_diagnostics_and_exact_backward():
    ref = _mha()
    sur = SurrogateMultiheadAttention.from_module(ref, "weight=random", 0)
    assert sur.in_proj_weight is ref.in_proj_weight  # shared, not copied
    assert sur.out_proj.weight is ref.out_proj.weight
    first = sur.in_proj.feedback.clone()
    same = SurrogateMultiheadAttention.from_module(sur, "grad_weight=sign", 0)
    assert same is sur and sur.spec == BackwardSpec(grad_weight="sign")
    assert sur.out_proj.spec == sur.spec and sur.in_proj.feedback is None
    sur.set_surrogate("weight=random", 0)
    assert torch.equal(sur.in_proj.feedback, first)  # same generator seed, same draw
    dup = copy.deepcopy(sur)
    assert dup.in_proj.weight is dup.in_proj_weight and dup.in_proj.weight is not sur.in_proj_weight
    names = [n for n, m in sur.named_modules() if isinstance(m, AttentionProjection)]
    assert names == ["in_proj"]
    x, _ = _layer_inputs(False)
    with exact_backward(sur):  # every projection (in_proj too) back to exact
        xs = x.clone().requires_grad_()
        sur(xs, xs, xs)[0].sum().backward()
    xr = x.clone().requires_grad_()
    torch.manual_seed(0)
    plain = nn.MultiheadAttention(E, H)
    plain.load_state_dict(ref.state_dict())
    plain(xr, xr, xr)[0].sum().backward()
    assert torch.equal(xs.grad, xr.grad)


def test_convert_refuses_a_subclass_that_overrides_forward():
    class Custom(nn.MultiheadAttention):
        def forward(self, *a, **k):
            return super().forward(*a, **k)

    model = nn.Sequential(Custom(E, H))
    _, report = convert_with_report(model, "weight=sign")
    assert "overrides forward" in report.skipped["0"]
    with pytest.raises(ValueError, match="overrides forward"):
        SurrogateMultiheadAttention.from_module(model[0])


@pytest.mark.parametrize("spec", ["exact", "grad_weight=sign", "weight=random"])
def test_bf16_autocast_forward_equals_torch(spec):
    torch.manual_seed(0)
    enc = nn.TransformerEncoderLayer(E, H, 16, dropout=0.0)
    conv = convert(copy.deepcopy(enc), spec, generator=0, on_skip="ignore")
    x, _ = _layer_inputs(False)
    outs = []
    for model in (enc, conv):
        xs = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(model(xs))
        outs[-1].float().sum().backward()
        assert xs.grad is not None and torch.isfinite(xs.grad).all()
    assert outs[0].dtype == outs[1].dtype and torch.equal(outs[0], outs[1])


def test_gradcheck_float64_exact_and_recorded_paths():
    sur = SurrogateMultiheadAttention(4, 2, dtype=torch.float64, generator=0)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 2, 4, dtype=torch.float64, generator=g, requires_grad=True)
    kv = torch.randn(2, 2, 4, dtype=torch.float64, generator=g, requires_grad=True)
    f = lambda a, b: sur(a, b, b)[0]
    assert torch.autograd.gradcheck(f, (q, kv))
    for proj in sur.projections():  # a recorder routes the exact spec through the Function
        proj.recorder = lambda *args: None
    assert torch.autograd.gradcheck(f, (q, kv))


def test_diagnostics_see_every_projection():
    from gradsurrogate.diagnostics import feedback_alignment, record_gradients

    torch.manual_seed(0)
    dec = convert(nn.TransformerDecoderLayer(E, H, 16, dropout=0.0), "weight=random",
                  generator=0, on_skip="ignore")
    x, mem = _layer_inputs(False)
    with record_gradients(dec) as rec:
        dec(x.requires_grad_(), mem).sum().backward()
    layers = {r.layer for r in rec.records if r.target == "grad_input"}
    for attn in ("self_attn", "multihead_attn"):
        assert {f"{attn}.in_proj", f"{attn}.out_proj"} <= layers
    angles = feedback_alignment(dec)
    assert {"self_attn.in_proj", "multihead_attn.out_proj", "linear1"} <= set(angles)
    assert all(60 < a < 120 for a in angles.values())  # a fresh random B: about orthogonal
