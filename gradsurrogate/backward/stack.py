"""Per-member backward modes, so runs with different mode *types* share one ensemble layer.

:func:`stack_modes` turns the modes of ``e`` runs (one per ensemble member) into one mode for an
ensemble layer: the shared mode when all agree, ``Flip``/``Blend`` with an (e,) parameter tensor
when only the parameter differs, and otherwise a :class:`MemberModes` that applies each member's
mode to its slice ``t[e]`` (members with the same mode type are handled in one batched call).
Member ``e`` draws its noise only from ``generator[e]``, exactly as a separate run would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from .draws import Generators
from .modes import TARGETS, BackwardMode, Blend, Exact, FeedbackMode, Flip, Learned

__all__ = ["MemberModes", "stack_modes"]


def _kind(mode: BackwardMode) -> str:
    """Modes of one kind can be batched: flip/blend by type, others by their full identity."""
    return mode.name if isinstance(mode, (Flip, Blend)) else str(mode)


@dataclasses.dataclass(frozen=True, eq=False)
class MemberModes(BackwardMode):
    """Member ``e`` of the ensemble uses ``modes[e]``: ``t'[e] = modes[e](t[e])``."""

    modes: tuple[BackwardMode, ...] = ()
    name: ClassVar[str] = "members"
    targets: ClassVar[frozenset[str]] = frozenset(TARGETS)

    def __post_init__(self) -> None:
        if not self.modes or not all(isinstance(m, BackwardMode) for m in self.modes):
            raise ValueError(f"MemberModes needs one BackwardMode per member; got {self.modes!r}")
        for cls, text in ((FeedbackMode, "a feedback-alignment weight mode"),
                          (Learned, "'learned'")):
            if any(isinstance(m, cls) for m in self.modes):
                raise ValueError(f"{text} cannot be mixed with other modes in one ensemble")
        groups: dict[str, list[int]] = {}
        for e, mode in enumerate(self.modes):
            groups.setdefault(_kind(mode), []).append(e)
        batched = []
        for members in groups.values():
            first = self.modes[members[0]]
            if isinstance(first, Exact):
                continue
            mode = _batch([self.modes[e] for e in members])
            batched.append((torch.tensor(members), members, mode))
        object.__setattr__(self, "_batched", batched)

    @property
    def random(self) -> bool:  # type: ignore[override]
        return any(m.random for m in self.modes)

    @property
    def is_exact(self) -> bool:
        return all(m.is_exact for m in self.modes)

    def apply(self, t: Tensor, generator: Generators = None, ensemble: bool = False) -> Tensor:
        if not ensemble or t.shape[0] != len(self.modes):
            raise ValueError(f"MemberModes with {len(self.modes)} members needs an ensemble "
                             f"tensor with that many members in dim 0; got {tuple(t.shape)}")
        gens = None if generator is None or isinstance(generator, torch.Generator) \
            else list(generator)
        out = t
        for index, members, mode in self._batched:
            index = index.to(t.device)
            sub_gen = generator if gens is None else [gens[e] for e in members]
            part = mode.apply(t.index_select(0, index), sub_gen, ensemble=True)
            out = out.index_copy(0, index, part)
        return out

    def __str__(self) -> str:
        return "members[" + ";".join(str(m) for m in self.modes) + "]"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MemberModes) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


def _batch(modes: Sequence[BackwardMode]) -> BackwardMode:
    """One mode for members whose modes share a kind."""
    first = modes[0]
    if all(m == first for m in modes):
        return first
    if isinstance(first, Flip):
        return Flip(torch.tensor([float(m.p) for m in modes], dtype=torch.float64))
    if isinstance(first, Blend):
        return Blend(torch.tensor([float(m.a) for m in modes], dtype=torch.float64))
    raise ValueError(f"cannot batch modes {[str(m) for m in modes]}")


def stack_modes(modes: Sequence[BackwardMode]) -> BackwardMode:
    """One ensemble mode from the members' modes (see the module docstring)."""
    if not modes:
        raise ValueError("stack_modes needs at least one mode")
    kinds = {_kind(m) for m in modes}
    if len(kinds) == 1:
        return _batch(modes)
    return MemberModes(tuple(modes))
