"""Surrogate multi-head attention: ``nn.MultiheadAttention`` whose projections follow a spec.

``nn.MultiheadAttention`` reads ``in_proj_weight`` and ``out_proj.weight`` directly inside
``F.multi_head_attention_forward``, so a surrogate layer placed in ``out_proj`` would do nothing.
:class:`SurrogateMultiheadAttention` runs the same computation step for step (same ops, same
order, same dropout draws) with the q/k/v input projections and the output projection going
through :func:`~gradsurrogate.functional.surrogate_linear`; the attention core
``softmax(q kᵀ / √d + mask) v`` stays exact. Parameters and ``state_dict`` keys are those of
``nn.MultiheadAttention`` (plus the ``feedback`` buffers of stateful specs such as
``weight=random``).

The surrogate state of each projection weight lives in a small child module (a
:class:`~gradsurrogate.layers.SurrogateMixin`, so :func:`~gradsurrogate.record_gradients`,
:func:`~gradsurrogate.exact_backward` and ``convert`` see it): ``in_proj`` for the packed
``in_proj_weight`` (3E, E), or ``q_proj`` / ``k_proj`` / ``v_proj`` when ``kdim``/``vdim``
differ from ``embed_dim``; ``out_proj`` is a :class:`~gradsurrogate.layers.SurrogateLinear`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .backward import BackwardSpec, Generators
from .convert import register_surrogate
from .functional import surrogate_linear
from .layers import SpecLike, SurrogateLinear, SurrogateMixin, make_generator

__all__ = ["AttentionProjection", "SurrogateMultiheadAttention"]


class AttentionProjection(SurrogateMixin):
    """Surrogate state (``spec``, ``generator``, fixed ``feedback``, ``recorder``) of one
    projection weight of a :class:`SurrogateMultiheadAttention`.

    It owns no parameter: ``weight`` is the attention module's parameter ``weight_name``
    (``in_proj_weight`` (3E, E), or ``q/k/v_proj_weight`` (E, E|kdim|vdim)) and ``bias`` its
    rows of ``in_proj_bias``. ``feedback`` (shaped like ``weight``) is drawn once when a
    stateful spec is set. Call it as ``proj(x, weight_rows, bias_rows, feedback_rows)``.
    """

    def __init__(self, owner: nn.MultiheadAttention, weight_name: str, part: int | None,
                 spec: SpecLike | None = None, generator: Generators = None):
        super().__init__()
        # A plain list, not a submodule: no cycle in the module tree; deepcopy/pickle map it
        # to the copied owner.
        self._owner = [owner]
        self.weight_name = weight_name
        self.part = part  # which third of in_proj_bias (separate q/k/v weights), else None
        self._init_surrogate(spec, generator)

    @property
    def weight(self) -> Tensor:  # type: ignore[override]
        return getattr(self._owner[0], self.weight_name)

    @property
    def bias(self) -> Tensor | None:
        b = self._owner[0].in_proj_bias
        return b if b is None or self.part is None else b.chunk(3)[self.part]

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None,
                feedback: Tensor | None) -> Tensor:
        """``x Wᵀ + b`` (*, i) -> (*, o) for rows of this projection, backward by ``spec``."""
        return surrogate_linear(x, weight, bias, self.spec, self.generator, feedback,
                                self.recorder)

    def extra_repr(self) -> str:
        return f"{self.weight_name}, spec={self.spec}"


def _split(t: Tensor | None, sizes: Sequence[int]) -> Sequence[Tensor | None]:
    return [None] * len(sizes) if t is None else t.split(list(sizes))


class SurrogateMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose q/k/v and output projections follow ``spec``.

    Same constructor (plus ``spec`` and ``generator``), parameters, initialisation (same RNG
    draws) and forward numbers as torch's module for every option of its ``forward``
    (``batch_first``, unbatched input, bool/float ``key_padding_mask`` and ``attn_mask``,
    ``is_causal``, ``need_weights``, ``average_attn_weights``, dropout with the same global RNG
    draws, ``add_bias_kv``, ``add_zero_attn``, ``kdim``/``vdim``). Shapes as torch's: query
    (L, N, E) or (N, L, E) with ``batch_first``, key/value (S, N, kdim|vdim).

    The packed self-attention projection (``query is key is value``) is one surrogate linear
    map on the whole (3E, E) weight; otherwise torch's own split is kept (q rows and k|v rows
    for ``key is value``, three thirds else), each a surrogate linear map on its rows.
    When no autograd graph is recorded (``torch.no_grad``, or nothing requires grad) there is no
    backward for a spec to change, and torch's own forward runs (its inference fast path
    included), so eval outputs are bitwise torch's.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False,
                 kdim: int | None = None, vdim: int | None = None, batch_first: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 spec: SpecLike | None = None, generator: torch.Generator | int | None = None):
        super().__init__(embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn,
                         kdim, vdim, batch_first, device=device, dtype=dtype)
        linear = self.out_proj  # torch's, initialised by torch (same RNG draws)
        out = SurrogateLinear(embed_dim, embed_dim, bias, None, None, device="meta")
        out.weight, out.bias = linear.weight, linear.bias
        self.out_proj = out
        if self._qkv_same_embed_dim:
            self.in_proj = AttentionProjection(self, "in_proj_weight", None)
        else:
            self.q_proj = AttentionProjection(self, "q_proj_weight", 0)
            self.k_proj = AttentionProjection(self, "k_proj_weight", 1)
            self.v_proj = AttentionProjection(self, "v_proj_weight", 2)
        self.set_surrogate(spec, generator)

    # ------------------------------------------------------------------ surrogate state
    def projections(self) -> list[SurrogateMixin]:
        """The surrogate projections in draw order: in_proj (or q, k, v), then out_proj."""
        names = ["in_proj"] if self._qkv_same_embed_dim else ["q_proj", "k_proj", "v_proj"]
        return [getattr(self, n) for n in names] + [self.out_proj]

    def set_surrogate(self, spec: SpecLike | None, generator: torch.Generator | int | None
                      ) -> None:
        """Give every projection ``spec``; a ``generator`` (an int seeds a new one) is shared
        by all of them and redraws their fixed state, in :meth:`projections` order."""
        w = self.out_proj.weight
        gen = make_generator(generator, w.device if w.device.type != "meta" else "cpu")
        for proj in self.projections():
            proj.set_spec(spec, gen)

    @property
    def spec(self) -> BackwardSpec:
        """The input projection's spec (setting it sets every projection's)."""
        return self.projections()[0].spec

    @spec.setter
    def spec(self, value: SpecLike | None) -> None:
        for proj in self.projections():
            proj.spec = value

    @classmethod
    def from_module(cls, mha: nn.MultiheadAttention, spec: SpecLike | None = None,
                    generator: torch.Generator | int | None = None
                    ) -> SurrogateMultiheadAttention:
        """A surrogate of ``mha`` sharing (not copying) its parameters; no RNG draws except
        the feedback state of a stateful spec (from ``generator``). A surrogate is updated in
        place (new spec and generator) and returned."""
        new = _surrogate_of(mha, spec, generator)
        if isinstance(new, str):
            raise ValueError(new)
        return new

    # ------------------------------------------------------------------ forward
    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        """As ``nn.MultiheadAttention.forward``; returns (output, weights or ``None``)."""
        tensors = (query, key, value, *self.parameters())
        if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
            return super().forward(query, key, value, key_padding_mask, need_weights,
                                   attn_mask, average_attn_weights, is_causal)
        if query.is_nested or key.is_nested or value.is_nested:
            raise ValueError("SurrogateMultiheadAttention takes nested tensors only without "
                             "autograd (torch's inference fast path); pad the batch and pass "
                             "key_padding_mask instead")
        is_batched = query.dim() == 3
        key_padding_mask = F._canonical_mask(
            mask=key_padding_mask, mask_name="key_padding_mask",
            other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
            target_type=query.dtype)
        attn_mask = F._canonical_mask(
            mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
            target_type=query.dtype, check_other=False)
        if self.batch_first and is_batched:  # keep the "is" relations, as torch does
            if key is value:
                if query is key:
                    query = key = value = query.transpose(1, 0)
                else:
                    query, key = (x.transpose(1, 0) for x in (query, key))
                    value = key
            else:
                query, key, value = (x.transpose(1, 0) for x in (query, key, value))
        out, weights = self._attention(query, key, value, key_padding_mask, need_weights,
                                       attn_mask, average_attn_weights, is_causal)
        if self.batch_first and is_batched:
            out = out.transpose(1, 0)
        return out, weights

    def _in_projection(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """torch's ``_in_projection_packed`` / ``_in_projection`` with surrogate linear maps."""
        b = self.in_proj_bias
        if not self._qkv_same_embed_dim:
            bq, bk, bv = _split(b, [self.embed_dim] * 3)
            return (self.q_proj(q, self.q_proj_weight, bq, self.q_proj.feedback),
                    self.k_proj(k, self.k_proj_weight, bk, self.k_proj.feedback),
                    self.v_proj(v, self.v_proj_weight, bv, self.v_proj.feedback))
        proj, w, fb, E = self.in_proj, self.in_proj_weight, self.in_proj.feedback, q.size(-1)
        if k is v and q is k:  # self-attention: one map on the packed (3E, E) weight
            p = proj(q, w, b, fb)
            p = p.unflatten(-1, (3, E)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
            return p[0], p[1], p[2]
        if k is v:  # encoder-decoder attention: q rows, then k|v rows
            sizes = [E, 2 * E]
            (wq, wkv), (bq, bkv), (fq, fkv) = w.split(sizes), _split(b, sizes), _split(fb, sizes)
            kv = proj(k, wkv, bkv, fkv)
            kv = kv.unflatten(-1, (2, E)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
            return proj(q, wq, bq, fq), kv[0], kv[1]
        sizes = [E] * 3
        ws, bs, fs = w.split(sizes), _split(b, sizes), _split(fb, sizes)
        return (proj(q, ws[0], bs[0], fs[0]), proj(k, ws[1], bs[1], fs[1]),
                proj(v, ws[2], bs[2], fs[2]))

    def _attention(self, query: Tensor, key: Tensor, value: Tensor,
                   key_padding_mask: Tensor | None, need_weights: bool,
                   attn_mask: Tensor | None, average_attn_weights: bool, is_causal: bool
                   ) -> tuple[Tensor, Tensor | None]:
        """``F.multi_head_attention_forward`` step for step (sequence-first inputs), with the
        projections through surrogate maps. Query (L, N, E) or (L, E) -> output alike."""
        num_heads = self.num_heads
        is_batched = F._mha_shape_check(query, key, value, key_padding_mask, attn_mask,
                                        num_heads)
        if not is_batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        tgt_len, bsz, embed_dim = query.shape
        src_len = key.shape[0]
        key_padding_mask = F._canonical_mask(
            mask=key_padding_mask, mask_name="key_padding_mask",
            other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
            target_type=query.dtype)
        if is_causal and attn_mask is None:
            raise ValueError("is_causal=True needs attn_mask (torch's rule): pass "
                             "nn.Transformer.generate_square_subsequent_mask(L) as attn_mask")
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None  # the is_causal hint goes to scaled_dot_product_attention
        else:
            attn_mask = F._canonical_mask(
                mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                target_type=query.dtype, check_other=False)
            if key_padding_mask is not None:
                is_causal = False
        if embed_dim != self.embed_dim:
            raise ValueError(f"query has {embed_dim} features; embed_dim is {self.embed_dim}")
        head_dim = embed_dim // num_heads
        if self._qkv_same_embed_dim and key.shape != value.shape:
            raise ValueError(f"key shape {tuple(key.shape)} must equal value shape "
                             f"{tuple(value.shape)}")
        if key.shape[:2] != value.shape[:2]:
            raise ValueError(f"key's sequence and batch dims {tuple(key.shape[:2])} must "
                             f"equal value's {tuple(value.shape[:2])}")
        q, k, v = self._in_projection(query, key, value)

        if attn_mask is not None:
            if attn_mask.dim() == 2:
                if attn_mask.shape != (tgt_len, src_len):
                    raise ValueError(f"2-D attn_mask has shape {tuple(attn_mask.shape)}; "
                                     f"expected {(tgt_len, src_len)}")
                attn_mask = attn_mask.unsqueeze(0)
            elif attn_mask.dim() == 3:
                if attn_mask.shape != (bsz * num_heads, tgt_len, src_len):
                    raise ValueError(f"3-D attn_mask has shape {tuple(attn_mask.shape)}; "
                                     f"expected {(bsz * num_heads, tgt_len, src_len)}")
            else:
                raise ValueError(f"attn_mask must be 2-D or 3-D; got {attn_mask.dim()}-D")
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.repeat(1, bsz, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, bsz, 1)])
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, 1))
            if key_padding_mask is not None:
                key_padding_mask = F.pad(key_padding_mask, (0, 1))
        q = q.view(tgt_len, bsz * num_heads, head_dim).transpose(0, 1)
        k = k.view(k.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
        v = v.view(v.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
        if self.add_zero_attn:
            zeros = (bsz * num_heads, 1, head_dim)
            k = torch.cat([k, torch.zeros(zeros, dtype=k.dtype, device=k.device)], dim=1)
            v = torch.cat([v, torch.zeros(zeros, dtype=v.dtype, device=v.device)], dim=1)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, 1))
            if key_padding_mask is not None:
                key_padding_mask = F.pad(key_padding_mask, (0, 1))
        src_len = k.size(1)
        if key_padding_mask is not None:
            if key_padding_mask.shape != (bsz, src_len):
                raise ValueError(f"key_padding_mask has shape {tuple(key_padding_mask.shape)}; "
                                 f"expected {(bsz, src_len)}")
            key_padding_mask = (key_padding_mask.view(bsz, 1, 1, src_len)
                                .expand(-1, num_heads, -1, -1)
                                .reshape(bsz * num_heads, 1, src_len))
            attn_mask = key_padding_mask if attn_mask is None else attn_mask + key_padding_mask
        dropout_p = self.dropout if self.training else 0.0

        if need_weights:
            _b, _nt, e = q.shape
            q_scaled = q * math.sqrt(1.0 / float(e))
            if is_causal and attn_mask is None:
                raise ValueError("is_causal without attn_mask is not supported with "
                                 "need_weights=True (torch's rule)")
            if attn_mask is not None:
                weights = torch.baddbmm(attn_mask, q_scaled, k.transpose(-2, -1))
            else:
                weights = torch.bmm(q_scaled, k.transpose(-2, -1))
            weights = F.softmax(weights, dim=-1)
            if dropout_p > 0.0:
                weights = F.dropout(weights, p=dropout_p)
            out = torch.bmm(weights, v)
            out = out.transpose(0, 1).reshape(tgt_len * bsz, embed_dim)
            out = self.out_proj(out).view(tgt_len, bsz, -1)
            weights = weights.view(bsz, num_heads, tgt_len, src_len)
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not is_batched:
                out, weights = out.squeeze(1), weights.squeeze(0)
            return out, weights
        if attn_mask is not None:
            if attn_mask.size(0) == 1 and attn_mask.dim() == 3:
                attn_mask = attn_mask.unsqueeze(0)
            else:
                attn_mask = attn_mask.view(bsz, num_heads, -1, src_len)
        q = q.view(bsz, num_heads, tgt_len, head_dim)
        k = k.view(bsz, num_heads, src_len, head_dim)
        v = v.view(bsz, num_heads, src_len, head_dim)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)
        out = out.permute(2, 0, 1, 3).reshape(bsz * tgt_len, embed_dim)
        out = self.out_proj(out).view(tgt_len, bsz, -1)
        if not is_batched:
            out = out.squeeze(1)
        return out, None


