"""Tensor helpers shared by the backward modes: seeded noise and per-member reductions.

``ensemble=True`` means dim 0 of a tensor indexes independent ensemble members ``e``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["Generators", "draw_dtype", "mean_abs", "per_member", "uniform_like"]

#: One generator, or one per ensemble member (index ``e`` of the leading dimension).
Generators = torch.Generator | Sequence[torch.Generator] | None


def draw_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype random numbers are drawn in for tensors of ``dtype``: at least ``float32``."""
    return torch.promote_types(dtype, torch.float32)


def uniform_like(t: Tensor, generator: Generators, ensemble: bool = False) -> Tensor:
    """Uniform [0, 1) noise shaped like ``t``, drawn from ``generator``.

    With a sequence of generators (ensemble mode) member ``e`` draws ``t[e]`` from
    ``generator[e]``, so an ensemble reproduces the numbers of separate runs bitwise. Noise is
    drawn on the generator's device and moved, so a CPU generator gives the same numbers on
    every device. Noise is drawn in ``float32`` for half-precision ``t`` (``float64`` stays
    ``float64``), so a threshold ``u < p`` means the same in every dtype: a bfloat16 ``u`` takes
    only 2⁸ values in [0.5, 1) and would turn ``p = 0.001`` into a 0.29% rate.
    """
    dtype = draw_dtype(t.dtype)
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = t.device if generator is None else generator.device
        u = torch.rand(t.shape, generator=generator, dtype=dtype, device=gen_device)
        return u.to(t.device)
    if not ensemble or len(generator) != t.shape[0]:
        raise ValueError(
            f"a sequence of {len(generator)} generators needs an ensemble tensor with that many "
            f"members in dim 0; got shape {tuple(t.shape)}"
        )
    gen_device = generator[0].device
    if any(g.device != gen_device for g in generator):
        return torch.stack([uniform_like(t[e], g) for e, g in enumerate(generator)])
    # One buffer filled member by member: the numbers of torch.rand, without a stack per call.
    u = torch.empty(t.shape, dtype=dtype, device=gen_device)
    for e, g in enumerate(generator):
        u[e].uniform_(generator=g)
    return u.to(t.device)


def per_member(value: float | Tensor, t: Tensor, ensemble: bool) -> float | Tensor:
    """Broadcast a scalar or per-member (E,) parameter against ``t`` (E, ...)."""
    if isinstance(value, Tensor) and value.dim() > 0:
        if not ensemble or value.shape[0] != t.shape[0]:
            raise ValueError(
                f"a per-member parameter of shape {tuple(value.shape)} needs an ensemble tensor "
                f"with {value.shape[0]} members in dim 0; got shape {tuple(t.shape)}"
            )
        return value.to(device=t.device, dtype=t.dtype).reshape(-1, *([1] * (t.dim() - 1)))
    return value


def mean_abs(t: Tensor, ensemble: bool = False) -> Tensor:
    """Mean magnitude of ``t`` (per member along dim 0 when ``ensemble``), keeping dims."""
    if ensemble:
        return t.abs().mean(dim=tuple(range(1, t.dim())), keepdim=True)
    return t.abs().mean()
