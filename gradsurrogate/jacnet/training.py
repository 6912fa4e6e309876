"""Training loop shared by the JacNet experiments: Adam through the integrator with the
accuracy schedule (node counts for Gauss–Legendre, tolerances for dopri5), full batch or
minibatches.

Annealing (the reference's rule): after each step, both tolerances halve when the step's loss
is below ``atol + rtol · y_mag``, where ``y_mag`` is the **sum** of ``|y|`` over the step's
batch (``anneal="sum"``, the reference code) or the mean of ``‖y‖`` over it (``"mean"``, this
package's earlier rule). Gauss–Legendre training doubles its node count (up to 64) whenever
the step's ``|Q_2n − Q_n|`` estimate (max over points) exceeds the per-point tolerance
``atol + rtol · mean ‖y‖`` in force after the annealing decision.

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

__all__ = ["ANNEAL_SCALES", "SCHEDULES", "TRAIN_METHODS", "TrainResult", "Trainer", "l1_loss",
           "make_schedule", "target_magnitude", "train"]

#: training integrator -> its accuracy schedule (the reference's annealing for dopri5, its
#: node-count analogue for Gauss–Legendre)
SCHEDULES: dict[str, Callable[[], NodeSchedule | ToleranceSchedule]] = {
    "gauss-legendre": lambda: NodeSchedule(n=4, max_n=64, rtol=0.1, atol=0.1),
    "dopri5": lambda: ToleranceSchedule(rtol=0.1, atol=0.1),
}
TRAIN_METHODS: tuple[str, ...] = tuple(SCHEDULES)
#: how the annealing threshold measures the targets of a batch
ANNEAL_SCALES: tuple[str, ...] = ("sum", "mean")


def make_schedule(method: str) -> NodeSchedule | ToleranceSchedule:
    """A fresh schedule for training ``method``; ``ValueError`` naming the accepted ones."""
    return lookup(SCHEDULES, method, "training method")()


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Paper's loss: mean over points of ``‖ŷ - y‖`` (``|ŷ - y|`` in 1-d)."""
    return (pred - target).norm(dim=-1).mean()


def target_magnitude(y: Tensor, anneal: str = "sum") -> float:
    """``y_mag`` of the annealing threshold for a batch ``y (b, o)``: ``Σ |y_ij|`` (``sum``,
    the reference) or ``mean_i ‖y_i‖`` (``mean``)."""
    anneal = check_choice(anneal, ANNEAL_SCALES, "annealing scale")
    return y.abs().sum().item() if anneal == "sum" else y.norm(dim=-1).mean().item()


@dataclass
class TrainResult:
    """``history``: one record per completed step (step, epoch, loss, Jacobian evaluations per
    point, batch size, the schedule's setting in force: ``n`` nodes or ``rtol``/``atol``, the
    quadrature's error estimate for Gauss–Legendre, wall time).
    ``epochs``: one record per completed pass over the data (mean step loss weighted by batch
    size, steps, evaluations, time, the setting at its end). ``diverged_step``: the step whose
    loss was non-finite (training stopped there), else None."""

    history: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    diverged_step: int | None = None

    @property
    def diverged(self) -> bool:
        return self.diverged_step is not None

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history]


