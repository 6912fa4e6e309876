"""JacNet: functions learned through structured Jacobians (Lorraine & Hossain, 2019).

Model: :class:`JacNet` with a structure from :data:`STRUCTURES` (``inverse`` takes the exact
path for invertible structures and the pseudo-inverse path, with a
:class:`PseudoInverseWarning`, otherwise). Experiments: the 1-d runs (:class:`Config1D`,
:func:`run_1d`), the 2-d run (:class:`Config2D`, :func:`run_2d`), the 100-d runs
(:class:`Config100D`, :func:`run_100d`), training (:func:`train`, :class:`Trainer`: full batch
or minibatches), a command's runs (:class:`Plan`, resumable :func:`run_plans`); the
Markdown/figure report is
``gradsurrogate.jacnet.report.write_report`` (kept out of this import: it loads matplotlib).
"""

from .exp1d import TARGETS_1D, Config1D, run_1d
from .experiment import EXPERIMENTS, Plan, record_key, run_plans
from .highdim import Config100D, run_100d
from .model import JacNet
from .pinv import PseudoInverseWarning
from .plane import Config2D, run_2d
from .structures import (
    STRUCTURES,
    Complex,
    Conservative,
    Invertible,
    Lipschitz,
    NoStructure,
    Orientation,
    Structure,
    get_structure,
)
from .training import TRAIN_METHODS, Trainer, TrainResult, train

__all__ = [
    "EXPERIMENTS",
    "STRUCTURES",
    "TARGETS_1D",
    "TRAIN_METHODS",
    "Complex",
    "Config1D",
    "Config2D",
    "Config100D",
    "Conservative",
    "Invertible",
    "JacNet",
    "Lipschitz",
    "NoStructure",
    "Orientation",
    "Plan",
    "PseudoInverseWarning",
    "Structure",
    "TrainResult",
    "Trainer",
    "get_structure",
    "record_key",
    "run_1d",
    "run_2d",
    "run_100d",
    "run_plans",
    "train",
]
