"""Backward modes: how one backward quantity (a gradient, ``W`` or ``x``) is perturbed.

A linear map ``y = x Wᵀ + b`` has the exact backward

    grad_input  = grad_output @ W           (n o, o i -> n i)
    grad_weight = grad_outputᵀ @ x          (n o, n i -> o i)

A :class:`BackwardSpec` corrupts or replaces four quantities of it independently:

* ``grad_input``  — the gradient handed to the previous layer,
* ``grad_weight`` — the gradient accumulated into ``W`` (and ``b``),
* ``weight``      — the ``W`` used to form ``grad_input`` (feedback weights),
* ``input``       — the saved ``x`` used to form ``grad_weight``.

Every mode is a small frozen dataclass with one method, :meth:`BackwardMode.apply`, that maps a
tensor ``t`` to its perturbed version. Modes are parsed from strings such as ``"flip:0.3"``,
``"sign"``, ``"sign:rescale"``, ``"blend:0.5"`` through a registry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from ..registry import check_choice, check_number, lookup, parse_arg
from .draws import Generators, mean_abs, per_member, uniform_like

__all__ = [
    "MODES",
    "TARGETS",
    "BackwardMode",
    "Blend",
    "Exact",
    "FeedbackMode",
    "Flip",
    "Learned",
    "NoGrad",
    "RandomFeedback",
    "Sign",
    "accepted_modes",
    "make_mode",
    "parse_mode",
    "register_mode",
]

TARGETS: tuple[str, ...] = ("grad_input", "grad_weight", "weight", "input")


def _check_unit_interval(name: str, value: float | str | Tensor) -> float | Tensor:
    """``value`` as a float (or a detached per-member tensor) in [0, 1]; else ``ValueError``."""
    if isinstance(value, Tensor) and value.dim() == 0:
        value = value.item()
    if not isinstance(value, Tensor):
        return check_number(value, name, low=0.0, high=1.0, low_open=False)
    if value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"{name} must be a real tensor of numbers in [0, 1]; got {value!r}")
    bad = ~((value >= 0) & (value <= 1))  # also catches nan
    if bool(bad.any()):
        first = value[bad].flatten()[0].item()
        raise ValueError(f"{name} must be a finite number in [0, 1]; got {first!r} "
                         f"in {value.tolist()!r}")
    return value.detach()


def _num(v: float) -> str:
    """Shortest string that reads back as the same float (``1.0`` -> ``"1"``)."""
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


def _fmt(value: float | Tensor) -> str:
    if isinstance(value, Tensor) and value.dim() > 0:
        return "[" + ",".join(_num(v) for v in value.tolist()) + "]"
    return _num(value)


@dataclasses.dataclass(frozen=True)
class BackwardMode:
    """A transformation ``t -> t'`` of one backward quantity.

    Subclasses set ``name`` (the string key) and ``targets`` (where the mode makes sense) and
    override :meth:`apply`. ``ensemble=True`` means dim 0 of ``t`` indexes independent ensemble
    members: reductions (``mean|t|``) and per-member parameters follow it.
    """

    name: ClassVar[str]
    targets: ClassVar[frozenset[str]] = frozenset(TARGETS)
    random: ClassVar[bool] = False

    def apply(self, t: Tensor, generator: Generators = None, ensemble: bool = False) -> Tensor:
        raise NotImplementedError

    @property
    def is_exact(self) -> bool:
        return False

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_arg(cls, arg: str | None) -> BackwardMode:
        """Build from the text after ``name:`` (``None`` when there is none)."""
        if arg is not None:
            raise ValueError(f"mode {cls.name!r} takes no argument; got {cls.name}:{arg}")
        return cls()


@dataclasses.dataclass(frozen=True)
class Exact(BackwardMode):
    """The true quantity: ``t' = t``."""

    name: ClassVar[str] = "exact"

    def apply(self, t: Tensor, generator: Generators = None, ensemble: bool = False) -> Tensor:
        return t

    @property
    def is_exact(self) -> bool:
        return True


