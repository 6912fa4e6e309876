"""Accuracy schedules for training through an integrator.

``ToleranceSchedule`` is the reference's annealing: start at ``rtol = atol = 0.1`` and halve
both whenever the training loss falls below ``atol + rtol · y_mag``. ``NodeSchedule`` is its
analogue for quadrature node counts: the same tolerance, and the node count doubles whenever
the quadrature's error estimate exceeds the current tolerance (or, without an estimate,
whenever the tolerance is halved).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradsurrogate.registry import check_number

from .base import check_count


def _check_tolerances(s: Any) -> None:
    """Shared validation: ``rtol``, ``atol`` finite and positive, ``factor`` in ``(0, 1)``,
    ``min_tol`` finite and ``≥ 0`` (values coerced to ``float``)."""
    s.rtol = check_number(s.rtol, "schedule rtol")
    s.atol = check_number(s.atol, "schedule atol")
    s.factor = check_number(s.factor, "schedule factor", 0.0, 1.0, high_open=True)
    s.min_tol = check_number(s.min_tol, "schedule min_tol", 0.0, low_open=False)


@dataclass
class ToleranceSchedule:
    """Anneal adaptive-solver tolerances; ``options()`` feeds ``line_integral``.

    ``history`` holds ``(rtol, atol)`` in force at each ``step`` call (before any update).
    """

    rtol: float = 0.1
    atol: float = 0.1
    factor: float = 0.5
    min_tol: float = 1e-10
    history: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_tolerances(self)

    def threshold(self, y_mag: float = 0.0) -> float:
        """``atol + rtol · y_mag``."""
        return self.atol + self.rtol * abs(y_mag)

    def anneal(self, loss: float, y_mag: float = 0.0) -> bool:
        """Scale rtol and atol by ``factor`` if ``|loss| < threshold``. True if tightened."""
        if abs(float(loss)) < self.threshold(y_mag) and self.atol > self.min_tol:
            self.rtol *= self.factor
            self.atol *= self.factor
            return True
        return False

    def step(self, loss: float, y_mag: float = 0.0) -> bool:
        """Record the tolerances used; halve them if ``|loss| < threshold``. True if tightened."""
        self.history.append((self.rtol, self.atol))
        return self.anneal(loss, y_mag)

    def options(self) -> dict[str, Any]:
        return {"rtol": self.rtol, "atol": self.atol}


@dataclass
class NodeSchedule:
    """Grow the Gauss–Legendre node count as training tightens the tolerance.

    Args:
        n: starting node count; ``max_n`` the cap (``1 ≤ n ≤ max_n``).
        rtol, atol, factor: tolerance annealed exactly like ``ToleranceSchedule``.

    ``history`` holds ``(n, atol)`` in force at each ``step`` call.
    """

    n: int = 4
    max_n: int = 64
    rtol: float = 0.1
    atol: float = 0.1
    factor: float = 0.5
    min_tol: float = 1e-10
    history: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_tolerances(self)
        self.n = check_count(self.n, "schedule n")
        self.max_n = check_count(self.max_n, "schedule max_n", self.n)

    threshold = ToleranceSchedule.threshold
    anneal = ToleranceSchedule.anneal

    def step(self, loss: float, y_mag: float = 0.0, error: float | None = None) -> bool:
        """Record ``(n, atol)``; halve the tolerance if ``|loss| <`` it; double ``n`` if the
        quadrature ``error`` estimate (max over points) exceeds the (new) tolerance, or, when no
        estimate is given, whenever the tolerance was halved. True if ``n`` grew."""
        self.history.append((self.n, self.atol))
        tightened = self.anneal(loss, y_mag)
        grow = tightened if error is None else float(error) > self.threshold(y_mag)
        if grow and self.n < self.max_n:
            self.n = min(2 * self.n, self.max_n)
            return True
        return False

    def options(self) -> dict[str, Any]:
        return {"n": self.n}
