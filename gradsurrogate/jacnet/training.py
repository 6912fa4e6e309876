"""Training loop shared by the JacNet experiments: full-batch Adam through the integrator with
the accuracy schedule (node counts for Gauss–Legendre, tolerances for dopri5).

A non-finite loss stops training: the result is marked diverged at that step (no update is
taken from it)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gradsurrogate.integrate import NodeSchedule, ToleranceSchedule
from gradsurrogate.registry import check_choice, check_int, check_number, lookup

from .model import JacNet

__all__ = ["SCHEDULES", "TRAIN_METHODS", "TrainResult", "l1_loss", "make_schedule", "train"]

#: training integrator -> its accuracy schedule (the reference's annealing for dopri5, its
#: node-count analogue for Gauss–Legendre)
SCHEDULES: dict[str, Callable[[], NodeSchedule | ToleranceSchedule]] = {
    "gauss-legendre": lambda: NodeSchedule(n=4, max_n=64, rtol=0.1, atol=0.1),
    "dopri5": lambda: ToleranceSchedule(rtol=0.1, atol=0.1),
}
TRAIN_METHODS: tuple[str, ...] = tuple(SCHEDULES)


def make_schedule(method: str) -> NodeSchedule | ToleranceSchedule:
    """A fresh schedule for training ``method``; ``ValueError`` naming the accepted ones."""
    return lookup(SCHEDULES, method, "training method")()


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Paper's loss: mean over points of ``‖ŷ - y‖`` (``|ŷ - y|`` in 1-d)."""
    return (pred - target).norm(dim=-1).mean()


@dataclass
class TrainResult:
    """``history``: one record per completed step (loss, Jacobian evaluations per point, the
    schedule's setting in force: ``n`` nodes or ``rtol``/``atol``, and wall time).
    ``diverged_step``: the step whose loss was non-finite (training stopped there), else None."""

    history: list[dict[str, Any]] = field(default_factory=list)
    diverged_step: int | None = None

    @property
    def diverged(self) -> bool:
        return self.diverged_step is not None

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history]


def _params_finite(model: JacNet) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def train(
    model: JacNet,
    x: Tensor,
    y: Tensor,
    steps: int = 50,
    lr: float = 0.01,
    method: str = "gauss-legendre",
) -> TrainResult:
    """Full-batch Adam on ``l1_loss(model(x), y)`` for ``steps`` steps; ``x (n, i)``, ``y (n, o)``.

    Stops at the first non-finite loss (or a solver failure on non-finite weights) and returns
    the history so far with ``diverged_step`` set.
    """
    check_int(steps, "steps", 1)
    check_number(lr, "lr")
    method = check_choice(method, TRAIN_METHODS, "training method")
    schedule = SCHEDULES[method]()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    y_mag = y.norm(dim=-1).mean().item()
    out = TrainResult()
    for step in range(steps):
        t0 = time.perf_counter()
        opts = schedule.options()
        if method == "gauss-legendre":
            opts["error"] = "double"
        try:
            res = model.integrate(x, method=method, **opts)
        except (AssertionError, RuntimeError):  # e.g. dopri5's step-size underflow on NaNs
            if _params_finite(model):
                raise
            out.diverged_step = step
            break
        loss = l1_loss(res.value, y)
        if not math.isfinite(loss.item()):
            out.diverged_step = step
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec = {"step": step, "loss": loss.item(), "n_evals": res.n_evals,
               "time": time.perf_counter() - t0, **schedule.options()}
        if isinstance(schedule, NodeSchedule):
            err = res.error.max().item() if res.error is not None else None
            schedule.step(rec["loss"], y_mag, error=err)
            rec["atol"] = schedule.history[-1][1]
        else:
            schedule.step(rec["loss"], y_mag)
        out.history.append(rec)
    if not out.diverged and not _params_finite(model):  # the last update overflowed
        out.diverged_step = steps
    return out
