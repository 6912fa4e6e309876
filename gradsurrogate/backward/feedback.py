"""The feedback-alignment family: modes for target ``weight`` that supply the ``B`` of
``grad_input = grad_output @ B`` (only ``grad_input`` changes; ``grad_weight`` stays exact).

=========  =============================  ==============================================
mode       ``B`` at a backward call       state kept by the layer
=========  =============================  ==============================================
``fa``     ``R``                          ``R`` drawn once (Lillicrap et al. 2016)
``usf``    ``sign(W) · s``                none (Liao, Leibo & Poggio 2016)
``frsf``   ``|R| ∘ sign(W)``              ``|R|``, ``R`` drawn once
``brsf``   ``|R_t| ∘ sign(W)``            none: ``R_t`` redrawn at every backward call
=========  =============================  ==============================================

Scale convention (biotorch's, ``INIT`` = ``kaiming`` by default, or ``xavier``):

* ``kaiming``: ``R ~ U(-b, b)`` drawn by ``torch.nn.init.kaiming_uniform_(R, a=√5)``, i.e.
  ``b = 1/√fan_in`` (the init of ``nn.Linear`` / ``nn.Conv*``), and ``s = 1/√(3·fan_in)``
  (the standard deviation of that uniform);
* ``xavier``: ``R`` drawn by ``torch.nn.init.xavier_uniform_``, ``b = √(6/(fan_in+fan_out))``,
  and ``s = √(2/(fan_in+fan_out))``.

``fan_in = i·k``, ``fan_out = o·k`` for ``W`` (o, i, *kernel) with ``k`` the kernel size, as
``torch.nn.init`` computes them. Ensemble weights (e, o, i) use the fans of one member; with one
generator per member, member ``e`` draws from ``generator[e]`` (the numbers of separate layers).
Draws are made in float32 (float64 for float64 weights) and cast to the weight's dtype.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from ..registry import check_choice
from .draws import Generators
from .modes import BackwardMode, FeedbackMode, register_mode

__all__ = [
    "BRSF",
    "FA",
    "FRSF",
    "INITS",
    "USF",
    "draw_init",
    "fans",
    "init_std",
]

#: Scale conventions of the family (biotorch's ``init`` option).
INITS: tuple[str, ...] = ("kaiming", "xavier")


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight shaped (o, i, *kernel), as ``torch.nn.init``."""
    if len(shape) < 2:
        raise ValueError(f"fans need a weight with at least 2 dims; got shape {tuple(shape)}")
    k = math.prod(shape[2:])
    return shape[1] * k, shape[0] * k


def init_std(shape: Sequence[int], init: str) -> float:
    """Standard deviation of the ``init`` draw for a weight ``shape``: ``1/√(3·fan_in)``
    (kaiming) or ``√(2/(fan_in+fan_out))`` (xavier) — the uSF scale ``s``."""
    fan_in, fan_out = fans(shape)
    if check_choice(init, INITS, "init") == "kaiming":
        return 1 / math.sqrt(3 * fan_in)
    return math.sqrt(2.0 / float(fan_in + fan_out))


def _init_(t: Tensor, init: str, generator: torch.Generator | None) -> Tensor:
    if init == "kaiming":
        return torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=generator)
    return torch.nn.init.xavier_uniform_(t, generator=generator)