class _UnitParamMode(BackwardMode):
    """A mode with one parameter in [0, 1] (float, or (E,) tensor per ensemble member).

    Subclasses name the dataclass field in ``param`` and describe it in ``param_doc``; parsing
    (``name:value``), validation, ``str``, equality and ``is_exact`` (parameter 0) are shared.
    """

    param: ClassVar[str]
    param_doc: ClassVar[str]

    def __post_init__(self) -> None:
        value = _check_unit_interval(f"mode {self.name!r}: {self.param_doc}",
                                     getattr(self, self.param))
        object.__setattr__(self, self.param, value)

    def value(self, t: Tensor, ensemble: bool) -> float | Tensor:
        """The parameter broadcast against ``t``."""
        return per_member(getattr(self, self.param), t, ensemble)

    @property
    def is_exact(self) -> bool:
        v = getattr(self, self.param)
        return not isinstance(v, Tensor) and v == 0.0

    def __str__(self) -> str:
        return f"{self.name}:{_fmt(getattr(self, self.param))}"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    @classmethod
    def from_arg(cls, arg: str | None) -> BackwardMode:
        if arg is None:
            raise ValueError(
                f"mode {cls.name!r} needs a {cls.param_doc}, e.g. '{cls.name}:0.3' "
                f"({cls.param} in [0, 1])"
            )
        return cls(arg)  # validated (and read as a number) in __post_init__


@dataclasses.dataclass(frozen=True, eq=False)
class Flip(_UnitParamMode):
    """Independent sign flips: ``t'_k = -t_k`` with probability ``p``, redrawn every call."""

    p: float | Tensor = 0.5
    name: ClassVar[str] = "flip"
    param: ClassVar[str] = "p"
    param_doc: ClassVar[str] = "flip probability p"
    random: ClassVar[bool] = True

    def apply(self, t: Tensor, generator: Generators = None, ensemble: bool = False) -> Tensor:
        u = uniform_like(t, generator, ensemble)  # float32 at least: p means the same in bf16
        return torch.where(u < self.value(u, ensemble), -t, t)


@dataclasses.dataclass(frozen=True)
class Sign(BackwardMode):
    """Elementwise sign: ``t' = sign(t)``, or ``sign(t)·mean|t|`` with ``rescale=True``."""

    rescale: bool = False
    name: ClassVar[str] = "sign"

    def apply(self, t: Tensor, generator: Generators = None, ensemble: bool = False) -> Tensor:
        s = torch.sign(t)
        return s * mean_abs(t, ensemble) if self.rescale else s

    def __str__(self) -> str:
        return "sign:rescale" if self.rescale else "sign"

    @classmethod
    def from_arg(cls, arg: str | None) -> BackwardMode:
        option = "plain" if arg is None else arg.strip().lower()
        return cls(check_choice(option, ("plain", "rescale"), "option of mode 'sign'") == "rescale")


@dataclasses.dataclass(frozen=True, eq=False)
class Blend(_UnitParamMode):
    """Partial sign keeping: ``t' = (1-a)·t + a·sign(t)·mean|t|`` (a=0 exact, a=1 scaled sign)."""

    a: float | Tensor = 0.5
    name: ClassVar[str] = "blend"
    param: ClassVar[str] = "a"
    param_doc: ClassVar[str] = "blend amount a"

    def apply(self, t: Tensor, generator: Generators = None, ensemble: bool = False) -> Tensor:
        return torch.lerp(t, torch.sign(t) * mean_abs(t, ensemble), self.value(t, ensemble))