_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def _share_hooks(src: nn.Module, dst: nn.Module) -> None:
    """``dst`` uses the hook dicts of ``src``: a hook handle removes the hook from both."""
    for attr in _HOOK_DICTS:
        if hasattr(src, attr):
            setattr(dst, attr, getattr(src, attr))


@register_surrogate(nn.MultiheadAttention)
def _surrogate_of(module: nn.Module, spec: SpecLike | None,
                  generator: torch.Generator | int | None) -> SurrogateMultiheadAttention | str:
    """``convert``'s factory: the surrogate of ``module`` sharing its parameters (and forward
    hooks), or why there is none. A surrogate gets the new spec (and generator) in place."""
    if isinstance(module, SurrogateMultiheadAttention):
        module.set_surrogate(spec, generator)
        return module
    kind = type(module).__name__
    if not isinstance(module, nn.MultiheadAttention):
        return f"{kind} is not an nn.MultiheadAttention"
    if type(module).forward is not nn.MultiheadAttention.forward:
        return (f"{kind} subclasses nn.MultiheadAttention but overrides forward, which a "
                f"surrogate would lose; register a surrogate for it with register_surrogate")
    if parametrize.is_parametrized(module) or parametrize.is_parametrized(module.out_proj):
        return (f"{kind} has parametrized projection weights (torch.nn.utils.parametrize); "
                f"the surrogate attention reads plain parameters")
    old_out = module.out_proj
    if not isinstance(old_out, nn.Linear) or (
            type(old_out).forward is not nn.Linear.forward
            and not isinstance(old_out, SurrogateLinear)):
        return f"{kind}.out_proj is a {type(old_out).__name__}, not an nn.Linear"
    # Built on the meta device (no RNG draws), then given the module's own parameters.
    # (add_bias_kv is left off there: normal_ on "meta" imports torch's meta registry, seconds;
    # bias_k/bias_v are registered below in torch's order.)
    new = SurrogateMultiheadAttention(
        module.embed_dim, module.num_heads, module.dropout, module.in_proj_bias is not None,
        False, module.add_zero_attn, module.kdim, module.vdim, module.batch_first,
        device="meta")
    for name, param in module.named_parameters(recurse=False):
        setattr(new, name, param)
    if isinstance(old_out, SurrogateLinear):
        new.out_proj = old_out
    else:
        new.out_proj.weight, new.out_proj.bias = old_out.weight, old_out.bias
        _share_hooks(old_out, new.out_proj)
        new.out_proj.train(old_out.training)
    _share_hooks(module, new)
    new.train(module.training)
    new.set_surrogate(spec, generator)
    return new
