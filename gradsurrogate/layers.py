"""Drop-in surrogate layers (:func:`convert` and its registry live in :mod:`.convert`).

:class:`SurrogateLinear` and :class:`SurrogateConv1d`/``2d``/``3d`` subclass ``nn.Linear`` /
``nn.ConvNd``: same parameters, same ``state_dict`` keys, same initialisation and forward
numbers (every ``padding`` and ``padding_mode`` of torch); only the backward follows their
``spec``. :class:`EnsembleSurrogateLinear` stacks ``e`` linear layers into one batched
computation (weights (e, o, i)) for vectorised sweeps.

State (see :class:`SurrogateMixin`): a fixed feedback matrix is the persistent buffer
``feedback``; the state of a generator that random modes draw from is saved as
``generator_state``; ``copy.deepcopy`` forks the generator (the copy draws different noise).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ._conv import surrogate_conv
from .backward import BackwardSpec, FeedbackMode, Generators
from .functional import Recorder, surrogate_linear

__all__ = [
    "EnsembleSurrogateConv1d",
    "EnsembleSurrogateConv2d",
    "EnsembleSurrogateConv3d",
    "EnsembleSurrogateLinear",
    "SurrogateConv1d",
    "SurrogateConv2d",
    "SurrogateConv3d",
    "SurrogateLinear",
    "SurrogateMixin",
    "make_generator",
]

SpecLike = BackwardSpec | str | dict
_GEN_KEY = "generator_state"


def make_generator(seed: int | torch.Generator | None,
                   device: torch.device | str = "cpu") -> torch.Generator | None:
    """``None`` → global RNG; an int → a fresh seeded generator; a generator is kept."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"generator must be None, an int seed or a torch.Generator; got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


def _stateful(mode: object) -> bool:
    """True for a weight mode that keeps a fixed per-layer state (the ``feedback`` buffer)."""
    return isinstance(mode, FeedbackMode) and bool(getattr(mode, "stateful", False))


def _fork(gen: torch.Generator, k: int) -> torch.Generator:
    """A new generator seeded from a draw of a *copy* of ``gen`` mixed with ``k``: the original
    is untouched, the fork is deterministic and different from it (and from fork ``k' != k``)."""
    probe = torch.Generator(device=gen.device)
    probe.set_state(gen.get_state())
    draw = int(torch.randint(0, 2**62, (), generator=probe, device=gen.device))
    return torch.Generator(device=gen.device).manual_seed((draw + 0x9E3779B97F4A7C15 * (k + 1))
                                                          % 2**63)


def _state_generator(gen: Generators) -> Generators:
    """The generator a fixed state (feedback matrix) is drawn from: a new one seeded by one draw
    of ``gen`` (which advances it), per member for a sequence; ``None`` stays ``None``.

    Drawing the state straight from ``gen`` repeats the weights: ``torch.manual_seed(0)`` then
    ``SurrogateLinear(..., spec="weight=fa", generator=0)`` (or a bias-free CNN converted with
    ``generator=0``) drew ``B`` from the very stream the weights came from, so ``B = W`` and
    feedback alignment was backprop. The derived stream is unrelated to ``gen``'s own.
    """
    if gen is None:
        return None
    if isinstance(gen, torch.Generator):
        seed = int(torch.randint(0, 2**62, (), generator=gen, device=gen.device))
        return torch.Generator(device=gen.device).manual_seed(seed)
    return [_state_generator(g) for g in gen]


