"""Training for the reference's regression experiments: 1-d sin(x) and 2-d cos(x)·sin(y).

For every activation, the loss variants are trained together as members of ensemble
:class:`DifferentialMLP` s (same data order; Adam and weight decay act elementwise, so each
member follows exactly the path it would follow alone; the Hessian-supervised member gets
its own ensemble so that the others skip the Hessian pass). Per-sample losses, summed
over components and averaged over the batch:

* ``type1``:   |f̂ - f|² + |Ĵ - J|²            (reference "Type 1")
* ``type2``:   |f̂ - f|²                       (reference "Type 2")
* ``hessian``: |f̂ - f|² + |Ĵ - J|² + |Ĥ - H|²  (Hessian-supervised variant)

Metrics on the noise-free test set: MSE = mean over points of the squared error summed
over components, for f, df/dx and d²f/dx² (the network's exact Hessian).

Divergence: a loss variant whose epoch-mean training loss (of any of its initialisations)
is not finite is stopped and recorded as diverged; its arrays are left out of the result.
Members are independent, so the others train on unchanged; when every variant has diverged
the run stops. ``diverged_at`` (per variant) is the 1-based number of that epoch (what the
report shows as ``diverged@E``; 0: never), or epochs run + 1 when only the parameters after
the last epoch are not finite, so the 0-based ``diverged_step`` of a stored record (epochs
completed before it; :mod:`gradsurrogate.runs`) is ``diverged_at - 1``. Storage and resume:
:mod:`.store`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from gradsurrogate.diffnet.config import (
    METRIC_KEYS,
    ExperimentConfig,
    config_from,
    eval_epochs,
    lr_at,
)
from gradsurrogate.diffnet.model import DifferentialMLP
from gradsurrogate.diffnet.problems import DIFFNET_PROBLEMS, make_data
from gradsurrogate.io import atomic_path

__all__ = ["checkpoint_matches", "evaluate_checkpoint", "evaluate_mse", "load_checkpoint",
           "member_losses", "param_groups", "train_one"]

# result keys with a leading member axis (train_loss: the second axis)
_MEMBER_KEYS = ("mse", "mse_inits", "y", "J", "H", "test_mse")


def member_losses(
    pred: tuple[Tensor, Tensor, Tensor | None], target: dict[str, Tensor],
    losses: tuple[str, ...],
) -> Tensor:
    """Per-member mean loss (E,) from ensemble predictions y (E,B,1), J (E,B,1,n), H."""
    y, jac, hes = pred
    err_f = (y - target["f"]).square().sum(-1)
    err_j = (jac - target["J"]).square().flatten(2).sum(-1)
    err_h = (hes - target["H"]).square().flatten(2).sum(-1) if hes is not None else None
    out = []
    for e, loss in enumerate(losses):
        per_sample = err_f[e]
        if loss in ("type1", "hessian"):
            per_sample = per_sample + err_j[e]
        if loss == "hessian":
            per_sample = per_sample + err_h[e]
        out.append(per_sample.mean())
    return torch.stack(out)


def evaluate_mse(net: DifferentialMLP, test: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """Predictions on the test grid and MSEs (E, 3) for f, df/dx, d²f/dx² (float64)."""
    param = next(net.parameters())
    x = test["x"].to(param).expand(net.ensemble, *test["x"].shape)
    with torch.no_grad():
        y, jac, hes = (t.double().cpu() for t in net(x, hessian=True))
    truth = {k: test[k].double().cpu() for k in ("f", "J", "H")}
    mse = torch.stack([(p - truth[k]).square().flatten(2).sum(-1).mean(-1)
                       for p, k in ((y, "f"), (jac, "J"), (hes, "H"))], dim=-1)
    return {"mse": mse.numpy(), "y": y.numpy(), "J": jac.numpy(), "H": hes.numpy()}


def _build(
    cfg: ExperimentConfig, activation: str, gen: torch.Generator
) -> tuple[list[tuple[str, ...]], list[DifferentialMLP], list[torch.optim.Optimizer]]:
    """Loss groups, one ensemble net per group, and their Adam optimisers.

    Members that need H train in their own ensemble, so the others skip the H pass.
    """
    problem = DIFFNET_PROBLEMS[cfg.problem]
    groups = [g for g in (tuple(x for x in cfg.losses if x != "hessian"),
                          tuple(x for x in cfg.losses if x == "hessian")) if g]
    nets = [DifferentialMLP(problem.n_in, 1, width=cfg.width, depth=cfg.depth or problem.depth,
                            activation=activation, ensemble=len(g) * cfg.inits, generator=gen,
                            gain_hidden=cfg.gain_hidden, dtype=getattr(torch, cfg.dtype))
            for g in groups]
    opts = [torch.optim.Adam(param_groups(net, cfg.hidden_lr), lr=cfg.lr,
                             weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad)
            for net in nets]
    return groups, nets, opts


def param_groups(net: DifferentialMLP, hidden_lr: str) -> list[dict]:
    """Adam parameter groups; ``lr_scale`` multiplies the epoch's learning rate.

    * ``"fan_in"``: the hidden-to-hidden weight matrices (fan-in = width) get 1 / width.
    * ``"freq"``: with a periodic activation cos(ωa), every hidden layer (W and b) gets 1 / ω.
      cos(ω(Wh + b)) = cos(W'h + b') with W' = ωW, b' = ωb; Adam moves W by ≈ lr per step
      whatever the gradient's scale, i.e. W' by ω·lr, so lr / ω trains the net as a
      cos(a) net with the standard lr (up to Adam's ε and the weight decay), started from
      W' = ωW, b' = ωb: the default init gain of W is already divided by ω (see
      :class:`DifferentialMLP`); the biases b' = ω·b_init are not. A net with a
      non-periodic activation gets no scaling.
    """
    if hidden_lr == "fan_in":
        scaled, scale = list(net.weights[1:-1]), 1.0 / net.width
    elif hidden_lr == "freq":
        scaled = [*net.weights[:-1], *net.biases[:-1]]
        scale = 1.0 / float(getattr(net.activation, "freq", 1.0))
    else:
        scaled, scale = [], 1.0
    if not scaled or scale == 1.0:
        return [{"params": list(net.parameters())}]
    ids = {id(w) for w in scaled}
    rest = [p for p in net.parameters() if id(p) not in ids]
    return [{"params": rest}, {"params": scaled, "lr_scale": scale}]


def _merge_groups(
    cfg: ExperimentConfig, groups: list[tuple[str, ...]], evals: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Member results (loss-major, ``cfg.inits`` members per loss) in ``cfg.losses`` order:
    every key keeps the first initialisation of each loss; with ``inits`` > 1, ``mse_inits``
    (E, inits, 3) holds the MSEs of all of them."""
    order = [loss for g in groups for loss in g]
    pick = [order.index(loss) for loss in cfg.losses]
    merged = {}
    for k in evals[0]:
        arr = np.concatenate([ev[k] for ev in evals])
        arr = arr.reshape(len(order), cfg.inits, *arr.shape[1:])[pick]
        merged[k] = arr[:, 0]
        if k == "mse" and cfg.inits > 1:
            merged["mse_inits"] = arr
    return merged


def _diverged_from(history: np.ndarray, epochs_done: int) -> np.ndarray:
    """Per loss: the first epoch (1-based) of non-finite mean training loss, 0 if none."""
    bad = ~np.isfinite(history[:epochs_done])
    if not epochs_done:
        return np.zeros(history.shape[1], dtype=int)
    return np.where(bad.any(0), bad.argmax(0) + 1, 0)


def _finish(cfg: ExperimentConfig, result: dict[str, Any], diverged: np.ndarray,
            last_epoch: int) -> dict[str, Any]:
    """Keep the members that did not diverge (a final evaluation that is not finite counts
    as diverging after ``last_epoch``: ``diverged_at = last_epoch + 1``); add ``losses``
    (kept) and ``diverged_at`` (per ``cfg.losses``, 1-based epoch, 0 = not diverged)."""
    diverged = diverged.copy()
    for e in range(len(cfg.losses)):
        if not diverged[e] and not all(np.isfinite(result[k][e]).all()
                                       for k in ("mse", "mse_inits", "y", "J", "H")
                                       if k in result):
            diverged[e] = last_epoch + 1
    keep = np.flatnonzero(diverged == 0)
    out = {k: (v[keep] if k in _MEMBER_KEYS else v) for k, v in result.items()}
    if "train_loss" in out:
        out["train_loss"] = out["train_loss"][:, keep]
    out["losses"] = np.array([cfg.losses[e] for e in keep], dtype=str)
    out["diverged_at"] = diverged
    return out


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint's state; ``ValueError`` naming the file if it cannot be read."""
    try:
        state = torch.load(path, weights_only=False)
        if not isinstance(state, dict) or not {"tag", "epoch", "history", "models"} <= set(state):
            raise ValueError("not a diffnet training checkpoint")
        if not isinstance(state["tag"][0], dict):  # (config asdict, activation)
            raise ValueError("no config in its tag")
    except Exception as err:  # torch.load raises many types on a damaged file
        raise ValueError(f"checkpoint {str(path)!r} is unreadable ({type(err).__name__}: "
                         f"{err}); pass --restart to discard it and "
                         "retrain") from None
    return state


def checkpoint_matches(state: dict[str, Any], cfg: ExperimentConfig, activation: str) -> bool:
    """The checkpoint holds this run (its activation list is not part of the run)."""
    stored, act = state["tag"]
    back = config_from(stored)
    return act == activation and back is not None and \
        replace(back, activations=cfg.activations) == cfg


def evaluate_checkpoint(path: str | Path) -> tuple[ExperimentConfig, str, dict[str, Any]]:
    """Test results of a training checkpoint (an unfinished run): (cfg, activation, result),
    where the result has the keys of :func:`train_one` plus ``epoch`` (epochs completed);
    with ``eval_every``, ``test_mse`` (E, T, 3) is NaN after the last evaluation so far."""
    state = load_checkpoint(path)
    cfg_dict, activation = state["tag"]
    cfg = config_from(cfg_dict)
    if cfg is None:
        raise ValueError(f"checkpoint {str(path)!r}: settings {cfg_dict!r} are not a valid "
                         "config; pass --restart to discard it")
    gen = torch.Generator().manual_seed(cfg.seed)
    problem = DIFFNET_PROBLEMS[cfg.problem]
    _, test = make_data(problem, 1, cfg.noise, gen, getattr(torch, cfg.dtype))
    groups, nets, _ = _build(cfg, activation, gen)
    for net, (weights, _) in zip(nets, state["models"]):
        net.load_state_dict(weights)
    result = _merge_groups(cfg, groups, [evaluate_mse(net, test) for net in nets])
    done = int(state["epoch"])
    result.update(x=test["x"].numpy(), f_true=test["f"].numpy(), J_true=test["J"].numpy(),
                  H_true=test["H"].numpy(), train_loss=state["history"][:done],
                  epoch=np.array(done))
    if len(eval_epochs(cfg)):  # curves so far (NaN after the last completed evaluation)
        result.update(test_mse=state["test_mse"], test_epochs=eval_epochs(cfg))
    return cfg, activation, _finish(cfg, result, _diverged_from(state["history"], done), done)


def train_one(
    cfg: ExperimentConfig,
    activation: str,
    log: Callable[[dict], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 25,
) -> dict[str, Any]:
    """Train the loss variants of ``cfg.losses`` for one activation; returns test results.

    With ``checkpoint``, the training state (weights, optimisers, RNG, loss history) is
    saved there atomically every ``checkpoint_every`` epochs and training resumes from it;
    the file holds ``cfg`` and is ignored if the settings differ (a file that cannot be
    read is a ``ValueError`` naming it).

    Result keys, for the ``losses`` that did not diverge (E of them, in ``cfg.losses``
    order): ``mse`` (E, 3), test predictions ``y``/``J``/``H`` (E, B, ...), per-epoch mean
    training loss ``train_loss`` (epochs, E; the mean over initialisations); plus the test
    inputs ``x`` and truths ``f_true``/``J_true``/``H_true``, ``diverged_at`` (one per
    ``cfg.losses``: the 1-based epoch its loss became non-finite, epochs run + 1 if only its
    final parameters are, 0 if never; see the module docstring), ``epochs_run`` and
    ``seconds``. With ``cfg.inits`` > 1, every loss trains ``inits`` independently
    initialised members on the same batches: the keys above hold the first of them,
    ``mse_inits`` (E, inits, 3) all. With ``cfg.eval_every`` = k > 0, ``test_mse``
    (E, epochs // k, 3) holds the test MSEs after every k-th epoch (``test_epochs`` (T,), see
    :func:`eval_epochs`; first initialisation). Evaluation draws no random numbers and builds
    no graph, so training is bitwise the same with or without it.
    """
    problem = DIFFNET_PROBLEMS[cfg.problem]
    gen = torch.Generator().manual_seed(cfg.seed)
    train, test = make_data(problem, cfg.n_train, cfg.noise, gen, getattr(torch, cfg.dtype))
    groups, nets, opts = _build(cfg, activation, gen)
    n_batches = cfg.n_train // cfg.batch  # last partial batch dropped
    history = np.zeros((cfg.epochs, len(cfg.losses)))
    test_epochs = eval_epochs(cfg)
    test_mse = np.full((len(cfg.losses), len(test_epochs), 3), np.nan)
    order = [loss for g in groups for loss in g]
    start, ckpt = 0, Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt)
        if checkpoint_matches(state, cfg, activation):
            try:
                for net, opt, (w, o) in zip(nets, opts, state["models"], strict=True):
                    net.load_state_dict(w)
                    opt.load_state_dict(o)
                gen.set_state(state["rng"])
            except Exception as err:
                raise ValueError(f"checkpoint {str(ckpt)!r} does not fit this run ({err}); "
                                 "pass --restart to discard it") from None
            start, history = state["epoch"], state["history"]
            test_mse = state.get("test_mse", test_mse)  # older checkpoints: no curves
    diverged = _diverged_from(history, start)
    # each group's member -> loss labels (loss-major, cfg.inits members per loss)
    members = [tuple(loss for loss in g for _ in range(cfg.inits)) for g in groups]
    t0, epoch_done = time.perf_counter(), start
    bar = tqdm(range(start, cfg.epochs), desc=f"{cfg.problem}/{activation}", disable=None)
    for epoch in bar:
        if diverged.all():
            break
        for opt in opts:
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, epoch) * group.get("lr_scale", 1.0)
        perm = torch.randperm(cfg.n_train, generator=gen)
        total = torch.zeros(len(order) * cfg.inits, dtype=torch.float64)
        for b in range(n_batches):
            idx = perm[b * cfg.batch : (b + 1) * cfg.batch]
            batch = {k: v[idx] for k, v in train.items()}
            parts = []
            for labels, net, opt in zip(members, nets, opts):
                need_h = "hessian" in labels
                out = net(batch["x"].expand(len(labels), *batch["x"].shape), hessian=need_h)
                per_member = member_losses(out if need_h else (*out, None), batch, labels)
                opt.zero_grad(set_to_none=True)
                per_member.sum().backward()
                opt.step()
                parts.append(per_member.detach())
            total += torch.cat(parts).double()
        mean = (total / n_batches).numpy().reshape(len(order), cfg.inits).mean(1)
        history[epoch] = [mean[order.index(loss)] for loss in cfg.losses]
        epoch_done = epoch + 1
        diverged = np.where((diverged == 0) & ~np.isfinite(history[epoch]), epoch_done, diverged)
        losses_txt = " ".join(f"{v:.1e}" for v in history[epoch])
        record = {f"{activation}/{loss}/train": float(v)
                  for loss, v in zip(cfg.losses, history[epoch]) if np.isfinite(v)}
        if cfg.eval_every and epoch_done % cfg.eval_every == 0:
            now = _merge_groups(cfg, groups, [evaluate_mse(net, test) for net in nets])["mse"]
            test_mse[:, epoch_done // cfg.eval_every - 1] = now
            record |= {f"{activation}/{loss}/test_{name}": float(now[e, k])
                       for e, loss in enumerate(cfg.losses) for k, name in enumerate(METRIC_KEYS)
                       if np.isfinite(now[e, k])}
        bar.set_postfix(loss=losses_txt)
        if bar.disable and epoch_done % 25 == 0:  # no TTY: a plain progress line
            print(f"{cfg.problem}/{activation} epoch {epoch_done}: train loss {losses_txt} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
        if ckpt is not None and not diverged.all() and (
                epoch_done % checkpoint_every == 0 or epoch_done == cfg.epochs):
            state = {"tag": (asdict(cfg), activation), "epoch": epoch_done, "history": history,
                     "test_mse": test_mse, "rng": gen.get_state(),
                     "models": [(n.state_dict(), o.state_dict()) for n, o in zip(nets, opts)]}
            with atomic_path(ckpt) as tmp:
                torch.save(state, tmp)
        if log is not None:
            log(record | {"epoch": epoch})
    bar.close()
    result = _merge_groups(cfg, groups, [evaluate_mse(net, test) for net in nets])
    result.update(x=test["x"].numpy(), f_true=test["f"].numpy(), J_true=test["J"].numpy(),
                  H_true=test["H"].numpy(), train_loss=history[:epoch_done],
                  epochs_run=np.array(epoch_done), seconds=np.array(time.perf_counter() - t0))
    if len(test_epochs):
        result.update(test_mse=test_mse, test_epochs=test_epochs)
    return _finish(cfg, result, diverged, epoch_done)
