"""Adaptive Dormand–Prince 5(4) via ``torchdiffeq.odeint`` (the reference's integrator).

The whole batch is one ODE state ``(n, o)`` sharing the step sizes, so each function
evaluation is one batched Jacobian call. Gradients flow by backpropagating through the solver
steps, or with ``adjoint=True`` through ``odeint_adjoint`` (memory-light, slower).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gradsurrogate.registry import check_number

from .base import (
    IntegralResult,
    Integrator,
    JacFn,
    PathFn,
    VectorField,
    apply_jac,
    check_count,
)


class _Counted(nn.Module):
    """Wraps ``func(t, z)`` as a module (``odeint_adjoint`` wants one) and counts its calls."""

    def __init__(self, func: VectorField) -> None:
        super().__init__()
        self.func = func
        self.calls = 0

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        self.calls += 1
        return self.func(t, z)


class Dopri5(Integrator):
    """torchdiffeq ``dopri5`` with tolerances ``rtol``/``atol``.

    Args:
        rtol, atol: step-size control tolerances (finite, positive).
        adjoint: use ``odeint_adjoint``; then ``adjoint_params`` must list the tensors to
            differentiate (e.g. ``tuple(model.parameters())``).
        max_num_steps: solver step cap (torchdiffeq raises beyond it).
    """

    name = "dopri5"
    solves_odes = True

    def __init__(
        self,
        rtol: float = 1e-7,
        atol: float = 1e-9,
        adjoint: bool = False,
        adjoint_params: Sequence[Tensor] | None = None,
        max_num_steps: int = 100_000,
    ) -> None:
        self.rtol = check_number(rtol, "dopri5 rtol")
        self.atol = check_number(atol, "dopri5 atol")
        if not isinstance(adjoint, bool):
            raise ValueError(f"dopri5 adjoint must be True or False; got {adjoint!r}")
        if adjoint and adjoint_params is None:
            raise ValueError("dopri5 with adjoint=True needs adjoint_params (tensors to train)")
        self.adjoint = adjoint
        self.adjoint_params = tuple(adjoint_params or ())
        self.max_num_steps = check_count(max_num_steps, "dopri5 max_num_steps")

    def _odeint(self, func: VectorField, z0: Tensor, t0: float, t1: float) -> tuple[Tensor, int]:
        import torchdiffeq

        counted = _Counted(func)
        ts = torch.tensor([t0, t1], dtype=z0.dtype, device=z0.device)
        kw = dict(rtol=self.rtol, atol=self.atol, method="dopri5",
                  options={"max_num_steps": self.max_num_steps})
        if self.adjoint:
            out = torchdiffeq.odeint_adjoint(counted, z0, ts, adjoint_params=self.adjoint_params,
                                             **kw)
        else:
            out = torchdiffeq.odeint(counted, z0, ts, **kw)
        return out[-1], counted.calls

    def integrate(self, jac: JacFn, path: PathFn, x0: Tensor, x1: Tensor) -> IntegralResult:
        probe_t = torch.zeros(1, dtype=x1.dtype, device=x1.device)
        with torch.no_grad():  # output width of jac, needed for the initial state
            c, dc = path(probe_t, x0[:1], x1[:1])
            d_out = apply_jac(jac, c, dc).shape[-1]

        def rhs(t: Tensor, z: Tensor) -> Tensor:
            c, dc = path(t.reshape(1), x0, x1)
            return apply_jac(jac, c, dc)[0]

        z0 = torch.zeros(x1.shape[0], d_out, dtype=x1.dtype, device=x1.device)
        value, calls = self._odeint(rhs, z0, 0.0, 1.0)
        return IntegralResult(value, calls, calls + 1, None, self.name)

    def solve(self, func: VectorField, z0: Tensor, t0: float, t1: float) -> IntegralResult:
        value, calls = self._odeint(func, z0, t0, t1)
        return IntegralResult(value, calls, calls, None, self.name)
