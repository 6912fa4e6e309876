"""Settings of the reference's experiments: :class:`ExperimentConfig` (the only source of a
run's settings, validated once), the optimiser recipes, the learning-rate schedule and how
stored runs record their settings.
"""

from __future__ import annotations

import ast
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from gradsurrogate.activations import ACTIVATIONS
from gradsurrogate.diffnet.problems import DIFFNET_PROBLEMS
from gradsurrogate.registry import check_choice, check_int, check_number, lookup

__all__ = [
    "DIFFNET_LOSSES", "DTYPES", "HIDDEN_LRS", "LR_SCHEDULES", "MAX_EPOCHS", "MAX_TRAIN",
    "METRIC_KEYS", "RECIPES",
    "ExperimentConfig", "config_from", "eval_epochs", "lr_at", "parse_settings", "run_config",
    "settings_match", "settings_text",
]

DIFFNET_LOSSES = ("type1", "type2", "hessian")
METRIC_KEYS = ("f", "df", "d2f")  # the three test MSEs, in the order of ``mse[..., k]``
LR_SCHEDULES = ("constant", "cosine")
HIDDEN_LRS = ("same", "fan_in", "freq")
DTYPES = ("float32", "float64")
MAX_EPOCHS = 10**6  # the loss history (epochs, losses) is allocated up front
MAX_TRAIN = 10**8  # the training set (n_train, 1 + n + n²) is made up front


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _names(value: Any, field_name: str, check: Any) -> tuple[str, ...]:
    """A non-empty tuple of distinct names (field ``field_name``), each normalised by
    ``check``."""
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (tuple, list)) or not items:
        raise ValueError(f"{field_name} must be a non-empty list of names; got {value!r}")
    names = tuple(check(v) for v in items)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{field_name} list {', '.join(twice)} more than once: "
                         f"{list(items)!r}")
    return names


@dataclass(frozen=True)
class ExperimentConfig:
    """Defaults = the reference's published setting (see docs/diffnet.md); ``quick()`` gives
    a CI-sized run.

    Validated once here: a bad value raises ``ValueError`` naming it and the accepted ones.
    Names are normalised (activations lower-case), numbers made ``float``, lists ``tuple``.
    """

    problem: str = field(default="sin1d", metadata=_help(
        f"target function: {', '.join(DIFFNET_PROBLEMS)}"))
    activations: tuple[str, ...] = field(
        default=("relu", "softplus", "tanh", "cos", "cos2pi"), metadata=_help(
            "activations, one run each (the reference's Cos column is cos(x): cos)"))
    losses: tuple[str, ...] = field(default=DIFFNET_LOSSES, metadata=_help(
        f"loss variants trained together: {', '.join(DIFFNET_LOSSES)}"))
    width: int = field(default=128, metadata=_help("hidden units per layer"))
    depth: int | None = field(default=None, metadata=_help(
        "hidden layers (None: the problem's reference depth, 1-d 1, 2-d 2)"))
    gain_hidden: float | None = field(default=None, metadata=_help(
        "xavier gain of the hidden layers, > 0 (None: √2, or √2/ω if periodic)"))
    n_train: int = field(default=25_600, metadata=_help("training samples (>= batch, "
                                                        "<= 1e8)"))
    epochs: int = field(default=500, metadata=_help("training epochs (1 to 1e6)"))
    batch: int = field(default=256, metadata=_help("minibatch size"))
    lr: float = field(default=1e-3, metadata=_help("initial learning rate (finite, > 0)"))
    weight_decay: float = field(default=1e-6, metadata=_help("Adam weight decay (>= 0)"))
    noise: float = field(default=1e-3, metadata=_help("std of the noise on x, f, J, H (>= 0)"))
    seed: int = field(default=42, metadata=_help("seed of data, init and batch order"))
    dtype: str = field(default="float32", metadata=_help(f"{', '.join(DTYPES)}"))
    amsgrad: bool = field(default=True, metadata=_help("AMSGrad (false: plain Adam)"))
    schedule: str = field(default="constant", metadata=_help(
        f"learning-rate schedule: {', '.join(LR_SCHEDULES)}"))
    lr_final: float = field(default=1e-2, metadata=_help(
        "cosine schedule: final lr as a fraction of the initial one, in (0, 1]"))
    hidden_lr: str = field(default="same", metadata=_help(
        "fan_in: hidden-to-hidden matrices learn at lr / fan-in (μP's Adam rule); freq: "
        "hidden layers of a periodic activation cos(ωa) at lr / ω; same: no scaling"))
    inits: int = field(default=1, metadata=_help(
        "independently initialised members per loss, trained on the same batches; the "
        "report adds their median [min, max]"))
    eval_every: int = field(default=0, metadata=_help(
        "record the test MSEs every N epochs (learning curves; training unchanged); 0: off"))

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)
        check_choice(self.problem, DIFFNET_PROBLEMS, "problem")
        put("activations", _names(self.activations, "activations",
                                  lambda a: lookup(ACTIVATIONS, a, "activation").name))
        put("losses", _names(self.losses, "losses",
                             lambda x: check_choice(x, DIFFNET_LOSSES, "loss")))
        for name, low in (("width", 1), ("batch", 1), ("seed", 0), ("inits", 1),
                          ("eval_every", 0)):
            check_int(getattr(self, name), name, low)
        # bounds: both size arrays allocated up front (loss history, training set)
        check_int(self.epochs, "epochs", 1, MAX_EPOCHS)
        check_int(self.n_train, "n_train", 1, MAX_TRAIN)
        if self.depth is not None:
            check_int(self.depth, "depth", 1)
        if self.n_train < self.batch:
            raise ValueError(f"n_train ({self.n_train}) must be at least batch ({self.batch}): "
                             "each epoch trains n_train // batch full batches")
        put("lr", check_number(self.lr, "lr"))
        put("weight_decay", check_number(self.weight_decay, "weight_decay", low_open=False))
        put("noise", check_number(self.noise, "noise", low_open=False))
        put("lr_final", check_number(self.lr_final, "lr_final", high=1.0))
        if self.gain_hidden is not None:
            put("gain_hidden", check_number(self.gain_hidden, "gain_hidden"))
        check_choice(self.dtype, DTYPES, "dtype")
        check_choice(self.schedule, LR_SCHEDULES, "schedule")
        check_choice(self.hidden_lr, HIDDEN_LRS, "hidden_lr")
        if not isinstance(self.amsgrad, bool):
            raise ValueError(f"amsgrad must be true or false; got {self.amsgrad!r}")

    def with_recipe(self, name: str) -> ExperimentConfig:
        """This config with the optimiser settings of recipe ``name`` (see :data:`RECIPES`):
        ``amsgrad``, ``lr``, ``schedule``, ``hidden_lr`` (and ``lr_final``) are replaced, so
        set single ones after choosing the recipe."""
        return replace(self, **lookup(RECIPES, name, "recipe"))

    def quick(self) -> ExperimentConfig:
        """CI-sized: width 32, 1,024 samples, 3 epochs."""
        return replace(self, width=32, n_train=1024, epochs=3)


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


