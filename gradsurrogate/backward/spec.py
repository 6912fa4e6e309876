"""The :class:`BackwardSpec`: one backward mode per target of a linear map."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from ..registry import check_choice
from .modes import TARGETS, BackwardMode, Exact, Learned, parse_mode

__all__ = ["BackwardSpec"]


@dataclasses.dataclass(frozen=True)
class BackwardSpec:
    """How the backward pass of a linear map is formed, one mode per target.

    ``BackwardSpec(grad_input="flip:0.3", weight="sign")``; fields take strings or mode objects.
    ``str(spec)`` lists the non-exact targets (``"grad_input=flip:0.3,weight=sign"``, or
    ``"exact"``) and :meth:`parse` reads it back; :meth:`to_dict` / :meth:`from_dict` give a
    W&B-config-friendly form.
    """

    grad_input: BackwardMode | str = "exact"
    grad_weight: BackwardMode | str = "exact"
    weight: BackwardMode | str = "exact"
    input: BackwardMode | str = "exact"

    def __post_init__(self) -> None:
        for target in TARGETS:
            object.__setattr__(self, target, parse_mode(getattr(self, target), target))

    def modes(self) -> dict[str, BackwardMode]:
        return {t: getattr(self, t) for t in TARGETS}

    @property
    def is_exact(self) -> bool:
        """True when every target computes the true quantity."""
        return all(m.is_exact for m in self.modes().values())

    @property
    def is_random(self) -> bool:
        return any(m.random for m in self.modes().values())

    def replace(self, **changes: BackwardMode | str) -> BackwardSpec:
        for target in changes:
            check_choice(target, TARGETS, "backward target")
        return dataclasses.replace(self, **changes)

    def bind(self, surrogate: Callable[..., Tensor]) -> BackwardSpec:
        """Attach ``surrogate`` to every ``learned`` target."""
        return dataclasses.replace(
            self,
            **{t: m.bind(surrogate) for t, m in self.modes().items() if isinstance(m, Learned)},
        )

    def __str__(self) -> str:
        parts = [f"{t}={m}" for t, m in self.modes().items() if not isinstance(m, Exact)]
        return ",".join(parts) if parts else "exact"

    def to_dict(self) -> dict[str, str]:
        return {t: str(m) for t, m in self.modes().items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackwardSpec:
        for target in data:
            check_choice(target, TARGETS, "backward target")
        return cls(**{k: str(v) if not isinstance(v, BackwardMode) else v for k, v in data.items()})

    @classmethod
    def parse(cls, text: str) -> BackwardSpec:
        """Inverse of ``str``: ``"exact"`` or ``"target=mode,target=mode"``, each target once."""
        if not isinstance(text, str):
            raise ValueError(f"a backward spec string is expected; got {text!r}")
        if text.strip().lower() in ("", "exact"):
            return cls()
        fields: dict[str, str] = {}
        for part in text.split(","):
            target, sep, mode = part.partition("=")
            if not sep:
                raise ValueError(
                    f"cannot parse backward spec {text!r}: expected 'target=mode' pairs "
                    f"separated by ',' with targets {', '.join(TARGETS)}, or 'exact'"
                )
            target = check_choice(target.strip().lower(), TARGETS, "backward target")
            if target in fields:
                raise ValueError(
                    f"backward spec {text!r} names target {target!r} twice "
                    f"({fields[target]!r} and {mode.strip()!r}); give each target once"
                )
            fields[target] = mode.strip()
        return cls.from_dict(fields)

    @classmethod
    def coerce(cls, spec: BackwardSpec | str | Mapping[str, Any] | None) -> BackwardSpec:
        if spec is None:
            return cls()
        if isinstance(spec, BackwardSpec):
            return spec
        if isinstance(spec, str):
            return cls.parse(spec)
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        raise ValueError(f"expected a BackwardSpec, a spec string or a dict; got {spec!r}")
