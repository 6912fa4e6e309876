"""Classical fixed-grid Runge–Kutta 4 (``steps`` equal steps on ``[t0, t1]``).

For a line integral the right-hand side ``J(c(t)) c'(t)`` does not depend on the state, so
RK4's stages ``k2 = k3`` coincide and ``k4`` of one step is ``k1`` of the next: the method is
exactly composite Simpson on ``2·steps + 1`` distinct nodes, evaluated here in one batched call
(weights ``h/6 · [1, 4, 2, 4, ..., 2, 4, 1]``). True ODEs use the stage loop (4 calls per step).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import (
    IntegralResult,
    Integrator,
    JacFn,
    PathFn,
    VectorField,
    apply_jac,
    check_count,
)

#: largest step count accepted (a line integral evaluates all ``2·steps + 1`` nodes at once)
MAX_STEPS = 1_000_000


class RK4(Integrator):
    """Fixed-grid RK4 with ``steps`` steps (``1 ≤ steps ≤ MAX_STEPS``); no error estimate."""

    name = "rk4"
    solves_odes = True

    def __init__(self, steps: int = 32) -> None:
        self.steps = check_count(steps, "rk4 steps", 1, MAX_STEPS)

    def integrate(self, jac: JacFn, path: PathFn, x0: Tensor, x1: Tensor) -> IntegralResult:
        m = 2 * self.steps
        t = torch.linspace(0.0, 1.0, m + 1, dtype=x1.dtype, device=x1.device)
        w = torch.ones(m + 1, dtype=x1.dtype, device=x1.device)
        w[1:-1:2] = 4.0
        w[2:-1:2] = 2.0
        w = w / (3.0 * m)  # (h/6)·pattern with h = 1/steps = 2/m
        c, dc = path(t, x0, x1)
        g = apply_jac(jac, c, dc)
        return IntegralResult(torch.einsum("t,tno->no", w, g), m + 1, 1, None, self.name)

    def solve(self, func: VectorField, z0: Tensor, t0: float, t1: float) -> IntegralResult:
        h = (t1 - t0) / self.steps
        z = z0
        for k in range(self.steps):
            t = torch.as_tensor(t0 + k * h, dtype=z0.dtype, device=z0.device)
            k1 = func(t, z)
            k2 = func(t + h / 2, z + h / 2 * k1)
            k3 = func(t + h / 2, z + h / 2 * k2)
            k4 = func(t + h, z + h * k3)
            z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        n = 4 * self.steps
        return IntegralResult(z, n, n, None, self.name)
