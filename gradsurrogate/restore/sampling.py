"""Sampling of the triples ``(α, ∇_f, dα)`` behind the scalar equations ``g(∇_f, α)·dα ≈ ∇_f·df``.

* points ``α`` (n, i): a named distribution (``gaussian``, ``uniform``), a data tensor
  streamed in reshuffled passes, or any callable ``(n, generator) -> (n, i)``;
* cotangents ``∇_f`` (n, c, o): ``gaussian``, ``rademacher`` or ``basis`` (the ``o`` unit
  vectors), or real gradients supplied by the caller;
* directions ``dα`` (n, k, i): supported on one random subspace of ``dim_sample`` coordinates
  per minibatch (the reference's random-subspace sampling), entries ``gaussian``,
  ``rademacher`` or ``coordinate`` (distinct unit vectors of the subspace).

All draws come from an explicit ``torch.Generator`` (drawn on the generator's device, then moved
to the requested device), so one seed gives the same numbers everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..registry import check_choice, check_int, check_number

__all__ = [
    "ALPHA_DISTS",
    "COTANGENT_DISTS",
    "DIRECTION_DISTS",
    "SUBSPACE_MODES",
    "AlphaSampler",
    "StreamAlpha",
    "SubspaceCycler",
    "check_dim_sample",
    "get_alpha_sampler",
    "normalised_epochs",
    "sample_cotangents",
    "sample_directions",
]

#: ``sampler(n, generator) -> α (n, i)``.
AlphaSampler = Callable[[int, torch.Generator], Tensor]

ALPHA_DISTS = ("gaussian", "uniform")
COTANGENT_DISTS = ("gaussian", "rademacher", "basis")
DIRECTION_DISTS = ("gaussian", "rademacher", "coordinate")
#: how the random subspace of each minibatch is chosen: ``cycle`` walks through a random
#: permutation of the coordinates (every coordinate once per ``ceil(i/dim_sample)`` minibatches,
#: i.e. without replacement), ``random`` draws each subspace independently (with replacement
#: across minibatches: some coordinates are missed for long stretches)
SUBSPACE_MODES = ("cycle", "random")


class SubspaceCycler:
    """Subspaces of ``dim_sample`` of ``dim_in`` coordinates, cycled without replacement.

    Each call returns the next ``dim_sample`` entries of a random permutation; when fewer are
    left they are completed from a fresh permutation (excluding those already taken, so one
    subspace never repeats a coordinate). ``mode="random"`` draws every subspace afresh.
    """

    def __init__(self, dim_in: int, dim_sample: int, mode: str = "cycle") -> None:
        self.dim_in, self.dim_sample = dim_in, check_dim_sample(dim_sample, dim_in)
        self.mode = check_choice(mode, SUBSPACE_MODES, "subspace mode")
        self._left: list[int] = []

    def __call__(self, generator: torch.Generator | None = None) -> Tensor:
        gdev = generator.device if generator is not None else None
        if self.mode == "random":
            return torch.randperm(self.dim_in, generator=generator, device=gdev)[
                :self.dim_sample].sort().values.cpu()
        take = self._left[:self.dim_sample]
        self._left = self._left[self.dim_sample:]
        if len(take) < self.dim_sample:
            perm = torch.randperm(self.dim_in, generator=generator, device=gdev).tolist()
            fresh = [c for c in perm if c not in set(take)]
            need = self.dim_sample - len(take)
            take, self._left = take + fresh[:need], fresh[need:]
        return torch.tensor(sorted(take))


def _draw(fn: Callable[..., Tensor], shape: tuple[int, ...], generator: torch.Generator | None,
          dtype: torch.dtype, device: torch.device | str | None) -> Tensor:
    gen_device = generator.device if generator is not None else device
    return fn(shape, generator=generator, dtype=dtype, device=gen_device).to(device)


def _rademacher(shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype,
                device: torch.device | str | None) -> Tensor:
    gen_device = generator.device if generator is not None else device
    bits = torch.randint(0, 2, shape, generator=generator, device=gen_device)
    return (2 * bits - 1).to(device=device, dtype=dtype)


def check_dim_sample(dim_sample: int, dim_in: int) -> int:
    """``dim_sample`` must be an integer in ``[1, dim_in]``."""
    if isinstance(dim_sample, bool) or not isinstance(dim_sample, int):
        raise ValueError(f"dim_sample must be an integer in [1, {dim_in}]; got {dim_sample!r}")
    if not 1 <= dim_sample <= dim_in:
        raise ValueError(
            f"dim_sample={dim_sample} is out of range: it must lie in [1, dim_in={dim_in}] "
            "(directions live in a subspace of dim_sample of the dim_in input coordinates)"
        )
    return dim_sample


def normalised_epochs(dim_in: int, dim_out: int, dim_sample: int, scale: float = 1.0) -> int:
    """Epoch count proportional to ``dim_in·dim_out / dim_sample`` (the reference's rule).

    ``ceil(scale · dim_in · dim_out / dim_sample)``, at least 1: the number of unknowns of the
    Jacobian divided by the coordinates sampled per minibatch.
    """
    check_dim_sample(dim_sample, dim_in)
    check_number(scale, "epoch_scale")
    return max(1, math.ceil(scale * dim_in * dim_out / dim_sample))


class StreamAlpha:
    """Stream rows of a data tensor (N, i) in passes reshuffled by the generator."""

    def __init__(self, data: Tensor) -> None:
        if data.dim() != 2 or data.shape[0] == 0:
            raise ValueError(f"a data stream needs a non-empty (N, dim_in) tensor; got "
                             f"{tuple(data.shape)}")
        self.data = data
        self._order: Tensor | None = None
        self._pos = 0

    def __call__(self, n: int, generator: torch.Generator) -> Tensor:
        out = []
        while n > 0:
            if self._order is None or self._pos >= len(self._order):
                self._order = torch.randperm(len(self.data), generator=generator,
                                             device=generator.device).to(self.data.device)
                self._pos = 0
            take = self._order[self._pos:self._pos + n]
            self._pos += len(take)
            n -= len(take)
            out.append(self.data[take])
        return torch.cat(out)


def get_alpha_sampler(source: str | Tensor | AlphaSampler, dim_in: int, scale: float = 1.0,
                      dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None) -> AlphaSampler:
    """A sampler of points ``α`` from a name (``gaussian`` N(0, scale²), ``uniform`` on
    ``[-scale, scale]``), a data tensor (N, dim_in) or a callable (returned as is).
    ``dtype`` defaults to ``torch.get_default_dtype()`` (read when the sampler is made)."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if isinstance(source, Tensor):
        if source.dim() != 2 or source.shape[1] != dim_in:
            raise ValueError(f"alpha data must be (N, {dim_in}); got {tuple(source.shape)}")
        return StreamAlpha(source)
    if callable(source):
        return source
    name = check_choice(source, ALPHA_DISTS, "alpha distribution")
    if name == "gaussian":
        return lambda n, g: scale * _draw(torch.randn, (n, dim_in), g, dtype, device)
    return lambda n, g: scale * (2 * _draw(torch.rand, (n, dim_in), g, dtype, device) - 1)


def sample_cotangents(n: int, c: int, dim_out: int, dist: str = "gaussian",
                      generator: torch.Generator | None = None,
                      dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None) -> Tensor:
    """Cotangents ``∇_f`` (n, c, o): Gaussian, Rademacher, or the ``o`` basis vectors
    (``basis`` needs ``c == dim_out``; ``u_{n,c} = e_c``). ``dtype``: default dtype if None."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    check_choice(dist, COTANGENT_DISTS, "cotangent distribution")
    if dist == "basis":
        if c != dim_out:
            raise ValueError(f"cotangents 'basis' need cotangents == dim_out={dim_out}; got {c}")
        return torch.eye(dim_out, dtype=dtype, device=device).expand(n, c, dim_out).clone()
    if dist == "rademacher":
        return _rademacher((n, c, dim_out), generator, dtype, device)
    return _draw(torch.randn, (n, c, dim_out), generator, dtype, device)


def sample_directions(n: int, k: int, dim_in: int, dim_sample: int, dist: str = "gaussian",
                      generator: torch.Generator | None = None,
                      dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None,
                      subspace: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Directions ``dα`` (n, k, i) in one random subspace of ``dim_sample`` coordinates
    (or the given ``subspace``: sorted coordinates, e.g. from a :class:`SubspaceCycler`).

    Returns ``(dα, S)`` with ``S`` (dim_sample,) the sorted coordinates of the subspace (shared
    by the whole minibatch); ``dα[..., j] = 0`` for ``j ∉ S``. ``coordinate`` directions are
    ``k ≤ dim_sample`` distinct unit vectors ``e_s``, ``s ∈ S`` (the same for all points).
    ``dtype`` defaults to ``torch.get_default_dtype()``.
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    check_dim_sample(dim_sample, dim_in)
    check_choice(dist, DIRECTION_DISTS, "direction distribution")
    check_int(k, "directions per point", 1)
    gdev = generator.device if generator is not None else device
    if subspace is None:
        perm = torch.randperm(dim_in, generator=generator, device=gdev)
        subspace = perm[:dim_sample].sort().values
    elif subspace.shape != (dim_sample,):
        raise ValueError(f"subspace must hold dim_sample={dim_sample} coordinates; got "
                         f"{tuple(subspace.shape)}")
    subspace = subspace.to(device)
    if dist == "coordinate":
        if k > dim_sample:
            raise ValueError(f"'coordinate' directions need directions <= dim_sample="
                             f"{dim_sample}; got {k}")
        coords = subspace[torch.randperm(dim_sample, generator=generator, device=gdev)[:k]
                          .to(device)]
        d = torch.zeros(k, dim_in, dtype=dtype, device=device)
        d[torch.arange(k, device=device), coords] = 1
        return d.expand(n, k, dim_in).clone(), subspace
    if dist == "rademacher":
        vals = _rademacher((n, k, dim_sample), generator, dtype, device)
    else:
        vals = _draw(torch.randn, (n, k, dim_sample), generator, dtype, device)
    d = torch.zeros(n, k, dim_in, dtype=dtype, device=device)
    d[..., subspace] = vals
    return d, subspace
