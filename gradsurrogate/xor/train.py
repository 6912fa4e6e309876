"""Train one run of any task (sequential reference path); its record is built by :mod:`.record`.

:func:`run_xor` trains the config's task model (XOR: :class:`~gradsurrogate.xor.model.XorMLP`;
see :mod:`gradsurrogate.tasks`) with ``torch.optim`` and
returns ``(record, curves)``. The record holds ``config`` (every setting, the spec as a string),
``final_test_acc``, ``final_test_loss``, ``diverged`` and more; ``curves`` the train/test loss
and accuracy at every evaluation, per-step gradient diagnostics and (XOR only) the final
decision function on a grid. A non-finite training loss stops the run before its update; the
parameters of that step are evaluated and the run is marked ``diverged`` (non-finite numbers
become ``None``).
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

from ..diagnostics import record_gradients
from ..tasks import get_task
from .config import XorConfig
from .data import XorData, derive_seed, generator
from .record import (
    CURVE_KEYS,
    boundary_grid,
    boundary_list,
    build_record,
    diag_step,
    finite_or_none,
    loss_and_accuracy,
)

__all__ = ["batches", "flat", "run_xor"]


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


def run_xor(config: XorConfig, device: torch.device | str | None = None,
            dtype: torch.dtype | None = None, progress: bool | None = False
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one run sequentially; returns ``(record, curves)`` (see the module docstring).

    ``progress``: a step bar (``None``: only on a TTY; off by default, for grids).
    """
    start = time.perf_counter()
    dtype = dtype or torch.get_default_dtype()
    device = torch.device(device or "cpu")
    task = get_task(config.task)
    train, test = task.data(config, dtype, device)
    noise = generator(config.noise_seed, "noise")
    model = task.build(config, noise, dtype, device)  # XOR: init_params + XorMLP
    if config.dfa:  # built exact; DFA's hook hands each layer e @ B_l as its grad_input
        from ..dfa import dfa

        dfa(model, config.spec, generator=noise)
    restorer = None
    if config.spec == "learned":  # every Linear's feedback B restored online from probes
        from ..restore.online import OnlineRestorer

        restorer = OnlineRestorer(model, seed=derive_seed(config.noise_seed, "noise"))
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
                loss, acc = loss_and_accuracy(*flat(model(data.x), data.y))
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
                loss = F.cross_entropy(*flat(model(xb), yb))
        else:
            loss = F.cross_entropy(*flat(model(xb), yb))
        if not math.isfinite(float(loss.detach())):
            diverged_step = step
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if restorer is not None:
            restorer.step()
        if diag:
            curves["diag"].append(diag_step(rec, step))
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            log_eval(step + 1)
    bar.close()
    if diverged_step is None and curves["train_loss"][-1] is None:
        diverged_step = config.steps  # the last update made the training loss non-finite
    if diverged_step is not None and curves["step"][-1] != diverged_step:
        log_eval(diverged_step)
    if task.name == "xor":
        with torch.no_grad():
            p1 = torch.softmax(model(boundary_grid(dtype, device)), -1)[:, 1]
        curves["boundary"] = boundary_list(p1)
    return build_record(config, curves, diverged_step, time.perf_counter() - start, False)


def flat(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Logits (n, c) / (n, L, c) and labels (n,) / (n, L) as (N, c), (N,) (per-token tasks
    count every token as a sample)."""
    return logits.reshape(-1, logits.shape[-1]), y.reshape(-1)


def _batch(data: XorData, index: Tensor | None) -> tuple[Tensor, Tensor]:
    if index is None:
        return data.x, data.y
    index = index.to(data.x.device)
    return data.x[index], data.y[index]


