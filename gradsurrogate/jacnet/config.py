"""Validation helpers shared by the JacNet run configs (``Config1D``, ``Config2D``): each config
is a frozen dataclass checked once in ``__post_init__``, storing normalised values."""

from __future__ import annotations

from typing import Any

from gradsurrogate.activations import ACTIVATIONS
from gradsurrogate.registry import check_number, lookup

__all__ = ["check_activation", "check_range", "set_fields"]


def check_range(value: Any, name: str) -> tuple[float, float]:
    """``(lo, hi)`` of two finite numbers with ``lo < hi``; ``ValueError`` naming ``name``."""
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be two numbers (lo, hi); got {value!r}")
    lo, hi = (check_number(v, name, low=None) for v in value)
    if not lo < hi:
        raise ValueError(f"{name} must be ordered lo < hi; got {value!r}")
    return lo, hi


def check_activation(name: Any) -> str:
    """The registry key of an activation name (case-insensitive); ``ValueError`` if unknown."""
    lookup(ACTIVATIONS, name, "activation")
    return name.strip().lower()


def set_fields(cfg: Any, **values: Any) -> None:
    """Store normalised values on a frozen dataclass (inside its ``__post_init__``)."""
    for name, value in values.items():
        object.__setattr__(cfg, name, value)
