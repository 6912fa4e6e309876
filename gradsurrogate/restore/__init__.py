"""Jacobian restoration: learn backward surrogates ``g(∇_f, α) ≈ ∇_α`` from directional
derivatives, via the scalar equations ``g(∇_f, α)·dα ≈ ∇_f·df``.

Pieces: :mod:`.sampling` (points, cotangents, random-subspace directions), :mod:`.targets`
(jvp / finite differences / line integrals), :mod:`.losses` (registry), :mod:`.surrogates`
(registry), :mod:`.trainer` (:func:`restore`), :mod:`.baseline` (least squares),
:mod:`.online` (restoring the backward of layers while a network trains).
"""

from .baseline import least_squares_jacobian, least_squares_restore, least_squares_scalar
from .losses import LOSSES, Loss, cos_sim, dot_sim, gen_sim, get_loss
from .problems import Problem, jacobian_metrics, linear_problem, tanh_problem
from .sampling import (
    get_alpha_sampler,
    normalised_epochs,
    sample_cotangents,
    sample_directions,
)
from .surrogates import SURROGATES, LogLinExp, MLPSurrogate, Structured, Surrogate, make_surrogate
from .targets import TARGETS, directional_change, surrogate_line_integral
from .trainer import NonFiniteLossError, RestoreConfig, RestoreResult, equations, restore

__all__ = [
    "LOSSES",
    "SURROGATES",
    "TARGETS",
    "LogLinExp",
    "Loss",
    "MLPSurrogate",
    "NonFiniteLossError",
    "Problem",
    "RestoreConfig",
    "RestoreResult",
    "Structured",
    "Surrogate",
    "cos_sim",
    "directional_change",
    "dot_sim",
    "equations",
    "gen_sim",
    "get_alpha_sampler",
    "get_loss",
    "jacobian_metrics",
    "least_squares_jacobian",
    "least_squares_restore",
    "least_squares_scalar",
    "linear_problem",
    "make_surrogate",
    "normalised_epochs",
    "restore",
    "sample_cotangents",
    "sample_directions",
    "surrogate_line_integral",
    "tanh_problem",
]
