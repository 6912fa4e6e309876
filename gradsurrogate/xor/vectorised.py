"""Train many runs of a task in one batched computation (the vectorised path of grids and
sweeps).

Runs that share :meth:`XorConfig.group_key` (task, architecture, steps, optimizer, batch size,
set sizes) are stacked as members ``e`` of one ensemble model, built by the task's
``ensemble`` builder (:class:`~.model.EnsembleXorMLP` for MLP tasks, the MNIST-1D CNN as
grouped convolutions): data (e, n, d) (one shared (n, d) copy for tasks with fixed data), weights
(e, ...), per-member learning rates, seeds and backward modes. The total loss is the sum of the
members' mean cross-entropies, so each member's gradient is the one it would get alone; member
``e`` draws its init, batches and backward noise from its own seeds, giving the numbers of
:func:`~gradsurrogate.xor.train.run_xor` (up to float rounding of batched kernels).

A member whose loss turns non-finite is frozen at that step (its update is masked out) and
recorded as diverged; the others carry on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..diagnostics import record_gradients
from ..ensemble import EnsembleOptimizer
from ..tasks import TASKS, get_task
from .config import XorConfig
from .data import XorData, generator
from .record import (
    CURVE_KEYS,
    boundary_grid,
    boundary_list,
    build_record,
    diag_step,
    finite_or_none,
    loss_and_accuracy,
)

__all__ = ["EVAL_ELEMENTS", "run_ensemble"]

#: evaluation runs in blocks of rows whose activations (e, rows, width) hold about this many
#: floats (8 MB: cache-friendly; one (e, n, width) pass over large sets is memory-bound)
EVAL_ELEMENTS = 1 << 21


def _stack_data(configs: Sequence[XorConfig], dtype: torch.dtype, device: torch.device
                ) -> tuple[XorData, XorData]:
    """Per-member data (e, n, d) / (e, n); a task with fixed data gets one shared copy:
    x (n, d), y (n,)."""
    task = get_task(configs[0].task)
    if task.fixed_data:
        return task.data(configs[0], dtype, device)
    cache: dict[tuple[Any, ...], tuple[XorData, XorData]] = {}
    pairs = []
    for c in configs:
        key = (c.n_train, c.n_test, c.sigma, c.label_noise, c.data_seed)
        if key not in cache:
            cache[key] = task.data(c, dtype, device)
        pairs.append(cache[key])
    out = []
    for k in range(2):
        sets = [p[k] for p in pairs]
        out.append(XorData(torch.stack([d.x for d in sets]), torch.stack([d.y for d in sets]),
                           torch.stack([d.y_clean for d in sets])))
    return out[0], out[1]


class _Batches:
    """Per-member minibatch indices (e, b), drawn like :func:`~.train.batches` per member."""

    def __init__(self, configs: Sequence[XorConfig]):
        c = configs[0]
        self.n, self.b = c.n_train, c.batch_size
        self.full = c.full_batch
        self.gens = [generator(x.data_seed, "batches") for x in configs]
        self.per_epoch = 0 if self.full else self.n // self.b
        self.k, self.perm = self.per_epoch, None

    def next(self) -> Tensor | None:
        if self.full:
            return None
        if self.k == self.per_epoch:
            self.perm = torch.stack([torch.randperm(self.n, generator=g) for g in self.gens])
            self.k = 0
        out = self.perm[:, self.k * self.b:(self.k + 1) * self.b]
        self.k += 1
        return out


def _gather(data: XorData, index: Tensor | None) -> tuple[Tensor, Tensor]:
    """Minibatch x (e, b, d), y (e, b) from member-wise indices (e, b) (shared data: x (n, d),
    y (n,) are indexed directly)."""
    if index is None:
        return data.x, data.y
    index = index.to(data.x.device)
    if data.y.dim() == 1:  # one shared copy of the data
        return data.x[index], data.y[index]
    x = torch.gather(data.x, 1, index.unsqueeze(-1).expand(-1, -1, data.x.shape[-1]))
    return x, torch.gather(data.y, 1, index)


def run_ensemble(configs: Sequence[XorConfig], device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, progress: bool | None = None
                 ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Train ``configs`` (same group key) as one ensemble; ``(record, curves)`` per config.

    ``progress=None`` shows a step bar only on a TTY.
    """
    if not configs:
        return []
    keys = {c.group_key() for c in configs}
    if len(keys) != 1:
        raise ValueError(f"configs stacked in one ensemble must share task, depth, width, "
                         f"steps, optimizer, batch size, set sizes, eval/diag intervals and "
                         f"the feedback mode (weight=random/fa/...), if any; got {len(keys)} "
                         f"different groups: "
                         f"{sorted(keys, key=repr)}")
    start = time.perf_counter()
    dtype = dtype or torch.get_default_dtype()
    device = torch.device(device or "cpu")
    c0, e = configs[0], len(configs)
    task = get_task(c0.task)
    if any(c.model_level for c in configs):
        raise ValueError("DFA and learned-feedback runs cannot be vectorised (model-level "
                         "hooks); run them one by one (run_grid does)")
    if not task.vectorised:
        raise ValueError(f"task {task.name!r} cannot be vectorised (only "
                         f"{', '.join(n for n, t in TASKS.items() if t.vectorised)}); run its "
                         "configs one by one (run_grid(..., vectorised=False) does)")
    train, test = _stack_data(configs, dtype, device)
    gens = [generator(c.noise_seed, "noise") for c in configs]
    model = task.ensemble(configs, gens, dtype, device)
    opt = EnsembleOptimizer(list(model.parameters()), [c.lr for c in configs], c0.optimizer)
    order = _Batches(configs)
    hist: dict[str, list[Tensor]] = {k: [] for k in CURVE_KEYS}
    steps: list[int] = []
    diags: list[list[dict[str, Any]]] = [[] for _ in range(e)]
    diverged_at = [None] * e

    # rows per evaluation block: activations (e, rows, width) of about EVAL_ELEMENTS floats
    rows = max(1, EVAL_ELEMENTS // (e * max(task.activation_floats(c0), train.x.shape[-1])))

    def evaluate(data: XorData) -> tuple[Tensor, Tensor]:
        y = data.y.expand(e, -1) if data.y.dim() == 1 else data.y
        if data.x.shape[-2] <= rows:
            return loss_and_accuracy(model(data.x), y)
        logits = torch.cat([model(data.x[..., k:k + rows, :])
                            for k in range(0, data.x.shape[-2], rows)], -2)
        return loss_and_accuracy(logits, y)

    def log_eval(step: int) -> None:
        with torch.no_grad():
            for name, data in (("train", train), ("test", test)):
                loss, acc = evaluate(data)
                hist[f"{name}_loss"].append(loss)
                hist[f"{name}_acc"].append(acc)
        steps.append(step)

    log_eval(0)
    bar = tqdm(range(c0.steps), desc=f"ensemble of {e}", unit="step", leave=False,
               disable=None if progress is None else not progress)
    for step in bar:
        xb, yb = _gather(train, order.next())
        if yb.dim() == 1:  # full batch of shared data
            yb = yb.expand(e, -1)
        diag = c0.diag_every > 0 and step % c0.diag_every == 0
        if diag:
            with record_gradients(model) as rec:
                logits = model(xb)
        else:
            logits = model(xb)
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                 reduction="none").reshape(yb.shape).mean(-1)
        bad = opt.active & ~torch.isfinite(losses.detach())
        if bool(bad.any()):
            for m in bad.nonzero().flatten().tolist():
                diverged_at[m] = step
            opt.active &= ~bad
            if not bool(opt.active.any()):
                break
        opt.zero_grad()
        losses.where(opt.active, 0).sum().backward()
        opt.step()
        if diag:
            for m in range(e):
                if diverged_at[m] is None:
                    diags[m].append(diag_step(rec, step, m))
        if (step + 1) % c0.eval_every == 0 or step + 1 == c0.steps:
            log_eval(step + 1)
    bar.close()
    with torch.no_grad():
        final = [evaluate(d) for d in (train, test)]
        p1 = torch.softmax(model(boundary_grid(dtype, device)), -1)[..., 1] \
            if task.name == "xor" else None
    for m in (~torch.isfinite(final[0][0])).nonzero().flatten().tolist():
        if diverged_at[m] is None:  # the last update made the training loss non-finite
            diverged_at[m] = c0.steps
    seconds = (time.perf_counter() - start) / e
    table = {k: torch.stack(v).tolist() for k, v in hist.items()}  # (evals, e)
    final_vals = {"train_loss": final[0][0].tolist(), "train_acc": final[0][1].tolist(),
                  "test_loss": final[1][0].tolist(), "test_acc": final[1][1].tolist()}
    out = []
    for m, c in enumerate(configs):
        stop = diverged_at[m]
        keep = [i for i, s in enumerate(steps) if stop is None or s <= stop]
        curves: dict[str, Any] = {"step": [steps[i] for i in keep]}
        for k in CURVE_KEYS:
            vals = [table[k][i][m] for i in keep]
            if stop is not None and curves["step"][-1] != stop:
                vals.append(final_vals[k][m])
            curves[k] = [finite_or_none(v) if "loss" in k else v for v in vals]
        if stop is not None and curves["step"][-1] != stop:
            curves["step"].append(stop)
        curves["diag"] = diags[m]
        if p1 is not None:
            curves["boundary"] = boundary_list(p1[m])
        out.append(build_record(c, curves, stop, seconds, True))
    return out
