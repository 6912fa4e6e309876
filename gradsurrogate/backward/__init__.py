"""Backward modes and :class:`BackwardSpec`.

A linear map ``y = x Wᵀ + b`` has the exact backward ``grad_input = g W``,
``grad_weight = gᵀ x``. A :class:`BackwardSpec` assigns one :class:`BackwardMode` to each of
its four targets (``grad_input``, ``grad_weight``, ``weight``, ``input``); modes live in
:mod:`.modes` behind a registry (``MODES``), the spec in :mod:`.spec`, seeded noise in
:mod:`.draws`, the feedback-alignment family (``fa``, ``usf``, ``frsf``, ``brsf``) in
:mod:`.feedback`, and the per-member modes of ensemble layers (:func:`stack_modes`) in
:mod:`.stack`.
"""

from .draws import Generators, mean_abs, uniform_like
from .feedback import BRSF, FA, FRSF, INITS, USF, draw_init
from .modes import (
    MODES,
    TARGETS,
    BackwardMode,
    Blend,
    Exact,
    FeedbackMode,
    Flip,
    Learned,
    NoGrad,
    RandomFeedback,
    Sign,
    accepted_modes,
    make_mode,
    parse_mode,
    register_mode,
)
from .spec import BackwardSpec
from .stack import MemberModes, stack_modes

__all__ = [
    "BRSF",
    "FA",
    "FRSF",
    "INITS",
    "MODES",
    "TARGETS",
    "USF",
    "BackwardMode",
    "BackwardSpec",
    "Blend",
    "Exact",
    "FeedbackMode",
    "Flip",
    "Generators",
    "Learned",
    "MemberModes",
    "NoGrad",
    "RandomFeedback",
    "Sign",
    "accepted_modes",
    "draw_init",
    "make_mode",
    "mean_abs",
    "parse_mode",
    "register_mode",
    "stack_modes",
    "uniform_like",
]