@dataclasses.dataclass(frozen=True)
class NoGrad(BackwardMode):
    """No gradient (``None``): ``grad_weight=none`` freezes a layer, ``grad_input=none`` cuts."""

    name: ClassVar[str] = "none"
    targets: ClassVar[frozenset[str]] = frozenset({"grad_input", "grad_weight"})

    def apply(self, t: Tensor, generator: Generators = None, ensemble: bool = False) -> Tensor:
        return torch.zeros_like(t)


class FeedbackMode(BackwardMode):
    """A mode for target ``weight`` that supplies the feedback matrix ``B`` of
    ``grad_input = grad_output @ B`` (feedback alignment and its relatives).

    The layer calls :meth:`init_state` once when the spec is set (a fixed per-layer tensor
    shaped like ``W``, kept as the layer's ``feedback`` buffer, or ``None``) and
    :meth:`matrix` at every backward call. ``apply`` is never called for these modes.
    """

    targets: ClassVar[frozenset[str]] = frozenset({"weight"})

    def init_state(self, weight: Tensor, generator: Generators = None,
                   ensemble: bool = False) -> Tensor | None:
        """Fixed state drawn once per layer (shaped like ``weight``), or ``None``."""
        return None

    def matrix(self, weight: Tensor, state: Tensor | None, generator: Generators = None,
               ensemble: bool = False) -> Tensor:
        """The ``B`` (shaped like ``weight``) used by this backward call."""
        raise NotImplementedError

    def apply(self, t: Tensor, generator: Generators = None, ensemble: bool = False) -> Tensor:
        raise RuntimeError(f"mode {self.name!r} is applied by the layer through matrix()")


@dataclasses.dataclass(frozen=True)
class RandomFeedback(FeedbackMode):
    """Feedback alignment: ``grad_input = grad_output @ B`` with a fixed random ``B``.

    ``B`` is drawn once per layer by :meth:`draw` (uniform like ``nn.Linear``'s init, bound
    ``scale/sqrt(fan_in)``) and kept by the layer. ``fa`` (:mod:`.feedback`) draws the same
    law through ``torch.nn.init`` (biotorch's numbers bitwise); this form is kept as it was.
    """

    scale: float = 1.0
    name: ClassVar[str] = "random"
    stateful: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_number(self.scale, "mode 'random': scale"))

    def draw(self, weight: Tensor, generator: Generators = None,
             ensemble: bool | None = None) -> Tensor:
        """A fresh feedback matrix shaped like ``weight``: (o, i[, kh, kw]), or (e, o, i) when
        ``ensemble`` (default: inferred from a per-member generator sequence)."""
        if ensemble is None:
            ensemble = not (generator is None or isinstance(generator, torch.Generator))
        fan_in = math.prod(weight.shape[2:] if ensemble else weight.shape[1:])
        bound = self.scale / math.sqrt(fan_in)
        u = uniform_like(weight.detach(), generator, ensemble)
        return (2 * u - 1) * bound

    def init_state(self, weight: Tensor, generator: Generators = None,
                   ensemble: bool = False) -> Tensor | None:
        return self.draw(weight, generator, ensemble)

    def matrix(self, weight: Tensor, state: Tensor | None, generator: Generators = None,
               ensemble: bool = False) -> Tensor:
        if state is None:
            raise RuntimeError(f"weight={str(self)!r} needs the layer's fixed feedback matrix")
        return state

    def __str__(self) -> str:
        return "random" if self.scale == 1.0 else f"random:{_num(self.scale)}"

    @classmethod
    def from_arg(cls, arg: str | None) -> BackwardMode:
        return cls() if arg is None else cls(arg)  # validated in __post_init__


