"""Validation helpers shared by the JacNet run configs (``Config1D``, ``Config2D``): each config
is a frozen dataclass checked once in ``__post_init__``, storing normalised values."""

from __future__ import annotations

from typing import Any

from gradsurrogate.activations import ACTIVATIONS
from gradsurrogate.registry import check_choice, check_number, lookup

from .training import ANNEAL_SCALES, TRAIN_METHODS

__all__ = ["check_activation", "check_range", "set_fields", "training_fields"]


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


def training_fields(cfg: Any) -> dict[str, Any]:
    """The normalised training settings every JacNet config has (activation, lr, method,
    inverse_tol, anneal), each checked; for :func:`set_fields`."""
    return {
        "activation": check_activation(cfg.activation),
        "lr": check_number(cfg.lr, "lr"),
        "method": check_choice(cfg.method, TRAIN_METHODS, "training method"),
        "inverse_tol": check_number(cfg.inverse_tol, "inverse_tol", 0.0, 1.0, high_open=True),
        "anneal": check_choice(cfg.anneal, ANNEAL_SCALES, "annealing scale"),
    }


def set_fields(cfg: Any, **values: Any) -> None:
    """Store normalised values on a frozen dataclass (inside its ``__post_init__``)."""
    for name, value in values.items():
        object.__setattr__(cfg, name, value)
