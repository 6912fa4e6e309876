"""Ensemble surrogate layers: ``e`` independent layers in one batched computation.

Dim 0 of every parameter and of the input indexes the member ``e``. Member ``k`` is initialised
like its torch layer and, given one generator per member, draws its backward noise from
``generator[k]``: the numbers of ``e`` separate surrogate layers seeded alike (up to the float
rounding of the batched kernels: ``bmm`` for Linear, one grouped convolution for ConvNd).
Flip/blend parameters may be (e,) tensors (one value per member). Built for vectorised grids
(:func:`gradsurrogate.xor.run_grid`); re-exported by :mod:`gradsurrogate.layers`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _ntuple

from ._conv import PADDING_MODES, surrogate_conv
from .backward import Generators
from .functional import surrogate_linear
from .layers import SpecLike, SurrogateMixin
from .registry import check_choice, check_int

__all__ = ["EnsembleSurrogateConv1d", "EnsembleSurrogateConv2d", "EnsembleSurrogateConv3d",
           "EnsembleSurrogateLinear"]


def _check_members(ensemble: int, generator: Generators | int) -> None:
    check_int(ensemble, "ensemble", low=1)
    if isinstance(generator, Sequence) and len(generator) != ensemble:
        raise ValueError(f"need one generator per member ({ensemble}); got {len(generator)}")


def _check_alike(layers: Sequence[nn.Module], kind: type[nn.Module],
                 fields: tuple[str, ...]) -> None:
    """Every layer a ``kind`` with the same ``fields`` as the first (ValueError naming the
    first member and field that differ)."""
    for k, m in enumerate(layers):
        if not isinstance(m, kind):
            raise ValueError(f"member {k} is a {type(m).__name__}; every member must be an "
                             f"nn.{kind.__name__}")
        for name in fields:
            if getattr(m, name) != getattr(layers[0], name):
                raise ValueError(f"member {k} has {name}={getattr(m, name)!r}, member 0 has "
                                 f"{getattr(layers[0], name)!r}: an ensemble's layers must "
                                 f"agree in {', '.join(fields)}")
        if (m.bias is None) != (layers[0].bias is None):
            raise ValueError(f"member {k} {'has no' if m.bias is None else 'has a'} bias, "
                             f"member 0 {'has' if m.bias is None else 'has none'}")


def _stacked(out: SurrogateMixin, layers: Sequence[nn.Module], spec: SpecLike | None,
             generator: Generators | int) -> SurrogateMixin:
    """``out`` (built on the meta device: no RNG draws) given the stacked parameters of
    ``layers``, then ``spec`` (a feedback matrix is drawn from ``generator`` here)."""
    out.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]).clone())
    if layers[0].bias is not None:
        out.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone())
    out.set_spec(spec, generator)
    return out


class _EnsembleLayer(SurrogateMixin):
    """Shared by the ensemble layers: parameters with the members in dim 0, each member
    initialised like its torch layer."""

    is_ensemble = True
    weight: nn.Parameter
    bias: nn.Parameter | None

    def reset_parameters(self) -> None:
        # nn.Linear's / nn.ConvNd's kaiming_uniform(a=√5) bound 1/√fan_in, per member
        bound = 1 / math.sqrt(self.weight[0, 0].numel())
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)


class EnsembleSurrogateLinear(_EnsembleLayer):
    """``e`` independent linear layers in one batched computation.

    ``weight`` (e, o, i), ``bias`` (e, o); input (e, *, i) → output (e, *, o). Member ``k`` is
    initialised like ``nn.Linear`` and, given one generator per member, draws its backward noise
    from ``generator[k]`` — the same numbers as ``e`` separate :class:`SurrogateLinear` layers
    seeded alike. Flip/blend parameters may be (e,) tensors (one value per member).
    """

    def __init__(self, ensemble: int, in_features: int, out_features: int, bias: bool = True,
                 spec: SpecLike | None = None, generator: Generators | int = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        _check_members(ensemble, generator)
        check_int(in_features, "in_features")
        check_int(out_features, "out_features")
        self.in_features, self.out_features, self.ensemble = in_features, out_features, ensemble
        kw = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(ensemble, out_features, in_features, **kw))
        self.bias = nn.Parameter(torch.empty(ensemble, out_features, **kw)) if bias else None
        self.reset_parameters()
        self._init_surrogate(spec, generator)

    @classmethod
    def from_linears(cls, layers: Sequence[nn.Linear], spec: SpecLike | None = None,
                     generator: Generators | int = None) -> EnsembleSurrogateLinear:
        """Stack the parameters of ``layers`` (``nn.Linear`` of one shape, copied) into one
        ensemble layer, built on the meta device: no random numbers are drawn but the feedback
        state (from ``generator``; ``None``: the global RNG)."""
        if not layers:
            raise ValueError("from_linears needs at least one nn.Linear layer; got none")
        _check_members(len(layers), generator)
        _check_alike(layers, nn.Linear, ("in_features", "out_features"))
        first = layers[0]
        out = cls(len(layers), first.in_features, first.out_features, first.bias is not None,
                  None, None, "meta", first.weight.dtype)
        return _stacked(out, layers, spec, generator)

    def forward(self, x: Tensor) -> Tensor:
        return surrogate_linear(x, self.weight, self.bias, self.spec, self.generator,
                                self.feedback, self.recorder)

    def extra_repr(self) -> str:
        return (f"ensemble={self.ensemble}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}, spec={self.spec}")


class _EnsembleSurrogateConvNd(_EnsembleLayer):
    """``e`` independent ``nn.ConvNd`` layers: ``weight`` (e, o, c/groups, *kernel), ``bias``
    (e, o); input (e, n, c, *spatial) → output (e, n, o, *spatial'). Arguments as
    ``nn.ConvNd`` (every padding and padding mode), computed as one convolution with
    ``e·groups`` groups."""

    dim: ClassVar[int]

    def __init__(self, ensemble: int, in_channels: int, out_channels: int,
                 kernel_size: int | tuple[int, ...], stride: int | tuple[int, ...] = 1,
                 padding: int | tuple[int, ...] | str = 0, dilation: int | tuple[int, ...] = 1,
                 groups: int = 1, bias: bool = True, spec: SpecLike | None = None,
                 generator: Generators | int = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, padding_mode: str = "zeros"):
        super().__init__()
        _check_members(ensemble, generator)
        check_int(in_channels, "in_channels")
        check_int(out_channels, "out_channels")
        check_int(groups, "groups", low=1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        check_choice(padding_mode, PADDING_MODES, "padding_mode")
        tup = _ntuple(self.dim)
        if isinstance(padding, str):
            check_choice(padding, ("same", "valid"), "string padding")
            if padding == "same" and any(v != 1 for v in tup(stride)):
                raise ValueError(f"padding='same' needs stride 1 (as in torch); got stride "
                                 f"{stride}")
        self.ensemble, self.in_channels, self.out_channels = ensemble, in_channels, out_channels
        self.kernel_size, self.stride = tuple(tup(kernel_size)), tuple(tup(stride))
        self.padding = padding if isinstance(padding, str) else tuple(tup(padding))
        self.dilation, self.groups, self.padding_mode = tuple(tup(dilation)), groups, padding_mode
        kw = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(ensemble, out_channels, in_channels // groups,
                                               *self.kernel_size, **kw))
        self.bias = nn.Parameter(torch.empty(ensemble, out_channels, **kw)) if bias else None
        self.reset_parameters()
        self._init_surrogate(spec, generator)

    @classmethod
    def from_convs(cls, layers: Sequence[nn.Module], spec: SpecLike | None = None,
                   generator: Generators | int = None) -> _EnsembleSurrogateConvNd:
        """Stack the parameters of ``layers`` (``nn.Conv{dim}d`` of one configuration, copied;
        built on the meta device, so no random numbers are drawn but the feedback state)."""
        if not layers:
            raise ValueError("from_convs needs at least one convolution; got none")
        _check_members(len(layers), generator)
        torch_conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[cls.dim]
        _check_alike(layers, torch_conv, ("in_channels", "out_channels", "kernel_size",
                                          "stride", "padding", "dilation", "groups",
                                          "padding_mode"))
        f = layers[0]
        out = cls(len(layers), f.in_channels, f.out_channels, f.kernel_size, f.stride,
                  f.padding, f.dilation, f.groups, f.bias is not None, None, None, "meta",
                  f.weight.dtype, f.padding_mode)
        return _stacked(out, layers, spec, generator)

    def forward(self, x: Tensor) -> Tensor:
        return surrogate_conv(x, self.weight, self.bias, self.spec, self.generator,
                              self.feedback, self.recorder, self.stride, self.padding,
                              self.dilation, self.groups, self.padding_mode, ensemble=True)

    def extra_repr(self) -> str:
        return (f"ensemble={self.ensemble}, {self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, padding_mode={self.padding_mode}, "
                f"spec={self.spec}")


class EnsembleSurrogateConv1d(_EnsembleSurrogateConvNd):
    """``e`` ``nn.Conv1d``: input (e, n, c, l) → (e, n, o, l')."""

    dim = 1


class EnsembleSurrogateConv2d(_EnsembleSurrogateConvNd):
    """``e`` ``nn.Conv2d``: input (e, n, c, h, w) → (e, n, o, h', w')."""

    dim = 2


class EnsembleSurrogateConv3d(_EnsembleSurrogateConvNd):
    """``e`` ``nn.Conv3d``: input (e, n, c, d, h, w) → (e, n, o, d', h', w')."""

    dim = 3