@dataclasses.dataclass(frozen=True, eq=False)
class Learned(BackwardMode):
    """A learned surrogate supplies the backward.

    * target ``grad_input``: ``surrogate(grad_output, input) -> grad_input``,
      shapes (*, o), (*, i) -> (*, i) — it never sees ``W``;
    * target ``weight``: ``surrogate(weight) -> B`` with ``B`` shaped like ``W`` and
      ``grad_input = grad_output @ B`` (a structured surrogate ignores its argument).

    ``Learned()`` (what the string ``"learned"`` parses to) is a placeholder that must be bound
    with :meth:`bind` before a backward pass.
    """

    surrogate: Callable[..., Tensor] | None = None
    name: ClassVar[str] = "learned"
    targets: ClassVar[frozenset[str]] = frozenset({"grad_input", "weight"})

    def bind(self, surrogate: Callable[..., Tensor]) -> Learned:
        return Learned(surrogate)

    def __call__(self, *args: Tensor) -> Tensor:
        if self.surrogate is None:
            raise RuntimeError(
                "backward mode 'learned' has no surrogate: pass Learned(module) in the spec "
                "(e.g. BackwardSpec(grad_input=Learned(g))) or call spec.bind(...)"
            )
        return self.surrogate(*args)

    def apply(self, t: Tensor, generator: Generators = None, ensemble: bool = False) -> Tensor:
        return self(t)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Learned) and self.surrogate is other.surrogate

    def __hash__(self) -> int:
        return hash(("learned", id(self.surrogate)))


MODES: dict[str, type[BackwardMode]] = {
    cls.name: cls for cls in (Exact, Flip, Sign, Blend, NoGrad, RandomFeedback, Learned)
}
_SYNTAX = {
    "exact": "exact",
    "flip": "flip:P",
    "sign": "sign[:rescale]",
    "blend": "blend:A",
    "none": "none",
    "random": "random[:SCALE]",
    "learned": "learned",
}


def register_mode(cls: type[BackwardMode], syntax: str) -> type[BackwardMode]:
    """Add ``cls`` to :data:`MODES` under ``cls.name`` (``syntax`` is its help text, e.g.
    ``"fa[:kaiming|xavier]"``); the feedback-alignment family registers itself this way."""
    if cls.name in MODES and MODES[cls.name] is not cls:
        raise ValueError(f"backward mode name {cls.name!r} is taken by {MODES[cls.name]!r}")
    MODES[cls.name] = cls
    _SYNTAX[cls.name] = syntax
    return cls


def accepted_modes(target: str) -> str:
    """The syntax of the modes that apply to ``target`` (for help texts)."""
    return ", ".join(_SYNTAX[n] for n, cls in MODES.items() if target in cls.targets)


def parse_mode(value: str | BackwardMode, target: str = "grad_input") -> BackwardMode:
    """Parse ``"name"`` or ``"name:arg"`` (or pass a mode through) and check it fits ``target``.

    Every bad value is a ``ValueError`` naming it and the accepted ones (:mod:`..registry`).
    """
    check_choice(target, TARGETS, "backward target")
    if isinstance(value, BackwardMode):
        mode = value
    elif isinstance(value, str):
        name, arg = parse_arg(value, f"backward mode for {target}")
        mode = lookup(MODES, name, "backward mode").from_arg(arg)
    else:
        raise ValueError(f"a backward mode must be a string or a BackwardMode; got {value!r}")
    if target not in mode.targets:
        fits = ", ".join(n for n, cls in MODES.items() if target in cls.targets)
        raise ValueError(f"backward mode {str(mode)!r} does not apply to {target}; "
                         f"accepted: {fits}")
    return mode


def make_mode(name: str, p: float | None = None, target: str = "grad_input") -> BackwardMode:
    """Mode from a name and an optional parameter (CLI: ``--grad-input MODE --grad-input-p P``).

    ``p`` is the flip probability (``flip``) or blend amount (``blend``); other modes take none.
    """
    if p is None:
        return parse_mode(name, target)
    if not isinstance(name, str) or name.strip().lower() not in ("flip", "blend"):
        raise ValueError(
            f"mode {name!r} for {target} takes no parameter; got p={p!r} "
            "(only flip and blend take one)"
        )
    return parse_mode(MODES[name.strip().lower()](p), target)  # p checked by the mode
