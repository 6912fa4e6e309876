"""Settings of the reference's experiments: :class:`ExperimentConfig`, the optimiser
recipes, the learning-rate schedule and how stored runs record their settings.
"""

from __future__ import annotations

import ast
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from gradsurrogate.diffnet.problems import PROBLEMS

__all__ = [
    "HIDDEN_LRS", "LOSSES", "METRIC_KEYS", "RECIPES", "SCHEDULES", "ExperimentConfig",
    "config_from", "eval_epochs", "lr_at", "settings_match", "settings_text",
]

LOSSES = ("type1", "type2", "hessian")
METRIC_KEYS = ("f", "df", "d2f")  # the three test MSEs, in the order of ``mse[..., k]``
SCHEDULES = ("constant", "cosine")
HIDDEN_LRS = ("same", "fan_in", "freq")


def lr_at(cfg: ExperimentConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): ``cfg.lr`` throughout for ``"constant"`` (the
    reference); for ``"cosine"``, lr·(r + (1 - r)·½(1 + cos(π e / (E - 1)))) with
    r = ``lr_final``, i.e. from lr at the first epoch down to r·lr at the last."""
    if cfg.schedule == "constant" or cfg.epochs < 2:
        return cfg.lr
    frac = 0.5 * (1.0 + math.cos(math.pi * epoch / (cfg.epochs - 1)))
    return cfg.lr * (cfg.lr_final + (1.0 - cfg.lr_final) * frac)


@dataclass(frozen=True)
class ExperimentConfig:
    """Defaults = the reference's setting (FACTS.md); ``quick()`` gives a CI-sized run."""

    problem: str = "sin1d"
    activations: tuple[str, ...] = ("relu", "softplus", "tanh", "cos2pi")
    losses: tuple[str, ...] = LOSSES
    width: int = 128
    depth: int | None = None  # None: the problem's reference depth
    gain_hidden: float | None = None  # None: DifferentialMLP's default (√2, or √2/ω if periodic)
    n_train: int = 25_600
    epochs: int = 500
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-6
    noise: float = 1e-3
    seed: int = 42
    dtype: str = "float32"
    amsgrad: bool = True
    schedule: str = "constant"  # reference: constant lr; "cosine": decay to lr·lr_final
    lr_final: float = 1e-2
    hidden_lr: str = "same"  # "fan_in": hidden-to-hidden matrices at lr / fan-in (μP);
    # "freq": hidden layers of a periodic activation cos(ωa) at lr / ω
    inits: int = 1  # independently initialised members per loss (seed spread on one data set)
    eval_every: int = 0  # > 0: test MSEs after every multiple of it (learning curves); 0: off

    def with_recipe(self, name: str) -> ExperimentConfig:
        """This config with the optimiser settings of recipe ``name`` (see :data:`RECIPES`):
        ``amsgrad``, ``lr``, ``schedule``, ``hidden_lr`` (and ``lr_final``) are replaced, so
        set single ones after choosing the recipe."""
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; accepted: {', '.join(RECIPES)}")
        return replace(self, **RECIPES[name])

    def quick(self) -> ExperimentConfig:
        return replace(self, width=32, n_train=1024, epochs=3)

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise ValueError(f"unknown problem {self.problem!r}; accepted: {', '.join(PROBLEMS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; accepted: {', '.join(SCHEDULES)}"
            )
        if self.hidden_lr not in HIDDEN_LRS:
            raise ValueError(
                f"unknown hidden_lr {self.hidden_lr!r}; accepted: {', '.join(HIDDEN_LRS)}"
            )
        if not (isinstance(self.inits, int) and self.inits >= 1):
            raise ValueError(f"inits must be a positive integer, got {self.inits!r}")
        if not (isinstance(self.eval_every, int) and self.eval_every >= 0):
            raise ValueError(f"eval_every must be a non-negative integer, got {self.eval_every!r}")
        if not 0.0 < self.lr_final <= 1.0:
            raise ValueError(f"lr_final must lie in (0, 1], got {self.lr_final!r}")
        bad = [loss for loss in self.losses if loss not in LOSSES]
        if bad or not self.losses:
            raise ValueError(f"unknown losses {bad or self.losses!r}; accepted: {LOSSES}")


# Optimiser recipes. "reference": the reference's AMSGrad at a constant lr 1e-3 (the
# defaults above). "tuned": plain Adam from lr 3e-3, cosine-annealed to 3e-6 over the same
# 500 epochs; AMSGrad keeps the largest second moment seen early in training, so its late
# steps shrink and the loss plateaus well above the data noise (docs/diffnet.md).
# ``hidden_lr`` ("fan_in", "freq") is an option, not part of either recipe: each fixes the
# 2-d cos(2πx) nets' instability at lr 3e-3 but costs other cells (docs/diffnet.md).
RECIPES: dict[str, dict[str, object]] = {
    "reference": {"amsgrad": True, "lr": 1e-3, "schedule": "constant", "hidden_lr": "same"},
    "tuned": {"amsgrad": False, "lr": 3e-3, "schedule": "cosine", "lr_final": 1e-3,
              "hidden_lr": "same"},
}


def config_from(stored: dict) -> ExperimentConfig | None:
    """An :class:`ExperimentConfig` from a stored ``asdict`` of any earlier version: fields
    added since then take their defaults (what those runs did before the field existed);
    None if a stored field no longer exists or its value is invalid."""
    try:
        return ExperimentConfig(**stored)
    except (TypeError, ValueError):
        return None


def settings_text(cfg: ExperimentConfig) -> str:
    """The settings a stored result records (``k = repr(v)`` lines, activations excluded)."""
    return "\n".join(f"{k} = {v!r}" for k, v in asdict(cfg).items() if k != "activations")


def settings_match(stored: str, cfg: ExperimentConfig) -> bool:
    """Whether a stored result's settings (see :func:`settings_text`) describe ``cfg``."""
    try:
        fields = {k: ast.literal_eval(v) for k, v in
                  (line.split(" = ", 1) for line in stored.splitlines())}
    except (ValueError, SyntaxError):
        return False
    return config_from({**fields, "activations": cfg.activations}) == cfg


def eval_epochs(cfg: ExperimentConfig) -> np.ndarray:
    """Epochs (1-based) after which ``eval_every`` records the test MSEs: every multiple of
    ``eval_every`` up to ``epochs`` (the last epoch only if ``eval_every`` divides it)."""
    if not cfg.eval_every:
        return np.zeros(0, dtype=int)
    return cfg.eval_every * np.arange(1, cfg.epochs // cfg.eval_every + 1)