def lr_at(cfg: ExperimentConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): ``cfg.lr`` throughout for ``"constant"`` (the
    reference); for ``"cosine"``, lr·(r + (1 - r)·½(1 + cos(π e / (E - 1)))) with
    r = ``lr_final``, i.e. from lr at the first epoch down to r·lr at the last."""
    if cfg.schedule == "constant" or cfg.epochs < 2:
        return cfg.lr
    frac = 0.5 * (1.0 + math.cos(math.pi * epoch / (cfg.epochs - 1)))
    return cfg.lr * (cfg.lr_final + (1.0 - cfg.lr_final) * frac)


def run_config(cfg: ExperimentConfig, activation: str) -> ExperimentConfig:
    """The config of one stored run: ``cfg`` restricted to ``activation``."""
    return replace(cfg, activations=(activation,))


def config_from(stored: dict) -> ExperimentConfig | None:
    """An :class:`ExperimentConfig` from a stored ``asdict`` of any earlier version: fields
    added since then take their defaults (what those runs did before the field existed);
    None if a stored field no longer exists or its value is invalid."""
    try:
        return ExperimentConfig(**stored)
    except (TypeError, ValueError):
        return None


def settings_text(cfg: ExperimentConfig) -> str:
    """The settings a stored ``.npz`` records (``k = repr(v)`` lines, activations excluded)."""
    return "\n".join(f"{k} = {v!r}" for k, v in asdict(cfg).items() if k != "activations")


def parse_settings(stored: str, activation: str) -> ExperimentConfig | None:
    """The run config of a stored ``.npz``'s settings text (see :func:`settings_text`), for
    ``activation``; None if the text does not describe a valid config."""
    try:
        fields = {k: ast.literal_eval(v) for k, v in
                  (line.split(" = ", 1) for line in stored.splitlines())}
    except (ValueError, SyntaxError):
        return None
    return config_from({**fields, "activations": (activation,)})


def settings_match(stored: str, cfg: ExperimentConfig) -> bool:
    """Whether a stored result's settings (see :func:`settings_text`) describe ``cfg``."""
    return parse_settings(stored, cfg.activations[0]) == replace(
        cfg, activations=cfg.activations[:1])


def eval_epochs(cfg: ExperimentConfig) -> np.ndarray:
    """Epochs (1-based) after which ``eval_every`` records the test MSEs: every multiple of
    ``eval_every`` up to ``epochs`` (the last epoch only if ``eval_every`` divides it)."""
    if not cfg.eval_every:
        return np.zeros(0, dtype=int)
    return cfg.eval_every * np.arange(1, cfg.epochs // cfg.eval_every + 1)
