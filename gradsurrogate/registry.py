"""One helper for every family of named strategies (modes, losses, surrogates, integrators, ...).

A registry is a plain ``dict`` name -> object. These functions give every family the same
behaviour on bad input: a ``ValueError`` naming the bad value and the accepted ones.

* :func:`check_choice` — ``value`` must be one of ``accepted``;
* :func:`lookup` — ``table[name]`` (case and surrounding spaces normalised);
* :func:`parse_arg` — split ``"name:arg"`` (``"flip:0.3"`` -> ``("flip", "0.3")``);
* :func:`check_number` — a finite number in range (learning rates, scales, tolerances).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["FLOAT32_MAX", "INT64_MAX", "check_choice", "check_int", "check_number", "lookup",
           "parse_arg"]

T = TypeVar("T")

#: largest finite float32; a rate or scale above it overflows once it meets a float32 tensor
FLOAT32_MAX = 3.4028234663852886e38


def _accepted(accepted: Iterable[Any]) -> str:
    return ", ".join(str(a) for a in accepted)


def check_choice(value: Any, accepted: Iterable[Any], what: str) -> Any:
    """``value`` if it is in ``accepted``; else ``ValueError`` naming both."""
    accepted = list(accepted)
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {_accepted(accepted)}")
    return value


def lookup(table: Mapping[str, T], name: Any, what: str) -> T:
    """``table[name]`` (``name`` lower-cased and stripped); ``ValueError`` when absent."""
    key = name.strip().lower() if isinstance(name, str) else name
    if not isinstance(key, str) or key not in table:
        raise ValueError(f"unknown {what} {name!r}; accepted: {_accepted(table)}")
    return table[key]


def parse_arg(text: Any, what: str) -> tuple[str, str | None]:
    """Split ``"name:arg"`` into ``(name, arg)``; ``"name"`` gives ``(name, None)``.

    The name is lower-cased and stripped; an empty name or argument is a ``ValueError``.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} must be a non-empty string such as 'name' or 'name:arg'; "
                         f"got {text!r}")
    name, sep, arg = text.strip().partition(":")
    name, arg = name.strip().lower(), arg.strip()
    if not name or (sep and not arg):
        raise ValueError(f"bad {what} {text!r}: expected 'name' or 'name:arg'")
    return name, (arg if sep else None)


def check_number(value: Any, name: str, low: float | None = 0.0, high: float | None = None,
                 low_open: bool = True, high_open: bool = False,
                 max_abs: float = FLOAT32_MAX) -> float:
    """``float(value)`` if it is a finite real number in the interval; else ``ValueError``.

    Defaults ask for a positive number (``low=0`` excluded) no larger than the largest float32,
    so ``inf``, ``nan`` and overflow values such as ``1e300`` are refused up front with a message
    naming ``name``, the value and the accepted range.
    """
    lo = "-inf" if low is None else f"{low:g}"
    hi = f"{max_abs:.3g}" if high is None else f"{high:g}"
    want = f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"
    bad = ValueError(f"{name} must be a finite number in {want}; got {value!r}")
    if isinstance(value, bool):
        raise bad
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise bad from None
    if not math.isfinite(x) or abs(x) > max_abs:
        raise bad
    if low is not None and (x < low or (low_open and x == low)):
        raise bad
    if high is not None and (x > high or (high_open and x == high)):
        raise bad
    return x


#: largest int64: integers beyond it overflow as soon as they meet torch or numpy
INT64_MAX = 2**63 - 1


def check_int(value: Any, name: str, low: int | None = 0, high: int | None = None) -> int:
    """``value`` if it is an ``int`` (not ``bool``) in ``[low, high]`` (``high=None``: up to
    :data:`INT64_MAX`); else ``ValueError``."""
    top = INT64_MAX if high is None else high
    if isinstance(value, bool) or not isinstance(value, int) or \
            (low is not None and value < low) or value > top:
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        big = " (at most 2**63 - 1)" if high is None and isinstance(value, int) and \
            not isinstance(value, bool) and value > top else ""
        raise ValueError(f"{name} must be an integer {rng}{big}; got {value!r}")
    return value
