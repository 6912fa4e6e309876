"""Jacobian restoration: learn backward surrogates ``g(∇_f, α) ≈ ∇_α`` from directional
derivatives, via the scalar equations ``g(∇_f, α)·dα ≈ ∇_f·df``.

Pieces: :mod:`.config` (:class:`RestoreConfig`, the only source of a run's settings),
:mod:`.sampling` (points, cotangents, random-subspace directions), :mod:`.targets`
(jvp / finite differences / line integrals), :mod:`.losses` (registry), :mod:`.surrogates`
(registry), :mod:`.trainer` (:func:`restore`), :mod:`.run` (:func:`run_restore`: train, store,
resume), :mod:`.report`, :mod:`.baseline` (least squares), :mod:`.online` (restoring the
backward of layers while a network trains).
"""

from .baseline import least_squares_jacobian, least_squares_restore, least_squares_scalar
from .config import DTYPES, RESTORE_OPTIMIZERS, RestoreConfig, build_problem, build_surrogate
from .evaluate import SCALES, heldout_scales, load_surrogate, save_surrogate
from .losses import RESTORE_LOSSES, Loss, cos_sim, dot_sim, gen_sim, get_loss
from .problems import (
    RESTORE_PROBLEMS,
    RestoreProblem,
    callable_problem,
    jacobian_metrics,
    linear_problem,
    load_function,
    mlp2_problem,
    tanh_bias_problem,
    tanh_problem,
)
from .report import report_table, write_report
from .run import run_restore, run_restores
from .sampling import (
    SubspaceCycler,
    get_alpha_sampler,
    normalised_epochs,
    sample_cotangents,
    sample_directions,
)
from .surrogates import (
    SURROGATES,
    GradNet,
    JacobianNet,
    LogLinExp,
    MLPSurrogate,
    Structured,
    Surrogate,
    make_surrogate,
)
from .targets import DF_TARGETS, directional_change, surrogate_line_integral
from .trainer import NonFiniteLossError, RestoreResult, equations, restore

__all__ = [
    "DF_TARGETS",
    "DTYPES",
    "RESTORE_LOSSES",
    "RESTORE_OPTIMIZERS",
    "RESTORE_PROBLEMS",
    "SCALES",
    "SURROGATES",
    "GradNet",
    "JacobianNet",
    "LogLinExp",
    "Loss",
    "MLPSurrogate",
    "NonFiniteLossError",
    "RestoreConfig",
    "RestoreProblem",
    "RestoreResult",
    "Structured",
    "SubspaceCycler",
    "Surrogate",
    "build_problem",
    "build_surrogate",
    "callable_problem",
    "cos_sim",
    "directional_change",
    "dot_sim",
    "equations",
    "gen_sim",
    "get_alpha_sampler",
    "get_loss",
    "heldout_scales",
    "jacobian_metrics",
    "least_squares_jacobian",
    "least_squares_restore",
    "least_squares_scalar",
    "linear_problem",
    "load_function",
    "load_surrogate",
    "make_surrogate",
    "mlp2_problem",
    "normalised_epochs",
    "report_table",
    "restore",
    "run_restore",
    "run_restores",
    "sample_cotangents",
    "sample_directions",
    "save_surrogate",
    "surrogate_line_integral",
    "tanh_bias_problem",
    "tanh_problem",
    "write_report",
]