def draw_init(shape: Sequence[int], init: str, generator: Generators = None,
              ensemble: bool = False, dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> Tensor:
    """A fresh ``R`` shaped ``shape`` drawn by ``torch.nn.init``'s ``init`` uniform.

    ``ensemble``: dim 0 indexes members; each member is drawn with its own fans, from
    ``generator[e]`` when a sequence is given (else all from the one generator, in order).
    Drawn on the generator's device in float32 (float64 kept) and returned on ``device``
    (default: the generator's) in ``dtype``.
    """
    check_choice(init, INITS, "init")
    shape = tuple(shape)
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    if generator is None or isinstance(generator, torch.Generator):
        gens: list[torch.Generator | None] = [generator] * (shape[0] if ensemble else 1)
    else:
        gens = list(generator)
        if not ensemble or len(gens) != shape[0]:
            raise ValueError(
                f"a sequence of {len(gens)} generators needs an ensemble weight with that many "
                f"members in dim 0; got shape {shape}"
            )
    member = shape[1:] if ensemble else shape
    parts = []
    for g in gens:
        gen_device = g.device if g is not None else (device or "cpu")
        parts.append(_init_(torch.empty(member, dtype=draw_dtype, device=gen_device), init, g))
    out = torch.stack([p.to(parts[0].device) for p in parts]) if ensemble else parts[0]
    return out.to(device=device if device is not None else out.device, dtype=dtype)


@dataclasses.dataclass(frozen=True)
class _InitFeedback(FeedbackMode):
    """A family member with an ``INIT`` option (``kaiming`` default, or ``xavier``)."""

    init: str = "kaiming"

    def __post_init__(self) -> None:
        init = self.init.strip().lower() if isinstance(self.init, str) else self.init
        object.__setattr__(self, "init",
                           check_choice(init, INITS, f"init of mode {self.name!r}"))

    def draw(self, weight: Tensor, generator: Generators = None,
             ensemble: bool = False) -> Tensor:
        """A fresh ``R`` shaped like ``weight`` (see the module docstring for the scale)."""
        return draw_init(weight.shape, self.init, generator, ensemble, weight.dtype,
                         weight.device)

    def scale(self, weight: Tensor, ensemble: bool = False) -> float:
        """``s``: the standard deviation of ``R`` for this weight (per member)."""
        return init_std(weight.shape[1:] if ensemble else weight.shape, self.init)

    def __str__(self) -> str:
        return self.name if self.init == "kaiming" else f"{self.name}:{self.init}"

    @classmethod
    def from_arg(cls, arg: str | None) -> BackwardMode:
        return cls() if arg is None else cls(arg)  # validated in __post_init__


def _need_state(mode: FeedbackMode, state: Tensor | None) -> Tensor:
    if state is None:
        raise RuntimeError(f"weight={str(mode)!r} needs the layer's fixed matrix R: call "
                           f"init_state(weight, generator) once and pass it as feedback")
    return state


@dataclasses.dataclass(frozen=True)
class FA(_InitFeedback):
    """Feedback alignment: ``B = R``, ``R`` drawn once per layer (kaiming: ``U(±1/√fan_in)``,
    the same law as ``nn.Linear``'s weight init; xavier: ``U(±√(6/(fan_in+fan_out)))``)."""

    name: ClassVar[str] = "fa"
    stateful: ClassVar[bool] = True

    def init_state(self, weight: Tensor, generator: Generators = None,
                   ensemble: bool = False) -> Tensor | None:
        return self.draw(weight, generator, ensemble)

    def matrix(self, weight: Tensor, state: Tensor | None, generator: Generators = None,
               ensemble: bool = False) -> Tensor:
        return _need_state(self, state)


@dataclasses.dataclass(frozen=True)
class USF(_InitFeedback):
    """Uniform sign-concordant feedback: ``B = sign(W) · s`` with ``s = 1/√(3·fan_in)``
    (kaiming) or ``√(2/(fan_in+fan_out))`` (xavier), biotorch's scale; no state, no draws."""

    name: ClassVar[str] = "usf"
    stateful: ClassVar[bool] = False

    def matrix(self, weight: Tensor, state: Tensor | None, generator: Generators = None,
               ensemble: bool = False) -> Tensor:
        return torch.sign(weight.detach()).mul_(self.scale(weight, ensemble))


@dataclasses.dataclass(frozen=True)
class FRSF(_InitFeedback):
    """Fixed random-magnitude sign-concordant feedback: ``B = |R| ∘ sign(W)``, ``R`` drawn once
    per layer exactly as for ``fa``; the layer keeps ``|R|`` (its state), the signs follow
    ``W`` as it trains."""

    name: ClassVar[str] = "frsf"
    stateful: ClassVar[bool] = True

    def init_state(self, weight: Tensor, generator: Generators = None,
                   ensemble: bool = False) -> Tensor | None:
        return self.draw(weight, generator, ensemble).abs_()

    def matrix(self, weight: Tensor, state: Tensor | None, generator: Generators = None,
               ensemble: bool = False) -> Tensor:
        return torch.sign(weight.detach()).mul_(_need_state(self, state))


@dataclasses.dataclass(frozen=True)
class BRSF(_InitFeedback):
    """Batchwise random-magnitude sign-concordant feedback: ``B = |R_t| ∘ sign(W)`` with a fresh
    ``R_t`` (drawn as for ``fa``) from the layer's generator at every backward call that forms
    ``grad_input``; no state."""

    name: ClassVar[str] = "brsf"
    stateful: ClassVar[bool] = False
    random: ClassVar[bool] = True

    def matrix(self, weight: Tensor, state: Tensor | None, generator: Generators = None,
               ensemble: bool = False) -> Tensor:
        return self.draw(weight, generator, ensemble).abs_().mul_(torch.sign(weight.detach()))


for _cls in (FA, USF, FRSF, BRSF):
    register_mode(_cls, f"{_cls.name}[:kaiming|xavier]")
