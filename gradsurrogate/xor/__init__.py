"""The XOR destroy-Jacobian benchmark: how does training degrade when the backward is corrupted?

* :func:`run_xor` — train one config (sequential), returns ``(record, curves)``;
* :func:`run_ensemble` — train many configs as one vectorised ensemble;
* :func:`run_grid` — run a list of configs grouped into ensembles, appending to
  ``DIR/results.jsonl`` and skipping finished runs (resumable); :func:`default_grid` is the
  destroy experiment;
* :func:`write_report` — Markdown summary and PNG figures of a results directory.
"""

from .config import XorConfig
from .data import bayes_accuracy, make_xor, make_xor_split
from .grid import default_grid, grid_configs, run_grid
from .report import write_report
from .results import read_results
from .train import run_xor
from .vectorised import run_ensemble

__all__ = [
    "XorConfig",
    "bayes_accuracy",
    "default_grid",
    "grid_configs",
    "make_xor",
    "make_xor_split",
    "read_results",
    "run_ensemble",
    "run_grid",
    "run_xor",
    "write_report",
]
