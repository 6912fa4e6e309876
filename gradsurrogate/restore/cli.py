"""``gradsurrogate restore``: restore a Jacobian from directional derivatives.

Example::

    gradsurrogate restore --dim-in 32 --dim-out 32 --dim-sample 8 --loss mixed \\
        --surrogate structured --target jvp --epochs auto --out runs/restore

Appends one record per run to ``OUT/results.jsonl`` (:func:`gradsurrogate.io.append_jsonl`:
one ``write`` of a full line, then flush + fsync; NaN/inf as ``null``) with ``final_cosine``,
``final_rel_error``, ``final_sign_agreement``, ``final_loss``, ``jvp_evals`` (directional
evaluations of f), ``f_evals``, ``status``, ``wall_time`` and ``time_per_epoch``; the per-epoch
history goes to ``OUT/history/RUN.json`` (atomic replace). A run whose ``run_id`` is already in
``results.jsonl`` is skipped (resume) unless ``--force``. ``--figures`` also writes the
Jacobian heatmaps and metric curves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..io import append_jsonl, read_jsonl, write_json_atomic
from ..tracking import WANDB_MODES, Tracker
from .losses import get_loss
from .problems import linear_problem, tanh_problem
from .sampling import (
    COTANGENT_DISTS,
    DIRECTION_DISTS,
    check_dim_sample,
    normalised_epochs,
)
from .surrogates import SURROGATES, make_surrogate
from .targets import FD_SCHEMES, TARGETS
from .trainer import RestoreConfig, restore

__all__ = ["build_parser", "config_of", "main", "run_one"]

PROBLEMS = {"linear": linear_problem, "tanh": tanh_problem}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gradsurrogate restore", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    def a(flag: str, *rest: str, **kw: Any) -> None:  # also accept --dim_in (W&B's ${args})
        alias = [flag.replace("-", "_").replace("__", "--", 1)] if "-" in flag[2:] else []
        p.add_argument(flag, *alias, *rest, **kw)

    a("--problem", choices=list(PROBLEMS), default="linear", help="f(x) = A x or tanh(A x)")
    a("--dim-in", type=int, default=16)
    a("--dim-out", type=int, default=16)
    a("--dim-sample", type=int, default=4, help="coordinates per minibatch subspace")
    a("--loss", default="mse", help="mse, cosine, dot, gensim:A, mixed, gated:B, log_<loss>")
    a("--surrogate", choices=list(SURROGATES), default="structured")
    a("--target", choices=list(TARGETS), default="jvp")
    a("--initial-messup", type=float, default=1.0, help="scale of the initial parameters")
    a("--epochs", default="auto",
      help="number of epochs, or 'auto' = epoch-scale·dim_in·dim_out/dim_sample")
    a("--epoch-scale", type=float, default=16.0)
    a("--steps-per-epoch", type=int, default=1)
    a("--lr", type=float, default=2e-2)
    a("--optimizer", choices=["adam", "sgd"], default="adam")
    a("--points", type=int, default=1, help="points alpha per minibatch")
    a("--directions", type=int, default=None, help="directions per point (default dim-sample)")
    a("--cotangents", type=int, default=None, help="cotangents per point (default dim-out)")
    a("--direction-dist", choices=DIRECTION_DISTS, default="gaussian")
    a("--cotangent-dist", choices=COTANGENT_DISTS, default="gaussian")
    a("--fd-step", type=float, default=1e-3)
    a("--fd-scheme", choices=FD_SCHEMES, default="central")
    a("--integral-step", type=float, default=1.0, help="segment length factor (integral)")
    a("--integral-method", default="gauss-legendre")
    a("--probe-budget", type=int, default=None, help="stop probing after this many; replay")
    a("--target-cosine", type=float, default=None, help="stop once this cosine is reached")
    a("--width", type=int, default=None, help="hidden width of mlp/loglinexp surrogates")
    a("--seed", type=int, default=0)
    a("--dtype", choices=list(DTYPES), default="float32")
    a("--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)")
    a("--wandb", choices=WANDB_MODES, default=None,
      help="W&B mode (default: offline unless an API key is configured)")
    a("--figures", action="store_true", help="write heatmaps and curves under OUT/figures")
    a("--force", action="store_true", help="rerun even if the run id is already recorded")
    a("--out", default="runs/restore", help="output directory")
    return p


def config_of(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings as a JSON-able dict (the W&B config); validates the arguments."""
    check_dim_sample(args.dim_sample, args.dim_in)
    get_loss(args.loss)
    if args.epochs == "auto":
        epochs = normalised_epochs(args.dim_in, args.dim_out, args.dim_sample, args.epoch_scale)
    else:
        try:
            epochs = int(args.epochs)
        except ValueError:
            raise ValueError(
                f"--epochs must be an integer or 'auto'; got {args.epochs!r}") from None
    keys = ("problem", "dim_in", "dim_out", "dim_sample", "loss", "surrogate", "target",
            "initial_messup", "lr", "optimizer", "points", "directions", "cotangents",
            "direction_dist", "cotangent_dist", "fd_step", "fd_scheme", "integral_step",
            "integral_method", "probe_budget", "target_cosine", "width", "seed", "dtype",
            "steps_per_epoch")
    cfg = {k: getattr(args, k) for k in keys}
    cfg["epochs"] = epochs
    cfg["run_id"] = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    return cfg


