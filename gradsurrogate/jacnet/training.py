"""Training loop shared by the JacNet experiments: full-batch Adam through the integrator with
the accuracy schedule (node counts for Gauss–Legendre, tolerances for dopri5)."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from gradsurrogate.integrate import NodeSchedule, ToleranceSchedule

from .model import JacNet

METHODS = ("gauss-legendre", "dopri5")


def make_schedule(method: str) -> NodeSchedule | ToleranceSchedule:
    """Reference annealing for ``dopri5``; its node-count analogue for ``gauss-legendre``."""
    if method == "dopri5":
        return ToleranceSchedule(rtol=0.1, atol=0.1)
    if method == "gauss-legendre":
        return NodeSchedule(n=4, max_n=64, rtol=0.1, atol=0.1)
    raise ValueError(f"unknown training method {method!r}; accepted: {', '.join(METHODS)}")


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Paper's loss: mean over points of ``‖ŷ - y‖`` (``|ŷ - y|`` in 1-d)."""
    return (pred - target).norm(dim=-1).mean()


def train(
    model: JacNet,
    x: Tensor,
    y: Tensor,
    steps: int = 50,
    lr: float = 0.01,
    method: str = "gauss-legendre",
) -> list[dict[str, Any]]:
    """Full-batch Adam on ``l1_loss(model(x), y)`` for ``steps`` steps; ``x (n, i)``, ``y (n, o)``.

    Returns one record per step: loss, Jacobian evaluations per point, the schedule's setting
    in force (``n`` nodes or ``atol``) and wall time.
    """
    schedule = make_schedule(method)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    y_mag = y.norm(dim=-1).mean().item()
    history: list[dict[str, Any]] = []
    for step in range(steps):
        t0 = time.perf_counter()
        opts = schedule.options()
        if method == "gauss-legendre":
            opts["error"] = "double"
        res = model.integrate(x, method=method, **opts)
        loss = l1_loss(res.value, y)
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
        history.append(rec)
    return history