class SurrogateMixin(nn.Module):
    """Shared state of surrogate layers: ``spec``, ``generator``, fixed ``feedback``, recorder.

    * ``feedback``: persistent buffer (in ``state_dict`` only while a stateful mode such as
      ``weight=random`` is set, so an exact layer keeps torch's keys). It is drawn from
      ``generator`` when such a spec is first set, redrawn when the weight mode changes (or by
      :meth:`redraw`), dropped when the spec no longer needs it. Loading a ``state_dict``
      restores it; loading one without it (a plain torch checkpoint) keeps the current one.
    * ``generator_state``: while the spec draws noise in backward (``spec.is_random``) and the
      layer holds a generator, its state is saved too, so a resumed run draws the same noise.
      Loading it into a layer without a generator gives the layer a CPU generator.
    * ``copy.deepcopy`` forks the generator (:func:`_fork`): the copy draws noise different
      from the original's, deterministically; the original's stream is untouched. Pickling
      (``torch.save(model)``) keeps the exact state.
    """

    weight: Tensor
    feedback: Tensor | None
    #: dim 0 of ``weight`` indexes ensemble members
    is_ensemble: bool = False

    def _init_surrogate(self, spec: SpecLike | None, generator: Generators | int) -> None:
        self.generator = self._check_generator(generator)
        self.register_buffer("feedback", None, persistent=True)
        self.recorder: Recorder | None = None
        self._forks = 0
        self._spec = BackwardSpec()
        self.spec = spec  # type: ignore[assignment]

    def _check_generator(self, generator: Generators | int) -> Generators:
        if isinstance(generator, (list, tuple)):
            if not all(isinstance(g, torch.Generator) for g in generator):
                raise ValueError(
                    f"a generator sequence must hold torch.Generators; got {generator!r}"
                )
            return list(generator)
        # an int seed makes a generator on the weight's device (CPU while on "meta")
        device = self.weight.device if self.weight.device.type != "meta" else "cpu"
        return make_generator(generator, device)

    @property
    def spec(self) -> BackwardSpec:
        return self._spec

    @spec.setter
    def spec(self, value: SpecLike | None) -> None:
        self.set_spec(value)

    def set_spec(self, value: SpecLike | None, generator: Generators | int = None) -> None:
        """Set the spec; with ``generator`` (not ``None``) also adopt it and redraw the state.

        A stateful weight mode draws its state when there is none, when it replaces another
        stateful mode (``random`` -> ``random:2``, ``fa`` -> ``frsf``), when the weight shape
        changed, or when a generator is given; otherwise (e.g. a state just loaded from a
        ``state_dict``) the state is kept.
        """
        spec = BackwardSpec.coerce(value)
        old = self._spec.weight
        if generator is not None:
            self.generator = self._check_generator(generator)
        self._spec = spec
        mode = spec.weight
        if not _stateful(mode):
            self.feedback = None
        elif (generator is not None or self.feedback is None or (_stateful(old) and mode != old)
              or self.feedback.shape != self.weight.shape):
            self.redraw()

    def redraw(self) -> None:
        """Draw a fresh fixed state (feedback matrix) for the current spec from a stream seeded
        by one draw of ``generator`` (:func:`_state_generator`; ``None``: the global RNG)."""
        mode = self._spec.weight
        if isinstance(mode, FeedbackMode):
            state = mode.init_state(self.weight.detach(), _state_generator(self.generator),
                                    self.is_ensemble)
            self.feedback = None if state is None else state.to(self.weight.dtype)

    # --- state_dict: feedback compat and generator state -------------------------------------
    def _gen_list(self) -> list[torch.Generator]:
        g = self.generator
        return [] if g is None else [g] if isinstance(g, torch.Generator) else list(g)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str,
                            keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        gens = self._gen_list()
        if gens and self._spec.is_random:
            destination[prefix + _GEN_KEY] = torch.stack([g.get_state() for g in gens])

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              local_metadata: dict[str, Any], strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        fb_key, gen_key = prefix + "feedback", prefix + _GEN_KEY
        if fb_key in state_dict and self.feedback is None:  # a buffer set to None is not loaded
            self.feedback = state_dict[fb_key].detach().clone().to(self.weight.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if fb_key in missing_keys:  # a torch checkpoint has no feedback: keep ours
            missing_keys.remove(fb_key)
        if gen_key in state_dict:
            if gen_key in unexpected_keys:
                unexpected_keys.remove(gen_key)
            states = state_dict[gen_key]
            gens = self._gen_list() or [torch.Generator() for _ in range(states.shape[0])]
            if len(gens) != states.shape[0]:
                error_msgs.append(f"{gen_key}: {states.shape[0]} generator states for "
                                  f"{len(gens)} generators")
                return
            for g, st in zip(gens, states):
                g.set_state(st.clone())
            if self.generator is None:
                self.generator = gens[0] if len(gens) == 1 else gens

    def __deepcopy__(self, memo: dict[int, Any]) -> SurrogateMixin:
        self._forks = getattr(self, "_forks", 0) + 1
        for k, g in enumerate(self._gen_list()):
            if id(g) not in memo:  # a generator shared by several layers is forked once
                memo[id(g)] = _fork(g, self._forks * 1_000_003 + k)
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = copy.deepcopy(value, memo)
        new._forks = 0
        return new

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, spec={self.spec}"


class SurrogateLinear(SurrogateMixin, nn.Linear):
    """``nn.Linear`` whose backward follows ``spec``. Input (*, i) → output (*, o)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 spec: SpecLike | None = None, generator: torch.Generator | int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        self._init_surrogate(spec, generator)

    def forward(self, x: Tensor) -> Tensor:
        return surrogate_linear(x, self.weight, self.bias, self.spec, self.generator,
                                self.feedback, self.recorder)


class _SurrogateConvNd(SurrogateMixin):
    """Every surrogate convolution: ``nn.ConvNd``'s arguments (any ``padding`` incl. "same"/
    "valid", any ``padding_mode``, ``groups``) plus ``spec``/``generator``; torch's forward
    numbers, the backward of ``spec``. Input (n, c, *spatial) or unbatched (c, *spatial)."""

    _base: type[nn.Module]

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, ...],
                 stride: int | tuple[int, ...] = 1, padding: int | tuple[int, ...] | str = 0,
                 dilation: int | tuple[int, ...] = 1, groups: int = 1, bias: bool = True,
                 spec: SpecLike | None = None, generator: torch.Generator | int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 padding_mode: str = "zeros"):
        self._base.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                            dilation, groups, bias, padding_mode, device=device, dtype=dtype)
        self._init_surrogate(spec, generator)

    def forward(self, x: Tensor) -> Tensor:
        return surrogate_conv(x, self.weight, self.bias, self.spec, self.generator,
                              self.feedback, self.recorder, self.stride, self.padding,
                              self.dilation, self.groups, self.padding_mode)


class SurrogateConv1d(_SurrogateConvNd, nn.Conv1d):
    """``nn.Conv1d`` whose backward follows ``spec``: input (n, c, l) or (c, l)."""

    _base = nn.Conv1d


class SurrogateConv2d(_SurrogateConvNd, nn.Conv2d):
    """``nn.Conv2d`` whose backward follows ``spec``: input (n, c, h, w) or (c, h, w)."""

    _base = nn.Conv2d


class SurrogateConv3d(_SurrogateConvNd, nn.Conv3d):
    """``nn.Conv3d`` whose backward follows ``spec``: input (n, c, d, h, w) or (c, d, h, w)."""

    _base = nn.Conv3d


# The ensemble layers live in ._ensemble_layers (listed in __all__ above).
from ._ensemble_layers import (  # noqa: E402
    EnsembleSurrogateConv1d,
    EnsembleSurrogateConv2d,
    EnsembleSurrogateConv3d,
    EnsembleSurrogateLinear,
)

# convert and the registry moved to .convert; still importable from here (not re-listed in
# __all__: .convert owns them).
from .convert import (  # noqa: E402, F401
    SURROGATES,
    ConversionReport,
    convert,
    convert_with_report,
    exact_backward,
    register_surrogate,
)