def _params_finite(model: JacNet) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class Trainer:
    """Adam on ``l1_loss(model(x), y)`` in passes (epochs) over ``x (n, i)``, ``y (n, o)``.

    ``batch_size`` 0 or ``≥ n``: one full-batch step per epoch, in data order; otherwise the
    points are reshuffled each epoch (``torch.Generator`` seeded with ``seed``) and cut into
    ``ceil(n / batch_size)`` minibatches (the last one may be smaller). ``max_nodes`` caps the
    Gauss–Legendre node count (default 64; each step costs ``3 n`` Jacobian evaluations per
    point). The state (model,
    optimiser, schedule, shuffling generator, result so far) round-trips through
    ``state_dict``/``load_state_dict`` so a run can resume after any epoch.
    """

    def __init__(self, model: JacNet, x: Tensor, y: Tensor, lr: float = 0.01,
                 method: str = "gauss-legendre", *, batch_size: int = 0, anneal: str = "sum",
                 seed: int = 0, max_nodes: int | None = None) -> None:
        check_number(lr, "lr")
        self.method = check_choice(method, TRAIN_METHODS, "training method")
        self.anneal = check_choice(anneal, ANNEAL_SCALES, "annealing scale")
        self.batch_size = check_int(batch_size, "batch_size", 0)
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(f"x and y must hold the same number (>= 1) of points; got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        self.model, self.x, self.y = model, x, y
        self.schedule = SCHEDULES[self.method]()
        if max_nodes is not None and isinstance(self.schedule, NodeSchedule):
            self.schedule.max_n = check_int(max_nodes, "max_nodes", self.schedule.n, 64)
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.gen = torch.Generator().manual_seed(check_int(seed, "seed", 0))
        self.result = TrainResult()

    @property
    def full_batch(self) -> bool:
        return self.batch_size == 0 or self.batch_size >= self.x.shape[0]

    def _batches(self) -> list[Tensor | None]:
        if self.full_batch:
            return [None]
        order = torch.randperm(self.x.shape[0], generator=self.gen)
        return list(order.split(self.batch_size))

    def _step(self, idx: Tensor | None, epoch: int) -> dict[str, Any] | None:
        """One Adam step on the batch ``idx`` (``None``: all points); ``None`` if diverged."""
        x, y = (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])
        step = len(self.result.history)
        t0 = time.perf_counter()
        opts = self.schedule.options()
        if self.method == "gauss-legendre":
            opts["error"] = "double"
        try:
            res = self.model.integrate(x, method=self.method, **opts)
        except (AssertionError, RuntimeError):  # e.g. dopri5's step-size underflow on NaNs
            if _params_finite(self.model):
                raise
            self.result.diverged_step = step
            return None
        loss = l1_loss(res.value, y)
        if not math.isfinite(loss.item()):
            self.result.diverged_step = step
            return None
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        rec = {"step": step, "epoch": epoch, "loss": loss.item(), "n_evals": res.n_evals,
               "batch": x.shape[0], "time": time.perf_counter() - t0, **self.schedule.options()}
        y_mag = target_magnitude(y, self.anneal)
        if isinstance(self.schedule, NodeSchedule):
            # the annealing decision follows the rule; node growth compares the per-point
            # error estimate with a per-point tolerance, atol + rtol · mean ‖y‖ (as dopri5's
            # error control is per point): a batch-sum scale there would never grow n
            sched = self.schedule
            err = res.error.max().item() if res.error is not None else 0.0
            rec.update(atol=sched.atol, rtol=sched.rtol, error=err)
            sched.history.append((sched.n, sched.atol))
            sched.anneal(rec["loss"], y_mag)
            if err > sched.threshold(target_magnitude(y, "mean")) and sched.n < sched.max_n:
                sched.n = min(2 * sched.n, sched.max_n)
        else:
            self.schedule.step(rec["loss"], y_mag)
        self.result.history.append(rec)
        return rec

    def epoch(self) -> dict[str, Any] | None:
        """One pass over the data; its summary record, or ``None`` when a step diverged."""
        epoch = len(self.result.epochs)
        t0 = time.perf_counter()
        recs = []
        for idx in self._batches():
            rec = self._step(idx, epoch)
            if rec is None:
                return None
            recs.append(rec)
        if not _params_finite(self.model):  # the last update overflowed
            self.result.diverged_step = len(self.result.history)
            return None
        n = sum(r["batch"] for r in recs)
        summary = {"epoch": epoch, "loss": sum(r["loss"] * r["batch"] for r in recs) / n,
                   "last_loss": recs[-1]["loss"], "steps": len(recs),
                   "n_evals": sum(r["n_evals"] for r in recs),
                   "time": time.perf_counter() - t0, "atol": self.schedule.atol,
                   "rtol": self.schedule.rtol, **self.schedule.options()}
        self.result.epochs.append(summary)
        return summary

    def fit(self, epochs: int, on_epoch: Callable[[dict[str, Any]], None] | None = None
            ) -> TrainResult:
        """Train until ``epochs`` passes are done (counting those already done) or divergence;
        ``on_epoch(summary)`` after each finished pass."""
        check_int(epochs, "epochs", 1)
        while len(self.result.epochs) < epochs and not self.result.diverged:
            summary = self.epoch()
            if summary is not None and on_epoch is not None:
                on_epoch(summary)
        return self.result

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (``torch.save``-able)."""
        sched = {k: v for k, v in vars(self.schedule).items()}
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "schedule": sched, "gen": self.gen.get_state(),
                "history": self.result.history, "epochs": self.result.epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        for k, v in state["schedule"].items():
            setattr(self.schedule, k, v)
        self.gen.set_state(state["gen"])
        self.result = TrainResult(list(state["history"]), list(state["epochs"]))


def train(
    model: JacNet,
    x: Tensor,
    y: Tensor,
    steps: int = 50,
    lr: float = 0.01,
    method: str = "gauss-legendre",
    *,
    batch_size: int = 0,
    anneal: str = "sum",
    seed: int = 0,
) -> TrainResult:
    """Adam on ``l1_loss(model(x), y)`` for ``steps`` passes over ``x (n, i)``, ``y (n, o)``:
    ``steps`` full-batch steps by default (the reference), or ``ceil(n / batch_size)``
    minibatch steps per pass (see :class:`Trainer`). ``batch_size ≥ n`` is full batch.

    Stops at the first non-finite loss (or a solver failure on non-finite weights) and returns
    the history so far with ``diverged_step`` set.
    """
    check_int(steps, "steps", 1)
    trainer = Trainer(model, x, y, lr, method, batch_size=batch_size, anneal=anneal, seed=seed)
    return trainer.fit(steps)
