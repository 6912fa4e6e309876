"""Differentiable line integrals of Jacobian fields and ODE solves along paths.

``line_integral(jac, x0, x1, y0)`` computes ``y0 + ∫_0^1 J(c(t)) c'(t) dt`` batched over
points with one of several methods behind one interface (a registry, ``get_integrator``):
adaptive Gauss–Kronrod with a per-point tolerance (default; one batched Jacobian call per
refinement level), fixed-node Gauss–Legendre (all nodes in one call), Gauss–Kronrod, fixed-grid
RK4 and adaptive dopri5 (torchdiffeq). ``solve_path_ode`` handles state-dependent ODEs.
"""

from .adaptive import DEFAULT_TOLERANCES, Adaptive, AdaptiveWarning, default_tolerances
from .base import (
    PATHS,
    BentPath,
    IntegralResult,
    Integrator,
    JacFn,
    Path,
    PathFn,
    StraightPath,
    VectorField,
    get_path,
)
from .dopri5 import Dopri5
from .gauss_kronrod import GaussKronrod, kronrod_rule
from .gauss_legendre import GaussLegendre, legendre_rule
from .registry import (
    DEFAULT_METHOD,
    INTEGRATORS,
    get_integrator,
    line_integral,
    resolve_method,
    solve_path_ode,
)
from .rk4 import RK4
from .schedule import NodeSchedule, ToleranceSchedule

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_TOLERANCES",
    "INTEGRATORS",
    "PATHS",
    "RK4",
    "Adaptive",
    "AdaptiveWarning",
    "BentPath",
    "Dopri5",
    "GaussKronrod",
    "GaussLegendre",
    "IntegralResult",
    "Integrator",
    "JacFn",
    "NodeSchedule",
    "Path",
    "PathFn",
    "StraightPath",
    "ToleranceSchedule",
    "VectorField",
    "default_tolerances",
    "get_integrator",
    "get_path",
    "kronrod_rule",
    "legendre_rule",
    "line_integral",
    "resolve_method",
    "solve_path_ode",
]
