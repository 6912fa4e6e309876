"""Deep differential networks: MLPs returning exact input Jacobians and Hessians.

:class:`DifferentialMLP` is the model; :class:`ExperimentConfig`, :func:`run_experiment`
(train and store, resumably) and :func:`write_report` run the reference's 1-d sin(x) /
2-d cos(x)·sin(y) regression experiments (``gradsurrogate diffnet``).
"""

from typing import Any

from gradsurrogate.diffnet.config import DIFFNET_LOSSES, RECIPES, ExperimentConfig
from gradsurrogate.diffnet.experiment import evaluate_mse, train_one
from gradsurrogate.diffnet.model import HESSIAN_MODES, INITS, JACOBIAN_MODES, DifferentialMLP
from gradsurrogate.diffnet.problems import DIFFNET_PROBLEMS, DiffnetProblem, make_data
from gradsurrogate.diffnet.store import run_experiment

__all__ = [
    "DIFFNET_LOSSES", "DIFFNET_PROBLEMS", "HESSIAN_MODES", "INITS", "JACOBIAN_MODES", "RECIPES",
    "DifferentialMLP", "DiffnetProblem", "ExperimentConfig", "evaluate_mse", "make_data",
    "run_experiment", "train_one", "write_report",
]


def __getattr__(name: str) -> Any:
    if name == "write_report":  # imported on use: matplotlib is slow to import
        from gradsurrogate.diffnet.report import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