def run_one(cfg: dict[str, Any], out: Path, wandb_mode: str | None = "disabled",
            figures: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run one configuration (a :func:`config_of` dict) and append its record."""
    dtype = DTYPES[cfg["dtype"]]
    problem = PROBLEMS[cfg["problem"]](cfg["dim_in"], cfg["dim_out"], seed=cfg["seed"],
                                       dtype=dtype)
    wide = cfg.get("width") and cfg["surrogate"] != "structured"
    opts = {"width": cfg["width"]} if wide else {}
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    surrogate = make_surrogate(cfg["surrogate"], cfg["dim_in"], cfg["dim_out"],
                               cfg["initial_messup"], gen, dtype, **opts)
    rc = RestoreConfig(
        dim_sample=cfg["dim_sample"], loss=cfg["loss"], target=cfg["target"],
        epochs=cfg["epochs"], steps_per_epoch=cfg["steps_per_epoch"], lr=cfg["lr"],
        optimizer=cfg["optimizer"], points=cfg["points"], directions=cfg["directions"],
        cotangents=cfg["cotangents"], direction_dist=cfg["direction_dist"],
        cotangent_dist=cfg["cotangent_dist"], fd_step=cfg["fd_step"], fd_scheme=cfg["fd_scheme"],
        integral_step=cfg["integral_step"], integral_method=cfg["integral_method"],
        probe_budget=cfg["probe_budget"], target_cosine=cfg["target_cosine"],
        on_nonfinite="stop", seed=cfg["seed"])
    tracker = Tracker(wandb_mode, "gradsurrogate-restore", cfg, name=cfg["run_id"])
    callback = (lambda rec: tracker.log(rec, step=rec["epoch"])) if tracker.run else None
    start = time.perf_counter()
    res = restore(problem, surrogate, rc, progress=progress, callback=callback)
    wall = time.perf_counter() - start
    record = dict(cfg)
    record.update({
        "final_cosine": res.final.get("cosine"), "final_rel_error": res.final.get("rel_error"),
        "final_sign_agreement": res.final.get("sign_agreement"),
        "final_loss": res.final.get("loss"), "jvp_evals": res.jvp_evals, "f_evals": res.f_evals,
        "reached_at": res.reached_at, "status": res.status, "epochs_run": len(res.history),
        "wall_time": wall, "time_per_epoch": wall / max(1, len(res.history)),
    })
    write_json_atomic(out / "history" / f"{cfg['run_id']}.json", res.history)
    if figures:
        from .plots import plot_curves, plot_jacobians

        pt = torch.zeros(1, cfg["dim_in"], dtype=dtype)
        with torch.no_grad():
            plot_jacobians(problem.jacobian(pt)[0], surrogate.jacobian(pt)[0],
                           out / "figures" / f"{cfg['run_id']}_jacobian.png",
                           f"{cfg['loss']}, dim_sample {cfg['dim_sample']}")
        plot_curves({cfg["loss"]: res.history}, out / "figures" / f"{cfg['run_id']}_curves.png")
    append_jsonl(out / "results.jsonl", record)
    tracker.summary({k: v for k, v in record.items() if k.startswith("final_")})
    tracker.finish()  # Tracker turns any W&B failure into a warning
    return record


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        cfg = config_of(args)
    except ValueError as err:
        print(f"gradsurrogate restore: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    done = {r.get("run_id") for r in read_jsonl(out / "results.jsonl")}
    if cfg["run_id"] in done and not args.force:
        print(f"run {cfg['run_id']} already in {out / 'results.jsonl'}; skipping "
              "(--force to rerun)")
        return 0
    try:
        rec = run_one(cfg, out, args.wandb, args.figures)
    except ValueError as err:
        print(f"gradsurrogate restore: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: rec[k] for k in ("run_id", "loss", "dim_sample", "status",
                                          "final_cosine", "final_rel_error", "jvp_evals")}))
    return 0 if rec["status"] != "nonfinite" else 1
