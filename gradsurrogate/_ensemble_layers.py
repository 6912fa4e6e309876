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

from ._conv import surrogate_conv
from .backward import Generators
from .functional import surrogate_linear
from .layers import SpecLike, SurrogateMixin
from .registry import check_int

__all__ = ["EnsembleSurrogateConv1d", "EnsembleSurrogateConv2d", "EnsembleSurrogateConv3d",
           "EnsembleSurrogateLinear"]


def _check_members(ensemble: int, generator: Generators | int) -> None:
    check_int(ensemble, "ensemble", low=1)
    if isinstance(generator, Sequence) and len(generator) != ensemble:
        raise ValueError(f"need one generator per member ({ensemble}); got {len(generator)}")


def _stacked(out: SurrogateMixin, layers: Sequence[nn.Module], spec: SpecLike | None,
             generator: Generators | int) -> SurrogateMixin:
    """``out`` (built on the meta device: no RNG draws) given the stacked parameters of
    ``layers``, then ``spec`` (a feedback matrix is drawn from ``generator`` here)."""
    out.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]).clone())
    if layers[0].bias is not None:
        out.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone())
    out.set_spec(spec, generator)
    return out


class EnsembleSurrogateLinear(SurrogateMixin):
    """``e`` independent linear layers in one batched computation.

    ``weight`` (e, o, i), ``bias`` (e, o); input (e, *, i) → output (e, *, o). Member ``k`` is
    initialised like ``nn.Linear`` and, given one generator per member, draws its backward noise
    from ``generator[k]`` — the same numbers as ``e`` separate :class:`SurrogateLinear` layers
    seeded alike. Flip/blend parameters may be (e,) tensors (one value per member).
    """

    is_ensemble = True

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

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.in_features)  # nn.Linear's kaiming_uniform(a=√5) bound
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linears(cls, layers: Sequence[nn.Linear], spec: SpecLike | None = None,
                     generator: Generators | int = None) -> EnsembleSurrogateLinear:
        """Stack the parameters of ``layers`` (copied) into one ensemble layer."""
        if not layers:
            raise ValueError("from_linears needs at least one nn.Linear layer; got none")
        _check_members(len(layers), generator)
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


class _EnsembleSurrogateConvNd(SurrogateMixin):
    """``e`` independent ``nn.ConvNd`` layers: ``weight`` (e, o, c/groups, *kernel), ``bias``
    (e, o); input (e, n, c, *spatial) → output (e, n, o, *spatial'). Arguments as
    ``nn.ConvNd`` (every padding and padding mode), computed as one convolution with
    ``e·groups`` groups."""

    is_ensemble = True
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
        tup = _ntuple(self.dim)
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

    def reset_parameters(self) -> None:
        # nn.ConvNd's kaiming_uniform(a=√5) bound, per member
        bound = 1 / math.sqrt(self.weight[0, 0].numel())
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_convs(cls, layers: Sequence[nn.Module], spec: SpecLike | None = None,
                   generator: Generators | int = None) -> _EnsembleSurrogateConvNd:
        """Stack the parameters of ``layers`` (``nn.ConvNd`` of one shape, copied)."""
        if not layers:
            raise ValueError("from_convs needs at least one convolution; got none")
        _check_members(len(layers), generator)
        f = layers[0]
        out = cls(len(layers), f.in_channels, f.out_channels, f.kernel_size, f.stride,
                  f.padding, f.dilation, f.groups, f.bias is not None, None, None, "meta",
                  f.weight.dtype, f.padding_mode)
        out.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]).clone())
        if f.bias is not None:
            out.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone())
        out.set_spec(spec, generator)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return surrogate_conv(x, self.weight, self.bias, self.spec, self.generator,
                              self.feedback, self.recorder, self.stride, self.padding,
                              self.dilation, self.groups, self.padding_mode, ensemble=True)

    def extra_repr(self) -> str:
        return (f"ensemble={self.ensemble}, {self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"groups={self.groups}, bias={self.bias is not None}, spec={self.spec}")


class EnsembleSurrogateConv1d(_EnsembleSurrogateConvNd):
    """``e`` ``nn.Conv1d``: input (e, n, c, l) → (e, n, o, l')."""

    dim = 1


class EnsembleSurrogateConv2d(_EnsembleSurrogateConvNd):
    """``e`` ``nn.Conv2d``: input (e, n, c, h, w) → (e, n, o, h', w')."""

    dim = 2


class EnsembleSurrogateConv3d(_EnsembleSurrogateConvNd):
    """``e`` ``nn.Conv3d``: input (e, n, c, d, h, w) → (e, n, o, d', h', w')."""

    dim = 3
