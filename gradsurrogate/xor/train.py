"""Train one XOR run (sequential reference path) and build its result record.

:func:`run_xor` trains one :class:`~gradsurrogate.xor.model.XorMLP` with ``torch.optim`` and
returns ``(record, curves)``. The record holds ``config`` (every setting, the spec as a string),
``final_test_acc``, ``final_test_loss``, ``diverged`` and more; ``curves`` the train/test loss
and accuracy at every evaluation, per-step gradient diagnostics and the final decision function
on a grid. A non-finite training loss stops the run before its update; the parameters of that
step are evaluated and the run is marked ``diverged`` (non-finite numbers become ``None``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..diagnostics import METRICS, GradientRecorder, record_gradients
from .config import XorConfig
from .data import XorData, bayes_accuracy, generator, make_xor_split
from .model import XorMLP, init_params

__all__ = ["BOUNDARY_LIM", "BOUNDARY_N", "build_record", "evaluate", "max_rise", "run_xor"]

#: The decision function is stored on a BOUNDARY_N² grid over [-BOUNDARY_LIM, BOUNDARY_LIM]².
BOUNDARY_LIM, BOUNDARY_N = 2.5, 25
CURVE_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def evaluate(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
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


def batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[Tensor | None]:
    """Minibatch indices: a fresh ``randperm(n)`` per epoch cut into ``n // batch_size`` batches.

    Yields ``None`` forever when ``batch_size`` is 0 or ≥ ``n`` (full batch).
    """
    if batch_size == 0 or batch_size >= n:
        while True:
            yield None
    per_epoch = n // batch_size
    while True:
        perm = torch.randperm(n, generator=gen)
        for k in range(per_epoch):
            yield perm[k * batch_size:(k + 1) * batch_size]


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
    """The results line and the curves line of one finished run."""
    bayes = bayes_accuracy(config.sigma, config.label_noise)
    reached = [s for s, a in zip(curves["step"], curves["test_acc"])
               if a is not None and a >= 0.9 * bayes]
    record = {
        "run_id": config.run_id,
        "config": config.to_dict(),
        "bayes_acc": bayes,
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
    }
    return record, {"run_id": config.run_id, **curves}


def run_xor(config: XorConfig, device: torch.device | str | None = None,
            dtype: torch.dtype | None = None, progress: bool | None = False
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one run sequentially; returns ``(record, curves)`` (see the module docstring).

    ``progress``: a step bar (``None``: only on a TTY; off by default, for grids).
    """
    start = time.perf_counter()
    dtype = dtype or torch.get_default_dtype()
    device = torch.device(device or "cpu")
    train, test = make_xor_split(config.n_train, config.n_test, config.sigma,
                                 config.label_noise, config.data_seed, dtype, device)
    params = init_params(config.depth, config.width, generator(config.init_seed, "init"),
                         dtype, device)
    noise = generator(config.noise_seed, "noise")
    model = XorMLP(params, config.backward_spec(), noise)
    opt: torch.optim.Optimizer
    if config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.lr)
    order = batches(config.n_train, config.batch_size, generator(config.data_seed, "batches"))
    curves: dict[str, Any] = {"step": [], **{k: [] for k in CURVE_KEYS}, "diag": []}

    def log_eval(step: int) -> None:
        with torch.no_grad():
            for name, data in (("train", train), ("test", test)):
                loss, acc = evaluate(model(data.x), data.y)
                curves[f"{name}_loss"].append(finite_or_none(float(loss)))
                curves[f"{name}_acc"].append(float(acc))
        curves["step"].append(step)

    log_eval(0)
    diverged_step = None
    bar = tqdm(range(config.steps), desc=config.spec, unit="step", leave=False,
               disable=None if progress is None else not progress)
    for step in bar:
        xb, yb = _batch(train, next(order))
        diag = config.diag_every > 0 and step % config.diag_every == 0
        if diag:
            with record_gradients(model) as rec:
                loss = F.cross_entropy(model(xb), yb)
        else:
            loss = F.cross_entropy(model(xb), yb)
        if not math.isfinite(float(loss.detach())):
            diverged_step = step
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if diag:
            curves["diag"].append(diag_step(rec, step))
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            log_eval(step + 1)
    bar.close()
    if diverged_step is not None and curves["step"][-1] != diverged_step:
        log_eval(diverged_step)
    with torch.no_grad():
        p1 = torch.softmax(model(boundary_grid(dtype, device)), -1)[:, 1]
    curves["boundary"] = boundary_list(p1)
    return build_record(config, curves, diverged_step, time.perf_counter() - start, False)


def _batch(data: XorData, index: Tensor | None) -> tuple[Tensor, Tensor]:
    if index is None:
        return data.x, data.y
    index = index.to(data.x.device)
    return data.x[index], data.y[index]


def boundary_list(p1: Tensor) -> list[float | None]:
    """P(class 1) on the boundary grid, 3 decimals (``None`` where non-finite)."""
    return [round(v, 3) if math.isfinite(v) else None for v in p1.tolist()]
