"""The reference's regression experiments: 1-d sin(x) and 2-d cos(x)·sin(y).

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

Each (problem, activation) result is stored as ``<out>/<problem>_<activation>.npz``
(written atomically); a rerun skips stored results, so long runs resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from gradsurrogate.diffnet.config import (
    HIDDEN_LRS,
    LOSSES,
    METRIC_KEYS,
    RECIPES,
    SCHEDULES,
    ExperimentConfig,
    config_from,
    eval_epochs,
    lr_at,
    settings_match,
    settings_text,
)
from gradsurrogate.diffnet.model import DifferentialMLP
from gradsurrogate.diffnet.problems import PROBLEMS, Problem, make_data
from gradsurrogate.io import atomic_path

__all__ = [
    "HIDDEN_LRS", "LOSSES", "PROBLEMS", "RECIPES", "SCHEDULES", "ExperimentConfig", "Problem",
    "config_from", "eval_epochs", "evaluate_checkpoint", "lr_at", "make_data", "param_groups",
    "run_experiment", "train_one",
]

def member_losses(
    pred: tuple[Tensor, Tensor, Tensor], target: dict[str, Tensor], losses: tuple[str, ...]
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


def evaluate(net: DifferentialMLP, test: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """Predictions on the test grid and MSEs (E, 3) for f, df/dx, d²f/dx² (float64)."""
    param = next(net.parameters())
    x = test["x"].to(param).expand(net.ensemble, *test["x"].shape)
    with torch.no_grad():
        y, jac, hes = (t.double().cpu() for t in net(x, hessian=True))
    truth = {k: test[k].double().cpu() for k in ("f", "J", "H")}
    mse = torch.stack(
        [
            (y - truth["f"]).square().flatten(2).sum(-1).mean(-1),
            (jac - truth["J"]).square().flatten(2).sum(-1).mean(-1),
            (hes - truth["H"]).square().flatten(2).sum(-1).mean(-1),
        ],
        dim=-1,
    )
    return {"mse": mse.numpy(), "y": y.numpy(), "J": jac.numpy(), "H": hes.numpy()}


def _build(
    cfg: ExperimentConfig, activation: str, gen: torch.Generator
) -> tuple[list[tuple[str, ...]], list[DifferentialMLP], list[torch.optim.Optimizer]]:
    """Loss groups, one ensemble net per group, and their Adam optimisers.

    Members that need H train in their own ensemble, so the others skip the H pass.
    """
    problem = PROBLEMS[cfg.problem]
    groups = [g for g in (tuple(x for x in cfg.losses if x != "hessian"),
                          tuple(x for x in cfg.losses if x == "hessian")) if g]
    nets = [
        DifferentialMLP(
            problem.n_in, 1, width=cfg.width, depth=cfg.depth or problem.depth,
            activation=activation, ensemble=len(g) * cfg.inits, generator=gen,
            gain_hidden=cfg.gain_hidden,
            dtype=getattr(torch, cfg.dtype),
        )
        for g in groups
    ]
    opts = [
        torch.optim.Adam(param_groups(net, cfg.hidden_lr), lr=cfg.lr,
                         weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad)
        for net in nets
    ]
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


def evaluate_checkpoint(path: str | Path) -> tuple[ExperimentConfig, str, dict[str, np.ndarray]]:
    """Test results of a training checkpoint (an unfinished run): (cfg, activation, result),
    where the result has the keys of :func:`train_one` plus ``epoch`` (epochs completed);
    with ``eval_every``, ``test_mse`` (E, T, 3) is NaN after the last evaluation so far."""
    state = torch.load(path, weights_only=False)
    cfg_dict, activation = state["tag"]
    cfg = config_from(cfg_dict)
    if cfg is None:
        raise ValueError(f"{path}: checkpoint settings {cfg_dict!r} are not a valid config")
    gen = torch.Generator().manual_seed(cfg.seed)
    problem = PROBLEMS[cfg.problem]
    _, test = make_data(problem, 1, cfg.noise, gen, getattr(torch, cfg.dtype))
    groups, nets, _ = _build(cfg, activation, gen)
    for net, (weights, _) in zip(nets, state["models"]):
        net.load_state_dict(weights)
    result = _merge_groups(cfg, groups, [evaluate(net, test) for net in nets])
    result.update(
        x=test["x"].numpy(), f_true=test["f"].numpy(), J_true=test["J"].numpy(),
        H_true=test["H"].numpy(), train_loss=state["history"][: state["epoch"]],
        losses=np.array(cfg.losses), epoch=np.array(state["epoch"]),
    )
    test_epochs = eval_epochs(cfg)
    if len(test_epochs):  # curves so far (NaN after the last completed evaluation)
        result.update(test_mse=state["test_mse"], test_epochs=test_epochs)
    return cfg, activation, result


def train_one(
    cfg: ExperimentConfig,
    activation: str,
    log: Callable[[dict], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 25,
) -> dict[str, np.ndarray]:
    """Train the loss variants of ``cfg.losses`` for one activation; returns test results.

    With ``checkpoint``, the training state (weights, optimisers, RNG, loss history) is
    saved there atomically every ``checkpoint_every`` epochs and training resumes from it;
    the file holds ``cfg`` and is ignored if the settings differ.

    Result keys: ``mse`` (E, 3), test predictions ``y``/``J``/``H`` (E, B, ...), the test
    inputs ``x`` and truths ``f_true``/``J_true``/``H_true``, per-epoch mean training loss
    ``train_loss`` (epochs, E; the mean over initialisations), and ``seconds``. With
    ``cfg.inits`` > 1, every loss trains ``inits`` independently initialised members on the
    same batches: the keys above hold the first of them, ``mse_inits`` (E, inits, 3) all.
    With ``cfg.eval_every`` = k > 0, ``test_mse`` (E, epochs // k, 3) holds the test MSEs
    after every k-th epoch (``test_epochs`` (T,), see :func:`eval_epochs`; first
    initialisation). Evaluation draws no
    random numbers and builds no graph, so training is bitwise the same with or without it.
    """
    problem = PROBLEMS[cfg.problem]
    dtype = getattr(torch, cfg.dtype)
    gen = torch.Generator().manual_seed(cfg.seed)
    train, test = make_data(problem, cfg.n_train, cfg.noise, gen, dtype)
    groups, nets, opts = _build(cfg, activation, gen)
    n_batches = cfg.n_train // cfg.batch  # last partial batch dropped
    history = np.zeros((cfg.epochs, len(cfg.losses)))
    test_epochs = eval_epochs(cfg)
    test_mse = np.full((len(cfg.losses), len(test_epochs), 3), np.nan)
    order = [loss for g in groups for loss in g]
    start, ckpt = 0, Path(checkpoint) if checkpoint is not None else None
    tag = (asdict(cfg), activation)
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["tag"][1] == activation and config_from(state["tag"][0]) == cfg:
            start, history = state["epoch"], state["history"]
            test_mse = state.get("test_mse", test_mse)  # older checkpoints: no curves
            gen.set_state(state["rng"])
            for net, opt, (w, o) in zip(nets, opts, state["models"]):
                net.load_state_dict(w)
                opt.load_state_dict(o)
    # each group's member -> loss labels (loss-major, cfg.inits members per loss)
    members = [tuple(loss for loss in g for _ in range(cfg.inits)) for g in groups]
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.epochs), desc=f"{cfg.problem}/{activation}", disable=None)
    for epoch in bar:
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
        losses_txt = " ".join(f"{v:.1e}" for v in history[epoch])
        record = {f"{activation}/{loss}/train": float(v)
                  for loss, v in zip(cfg.losses, history[epoch])}
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0:
            now = _merge_groups(cfg, groups, [evaluate(net, test) for net in nets])["mse"]
            test_mse[:, (epoch + 1) // cfg.eval_every - 1] = now
            record |= {f"{activation}/{loss}/test_{name}": float(now[e, k])
                       for e, loss in enumerate(cfg.losses) for k, name in enumerate(METRIC_KEYS)}
        bar.set_postfix(loss=losses_txt)
        if bar.disable and (epoch + 1) % 25 == 0:  # no TTY: a plain progress line
            print(f"{cfg.problem}/{activation} epoch {epoch + 1}: train loss {losses_txt} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
        if ckpt is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == cfg.epochs):
            state = {"tag": tag, "epoch": epoch + 1, "history": history, "test_mse": test_mse,
                     "rng": gen.get_state(),
                     "models": [(n.state_dict(), o.state_dict()) for n, o in zip(nets, opts)]}
            with atomic_path(ckpt) as tmp:
                torch.save(state, tmp)
        if log is not None:
            log(record | {"epoch": epoch})
    result = _merge_groups(cfg, groups, [evaluate(net, test) for net in nets])
    result.update(
        x=test["x"].numpy(), f_true=test["f"].numpy(), J_true=test["J"].numpy(),
        H_true=test["H"].numpy(), train_loss=history,
        seconds=np.array(time.perf_counter() - t0),
    )
    if len(test_epochs):
        result.update(test_mse=test_mse, test_epochs=test_epochs)
    return result


def result_path(
    out_dir: str | Path, problem: str, activation: str, losses: tuple[str, ...] = LOSSES
) -> Path:
    """``<problem>_<activation>.npz``; a subset of the losses adds ``__<loss>-<loss>``."""
    tag = "" if tuple(losses) == LOSSES else "__" + "-".join(losses)
    return Path(out_dir) / f"{problem}_{activation}{tag}.npz"


def run_experiment(
    cfg: ExperimentConfig, out_dir: str | Path, log: Callable[[dict], None] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Train every activation of ``cfg`` (skipping stored results); returns activation -> result.

    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = settings_text(cfg)  # a stored result is reused if its settings match
    results = {}
    for activation in cfg.activations:
        path = result_path(out, cfg.problem, activation, cfg.losses)
        if path.exists():
            with np.load(path) as stored:
                if settings_match(str(stored["config"]), cfg):
                    results[activation] = dict(stored)
                    continue
        ckpt = path.with_suffix(".ckpt.pt")
        res = train_one(cfg, activation, log, checkpoint=ckpt)
        res["losses"] = np.array(cfg.losses)
        res["config"] = np.array(settings)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **res)
        ckpt.unlink(missing_ok=True)
        results[activation] = res
    return results
