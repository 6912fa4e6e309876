"""Results of an XOR run, shared by the sequential (:mod:`.train`) and the vectorised
(:mod:`.ensemble`) runners: loss and accuracy, the decision-function grid, gradient-diagnostic
rows and the record line."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..diagnostics import METRICS, GradientRecorder
from ..tasks import get_task
from .config import XorConfig
from .data import bayes_accuracy

__all__ = ["BOUNDARY_LIM", "BOUNDARY_N", "CURVE_KEYS", "boundary_grid", "boundary_list",
           "build_record", "diag_means", "diag_step", "finite_or_none", "loss_and_accuracy",
           "max_rise"]


#: The decision function is stored on a BOUNDARY_N² grid over [-BOUNDARY_LIM, BOUNDARY_LIM]².
BOUNDARY_LIM, BOUNDARY_N = 2.5, 25


CURVE_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def loss_and_accuracy(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy over the last-but-one dim: logits (..., n, 2), y (..., n).

    A sample with non-finite logits counts as misclassified.
    """
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                           reduction="none").reshape(y.shape).mean(-1)
    ok = torch.isfinite(logits).all(-1) & (logits.argmax(-1) == y)
    return loss, ok.to(logits.dtype).mean(-1)


def boundary_grid(dtype: torch.dtype, device: torch.device) -> Tensor:
    """(BOUNDARY_N², 2) points, row-major over x₂ then x₁."""
    axis = torch.linspace(-BOUNDARY_LIM, BOUNDARY_LIM, BOUNDARY_N, dtype=dtype, device=device)
    x2, x1 = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x1.reshape(-1), x2.reshape(-1)], -1)


def diag_means(steps: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean of each metric over the recorded steps, per ``layer/target``."""
    out: dict[str, dict[str, float | None]] = {}
    keys = sorted({k for s in steps for k in s if k != "step"})
    for key in keys:
        vals = [s[key] for s in steps if key in s]
        out[key] = {}
        for metric in METRICS:
            xs = [v[metric] for v in vals if v[metric] is not None]
            out[key][metric] = finite_or_none(sum(xs) / len(xs)) if xs else None
    return out


def diag_step(rec: GradientRecorder, step: int, member: int | None = None) -> dict[str, Any]:
    """One step's diagnostics as ``{"step": s, "layer/target": {metric: value}}``."""
    row: dict[str, Any] = {"step": step}
    for r in rec.records:
        vals = {}
        for metric in METRICS:
            v = getattr(r, metric)
            vals[metric] = finite_or_none(float(v if member is None else v[member]))
        row[f"{r.layer}/{r.target}"] = vals
    return row


def max_rise(losses: list[float | None]) -> float | None:
    """Largest rise of a curve above its running minimum, ``max_t (L_t - min_{s<=t} L_s)``
    (0 for a monotone decrease; ``None`` if no finite point): a measure of instability."""
    best, rise = math.inf, 0.0
    seen = False
    for v in losses:
        if v is None:
            continue
        seen = True
        best = min(best, v)
        rise = max(rise, v - best)
    return rise if seen else None


def build_record(config: XorConfig, curves: dict[str, Any], diverged_step: int | None,
                 seconds: float, vectorised: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The results line and the curves line of one finished run (``bayes_acc`` and
    ``steps_to_90pct_bayes`` are ``None`` for tasks other than ``xor``)."""
    bayes = bayes_accuracy(config.sigma, config.label_noise) if config.task == "xor" else None
    reached = [s for s, a in zip(curves["step"], curves["test_acc"])
               if bayes is not None and a is not None and a >= 0.9 * bayes]
    record = {
        "run_id": config.run_id,
        "config": config.to_dict(),
        "bayes_acc": bayes,
        "chance_acc": 1.0 / get_task(config.task).classes,
        "final_test_acc": curves["test_acc"][-1],
        "final_test_loss": curves["test_loss"][-1],
        "final_train_acc": curves["train_acc"][-1],
        "final_train_loss": curves["train_loss"][-1],
        "diverged": diverged_step is not None,
        "diverged_step": diverged_step,
        "steps_done": curves["step"][-1],
        "steps_to_90pct_bayes": reached[0] if reached else None,
        "best_test_acc": max(curves["test_acc"]),
        "max_test_loss_rise": max_rise(curves["test_loss"]),
        "grad_diagnostics": diag_means(curves["diag"]),
        "seconds": seconds,
        "vectorised": vectorised,
        "env": _environment(),
    }
    return record, {"run_id": config.run_id, **curves}


@functools.lru_cache(maxsize=1)
def _environment() -> dict[str, Any]:
    """Machine and versions (:func:`~gradsurrogate.xor.results.environment`), once per
    process."""
    from .results import environment

    return environment()


def boundary_list(p1: Tensor) -> list[float | None]:
    """P(class 1) on the boundary grid, 3 decimals (``None`` where non-finite)."""
    return [round(v, 3) if math.isfinite(v) else None for v in p1.tolist()]
