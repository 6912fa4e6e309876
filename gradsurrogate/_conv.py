"""Convolutions of any dimension (1-d, 2-d, 3-d) with a surrogate backward.

One :class:`ConvOp` serves every dimension (the dimension is ``len(stride)``), BackPACK style:
``y = convNd(x, W) + b`` with ``x`` (n, c, *spatial), ``W`` (o, c/groups, *kernel). Its exact
derivatives are torch's own kernels (``torch.nn.grad.convNd_input`` / ``convNd_weight``, i.e.
``aten.convolution_backward``). String padding and the non-zero padding modes are applied the
way ``nn.ConvNd`` applies them, *outside* the surrogate Function, so their backward is exact
autograd and the forward is bitwise torch's:

* ``padding_mode`` ``reflect``/``replicate``/``circular``: ``F.pad`` then a convolution with
  padding 0;
* ``padding="valid"``: padding 0; ``padding="same"`` (stride 1): ``d·(k-1)`` in total per
  dim, ``⌊total/2⌋`` on the left; when that is asymmetric (even kernel, odd dilation) the
  extra zero goes on the right with ``F.pad`` first, as ``aten._convolution_mode`` does.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _ntuple

from .backward import BackwardSpec, Generators
from .functional import LayerOp, Recorder, _apply
from .registry import check_choice

__all__ = ["PADDING_MODES", "Conv2dOp", "ConvOp", "surrogate_conv", "surrogate_conv2d"]

PADDING_MODES: tuple[str, ...] = ("zeros", "reflect", "replicate", "circular")
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
IntOrTuple = int | tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ConvOp(LayerOp):
    """``y = convNd(x, W) + b`` with ``N = len(stride)``; integer padding only.

    ``grad_input = convNd_input(g, W)`` (the transposed convolution), ``grad_weight =
    convNd_weight(x, g)``, ``grad_bias = Σ_{n, spatial} g``. Ensemble form: ``x`` (e, n, c,
    *spatial), ``W`` (e, o, c/groups, *kernel), ``b`` (e, o) → (e, n, o, *spatial'), computed as
    one convolution with ``e·groups`` groups (members side by side in the channel dim).
    """

    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)
    dilation: tuple[int, ...] = (1, 1)
    groups: int = 1
    fused: ClassVar[bool] = True

    @property
    def dim(self) -> int:
        return len(self.stride)

    def _kw(self, members: int = 1) -> dict[str, Any]:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups * members)

    def forward(self, x: Tensor, w: Tensor, b: Tensor | None, ensemble: bool) -> Tensor:
        if not ensemble:
            return _CONV[self.dim](x, w, b, **self._kw())
        e = w.shape[0]
        y = _CONV[self.dim](_to_groups(x), w.flatten(0, 1), None if b is None else b.flatten(),
                            **self._kw(e))
        return _from_groups(y, e)

    def grad_input(self, g: Tensor, w: Tensor, x_shape: torch.Size, ensemble: bool) -> Tensor:
        fn = getattr(torch.nn.grad, f"conv{self.dim}d_input")
        if not ensemble:
            return fn(x_shape, w, g, **self._kw())
        e = w.shape[0]
        shape = (x_shape[1], e * x_shape[2], *x_shape[3:])
        return _from_groups(fn(shape, w.flatten(0, 1), _to_groups(g), **self._kw(e)), e)

    def grad_weight(self, g: Tensor, x: Tensor, w_shape: torch.Size, ensemble: bool) -> Tensor:
        fn = getattr(torch.nn.grad, f"conv{self.dim}d_weight")
        if not ensemble:
            return fn(x, w_shape, g, **self._kw())
        e = w_shape[0]
        flat = (e * w_shape[1], *w_shape[2:])
        return fn(_to_groups(x), flat, _to_groups(g), **self._kw(e)).reshape(w_shape)

    def grad_bias(self, g: Tensor, ensemble: bool) -> Tensor:
        return g.sum(dim=(int(ensemble), *range(2 + ensemble, g.dim())))

    def _backward(self, g: Tensor, x: Tensor, w: Tensor, ensemble: bool,
                  mask: tuple[bool, bool, bool]) -> tuple[Tensor | None, ...]:
        """``aten.convolution_backward`` (input, weight, bias gradients as ``mask`` asks);
        an ensemble runs as one grouped call and its results come back per member."""
        e = w.shape[0] if ensemble else 1
        if ensemble:
            g, x, w = _to_groups(g), _to_groups(x), w.flatten(0, 1)
        gi, gw, gb = torch.ops.aten.convolution_backward(
            g, x, w, [w.shape[0]] if mask[2] else None, self.stride, self.padding,
            self.dilation, False, [0] * self.dim, self.groups * e, mask)
        if ensemble:
            gi = None if gi is None else _from_groups(gi, e)
            gw = None if gw is None else gw.unflatten(0, (e, -1))
            gb = None if gb is None else gb.unflatten(0, (e, -1))
        return gi, gw, gb

    def grads(self, g: Tensor, x: Tensor, w: Tensor, need_bias: bool,
              ensemble: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """All three from one ``convolution_backward`` (as autograd's own conv backward): the
        input gradient through ``w``, the weight gradient from ``x`` (it reads only ``w``'s
        shape), the bias gradient from ``g``."""
        return self._backward(g, x, w, ensemble, (True, True, need_bias))

    def grad_bias_at(self, g: Tensor, x: Tensor, w: Tensor, ensemble: bool) -> Tensor:
        """torch's own bias reduction (``convolution_backward``, bias only): bitwise autograd's."""
        return self._backward(g, x.to(g.dtype), w.to(g.dtype), ensemble, (False, False, True))[2]

    def broadcast_bias(self, b: Tensor, y: Tensor, ensemble: bool) -> Tensor:
        # (o,) against (n, o, *spatial); (e, o) against (e, n, o, *spatial)
        if ensemble:
            return b.reshape(b.shape[0], 1, b.shape[1], *([1] * self.dim))
        return b.reshape(-1, *([1] * self.dim))


def _to_groups(t: Tensor) -> Tensor:
    """Members side by side in the channels: (e, n, c, *spatial) → (n, e·c, *spatial)."""
    return t.transpose(0, 1).flatten(1, 2)


def _from_groups(t: Tensor, e: int) -> Tensor:
    """(n, e·c, *spatial) → (e, n, c, *spatial) (a view; the memory stays batch-first)."""
    return t.unflatten(1, (e, -1)).transpose(0, 1)


#: The 2-d case under its former name (``ConvOp`` defaults to two dimensions).
Conv2dOp = ConvOp


def _same_padding(kernel: tuple[int, ...], dilation: tuple[int, ...],
                  stride: tuple[int, ...]) -> list[tuple[int, int]]:
    """(left, right) zero padding per spatial dim that keeps the size (``padding='same'``)."""
    if any(s != 1 for s in stride):
        raise ValueError(f"padding='same' needs stride 1 (as in torch); got stride {stride}")
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return [(t // 2, t - t // 2) for t in totals]


def _pad_arg(pads: list[tuple[int, int]]) -> list[int]:
    """``F.pad``'s argument: (left, right) pairs from the last dim to the first."""
    return [p for pair in reversed(pads) for p in pair]


def surrogate_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                   spec: BackwardSpec | str | None = None, generator: Generators = None,
                   feedback: Tensor | None = None, recorder: Recorder | None = None,
                   stride: IntOrTuple = 1, padding: IntOrTuple | str = 0,
                   dilation: IntOrTuple = 1, groups: int = 1,
                   padding_mode: str = "zeros", ensemble: bool = False) -> Tensor:
    """``convNd(x, W) + b`` (``N = weight.dim() - 2`` in 1, 2, 3) with the backward of ``spec``.

    ``x`` (n, c, *spatial) or unbatched (c, *spatial), ``weight`` (o, c/groups, *kernel),
    ``bias`` (o,). Arguments as ``F.convNd`` (``padding`` also ``"same"``/``"valid"``) plus
    ``padding_mode`` as ``nn.ConvNd``. ``n = 0`` gives an empty output and zero gradients.
    ``ensemble=True``: ``e`` independent convolutions, ``x`` (e, n, c, *spatial), ``weight``
    (e, o, c/groups, *kernel), ``bias`` (e, o) → (e, n, o, *spatial'); ``generator`` may be a
    list of ``e`` generators (member ``e`` draws from ``generator[e]``, the numbers of ``e``
    separate layers) and flip/blend parameters (e,) tensors.
    """
    d = weight.dim() - 2 - ensemble
    batched = d + 2 + ensemble
    if d not in _CONV or x.dim() not in ((batched,) if ensemble else (d + 1, d + 2)) \
            or (ensemble and (x.shape[0] != weight.shape[0]
                              or (bias is not None and bias.shape != weight.shape[:2]))):
        lead = "(e, n, c, *spatial)" if ensemble else "(n, c, *spatial) or (c, *spatial)"
        lead_w = "(e, o, c/groups, *kernel) (and bias (e, o))" if ensemble else \
            "(o, c/groups, *kernel)"
        raise ValueError(f"conv{d if d in _CONV else 'N'}d{' ensemble' if ensemble else ''} "
                         f"needs input {lead} and weight {lead_w} with 1 to 3 spatial dims; "
                         f"got shapes {tuple(x.shape)} and {tuple(weight.shape)}")
    check_choice(padding_mode, PADDING_MODES, "padding_mode")
    tup = _ntuple(d)
    stride, dilation = tuple(tup(stride)), tuple(tup(dilation))
    kernel = tuple(weight.shape[2 + ensemble:])
    if isinstance(padding, str):
        padding = check_choice(padding, ("same", "valid"), "string padding")
        pads = (_same_padding(kernel, dilation, stride) if padding == "same"
                else [(0, 0)] * d)
    else:
        pads = [(p, p) for p in tup(padding)]
    unbatched = x.dim() == d + 1
    if unbatched:
        x = x.unsqueeze(0)

    def pad(t: Tensor, arg: list[int], **kw: Any) -> Tensor:  # (e, n) as one batch dim
        return F.pad(t.flatten(0, 1), arg, **kw).unflatten(0, t.shape[:2]) if ensemble \
            else F.pad(t, arg, **kw)

    if padding_mode != "zeros":  # nn.ConvNd: pad with the mode, then convolve unpadded
        x = pad(x, _pad_arg(pads), mode=padding_mode)
        pads = [(0, 0)] * d
    elif any(lo != hi for lo, hi in pads):  # 'same' with an even kernel: extra zeros right
        x = pad(x, _pad_arg([(0, hi - lo) for lo, hi in pads]))
    op = ConvOp(stride, tuple(lo for lo, _ in pads), dilation, groups)
    y = _apply(op, x, weight, bias, spec, generator, feedback, recorder, ensemble)
    return y.squeeze(0) if unbatched else y


def surrogate_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                     spec: BackwardSpec | str | None = None, generator: Generators = None,
                     feedback: Tensor | None = None, recorder: Recorder | None = None,
                     stride: IntOrTuple = 1, padding: IntOrTuple | str = 0,
                     dilation: IntOrTuple = 1, groups: int = 1,
                     padding_mode: str = "zeros") -> Tensor:
    """:func:`surrogate_conv` for ``x`` (n, c, h, w) or (c, h, w), ``weight`` (o, c/groups,
    kh, kw)."""
    if weight.dim() != 4 or x.dim() not in (3, 4):
        raise ValueError(f"conv2d needs input (n, c, h, w) or (c, h, w) and weight "
                         f"(o, c/groups, kh, kw); got shapes {tuple(x.shape)} and "
                         f"{tuple(weight.shape)}")
    return surrogate_conv(x, weight, bias, spec, generator, feedback, recorder, stride, padding,
                          dilation, groups, padding_mode)
