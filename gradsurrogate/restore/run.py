"""Run restoration configs and store them through :class:`gradsurrogate.runs.RunStore`.

Each run appends one record to ``OUT/results.jsonl``::

    {"run_id", "config": RestoreConfig.to_dict(), "status": "done" | "target_reached" |
     "diverged", "diverged": bool, "diverged_step": int | null, "final_cosine",
     "final_rel_error", "final_sign_agreement", "final_loss", "jvp_evals", "f_evals",
     "reached_at", "epochs_run", "wall_time", "time_per_epoch", "limit" (= dim_in: the
     directional evaluations that determine a full-rank linear map), "x_limit" (jvp_evals /
     limit), "final_heldout_rel", "probes" (replay | fresh), "bank_probes", "heldout_probes",
     "lr" (the rate used), "stop", "steps", "best_step", "scale_fix", and the least-squares
     baseline on the same training probes: "ls_cosine", "ls_rel_error", "ls_heldout_rel",
     "heldout_scales": {scale: mean cosine of g(∇_f, α) vs ∇_α on 256 fresh pairs}}

and the restored surrogate to ``OUT/surrogates/RUN_ID.pt`` (``load_surrogate`` reads it).

(NaN/inf stored as ``null``) and its per-epoch history to ``OUT/history/RUN_ID.json``
(atomic replace, written before the record). ``run_id`` is :func:`gradsurrogate.runs.run_id`
of the config. A config whose ``run_id`` is already recorded is skipped (resume) unless
``restart`` (``--restart``: run it again, its new record replaces the old one); a diverged run
counts as finished (it would diverge again). A non-finite loss stops the run, which is
recorded with ``diverged: true`` and ``diverged_step``: the 0-based index of the optimizer step
whose loss was not finite (= updates applied before it; the number of steps if the last update
left non-finite parameters), as in every part (:mod:`gradsurrogate.runs`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from ..io import write_json_atomic
from ..runs import RESULTS, RunStore, run_id
from ..tracking import Tracker
from .config import RestoreConfig, build_problem, build_surrogate
from .evaluate import heldout_scales, save_surrogate
from .trainer import restore

__all__ = ["HISTORY", "PART", "PROJECT", "record_config", "run_restore", "run_restores",
           "stored_records"]

PROJECT = "gradsurrogate-restore"
#: the command that writes restore folders (``RunStore(out, part=PART)``, read by
#: ``gradsurrogate report``)
PART = "restore"
HISTORY = "history"
#: restored surrogates, ``OUT/surrogates/RUN_ID.pt`` (:func:`~.evaluate.load_surrogate`)
SURROGATES_DIR = "surrogates"
#: settings every record of the earlier flat format carried (read for resume only)
_FLAT_KEYS = ("problem", "dim_in", "dim_out", "dim_sample", "loss", "surrogate", "target",
              "epochs", "lr", "seed", "status")

Echo = Callable[[str], None]


def record_config(record: dict[str, Any]) -> RestoreConfig | None:
    """The config a stored record ran (its ``"config"``, or the settings of a record in the
    earlier flat format); ``None`` if it names no valid config."""
    data = record.get("config")
    if data is None and all(k in record for k in _FLAT_KEYS):
        names = {f.name for f in dataclasses.fields(RestoreConfig)}
        data = {k: v for k, v in record.items() if k in names}
    if not isinstance(data, dict):
        return None
    try:
        return RestoreConfig.from_dict(data)
    except (TypeError, ValueError):
        return None


def _rekey(record: dict[str, Any]) -> str | None:
    cfg = record_config(record)
    return None if cfg is None else run_id(cfg)


def stored_records(store: RunStore) -> dict[str, dict[str, Any]]:
    """The latest record per run id in ``store``'s ``results.jsonl`` (ids recomputed from each
    record's config, so records of an older id scheme resume; records without a valid config
    are left out)."""
    return store.records(RESULTS, rekey=_rekey)


def _summary(record: dict[str, Any]) -> str:
    cfg = record["config"]
    keep = {k: cfg[k] for k in ("loss", "dim_in", "dim_out", "dim_sample")}
    keep.update({k: record.get(k) for k in ("run_id", "status", "final_cosine",
                                            "final_rel_error", "final_heldout_rel", "jvp_evals",
                                            "diverged_step")})
    return json.dumps(keep) + "\n" + describe(record)


def describe(record: dict[str, Any]) -> str:
    """One plain line: evaluations in multiples of the limit, probe mode, baseline."""
    cfg = record["config"]
    mode = ("replayed a bank of {} probes (offline)".format(record.get("bank_probes"))
            if record.get("probes") == "replay" else "fresh probes every step (online)")
    fd = (f", {record['f_evals']} function evaluations ({cfg['target']}: 2 per probe)"
          if cfg.get("target") in ("fd", "integral") else "")
    ls = record.get("ls_cosine")
    base = (f"; least squares on the same probes: cosine {ls:.5f}, rel error "
            f"{record.get('ls_rel_error'):.2e}" if isinstance(ls, float) else "")
    x = record.get("x_limit")
    lr = record.get("lr")
    return (f"  {record['jvp_evals']} directional evaluations = "
            f"{x if x is None else f'{x:.2f}'}x the limit (dim_in = {cfg['dim_in']}), "
            f"{record.get('heldout_probes')} held out; {mode}{fd}; lr "
            f"{lr if not isinstance(lr, float) else f'{lr:.3g}'}, stop: {record.get('stop')}"
            f"{base}")


def _run_one(cfg: RestoreConfig, rid: str, store: RunStore, wandb: str | None, project: str,
             figures: bool, progress: bool) -> dict[str, Any]:
    problem, surrogate = build_problem(cfg), build_surrogate(cfg)
    tracker = Tracker(wandb, project, cfg.to_dict(), name=rid)
    try:
        start = time.perf_counter()
        res = restore(problem, surrogate, cfg, progress=progress, on_nonfinite="stop",
                      callback=lambda rec: tracker.log(rec, step=rec["epoch"]))
        wall = time.perf_counter() - start
        record = {
            "run_id": rid, "config": cfg.to_dict(), "status": res.status,
            "diverged": res.diverged, "diverged_step": res.diverged_step,
            "final_cosine": res.final.get("cosine"), "final_rel_error": res.final.get("rel_error"),
            "final_sign_agreement": res.final.get("sign_agreement"),
            "final_loss": res.final.get("loss"), "jvp_evals": res.jvp_evals,
            "f_evals": res.f_evals, "reached_at": res.reached_at,
            "epochs_run": res.history[-1]["epoch"] if res.history else 0, "wall_time": wall,
            "time_per_epoch": wall / max(1, res.history[-1]["epoch"] if res.history else 1),
            "limit": cfg.dim_in, "x_limit": res.jvp_evals / cfg.dim_in,
            "final_heldout_rel": res.final.get("heldout_rel"),
            **{k: res.info.get(k) for k in ("probes", "bank_probes", "heldout_probes", "lr",
                                            "stop", "steps", "best_step", "scale_fix",
                                            "ls_cosine", "ls_rel_error", "ls_heldout_rel")},
        }
        from .report import loss_sign_flag  # report imports this module

        # "loss rises while sign agreement improves" (scale drift), or None
        record["loss_up_sign_up"] = loss_sign_flag(res.history)
        if not res.diverged:  # fresh (α, ∇_f) pairs at cotangent scales 1e-2..1e2
            try:
                record["heldout_scales"] = {f"{k:g}": v["cosine"] for k, v in
                                            heldout_scales(problem, surrogate).items()}
            except RuntimeError:  # f not differentiable by torch and no known Jacobian
                record["heldout_scales"] = None
            save_surrogate(surrogate, cfg, store.out / SURROGATES_DIR / f"{rid}.pt")
        write_json_atomic(store.out / HISTORY / f"{rid}.json", res.history)
        if figures:
            _figures(cfg, rid, problem, surrogate, res.history, store.out / "figures")
        store.append([record])
        tracker.summary({k: v for k, v in record.items()
                         if k.startswith("final_") or k in ("status", "diverged",
                                                             "diverged_step", "jvp_evals")})
    finally:
        tracker.finish()  # the Tracker turns any W&B failure into a warning
    return record


def _figures(cfg: RestoreConfig, rid: str, problem: Any, surrogate: Any,
             history: list[dict[str, Any]], folder: Path) -> None:
    from .plots import plot_curves, plot_jacobians

    if problem.jacobian is not None:
        pt = torch.zeros(1, cfg.dim_in, dtype=cfg.torch_dtype)
        with torch.no_grad():
            plot_jacobians(problem.jacobian(pt)[0], surrogate.jacobian(pt)[0],
                           folder / f"{rid}_jacobian.png",
                           f"{cfg.loss}, dim_sample {cfg.dim_sample}")
    plot_curves({cfg.loss: history}, folder / f"{rid}_curves.png")


def run_restores(configs: Iterable[RestoreConfig], out: str | Path | RunStore, *,
                 restart: bool = False, wandb: str | None = "disabled", project: str = PROJECT,
                 figures: bool = False, progress: bool = True, echo: Echo | None = print
                 ) -> list[dict[str, Any]]:
    """Run every config not yet recorded in ``out`` (all of them with ``restart``), in order,
    and return the records (stored ones for skipped configs); a config listed twice runs once.

    ``out`` is a folder (locked for the call) or a :class:`RunStore` (used as is when already
    locked). ``wandb``: W&B mode of each run's :class:`~gradsurrogate.tracking.Tracker`
    (``None``: its default). ``echo`` receives one line per run (``None``: quiet).
    """
    configs = list(configs)
    for cfg in configs:
        if not isinstance(cfg, RestoreConfig):
            raise ValueError(f"run_restores takes RestoreConfig objects; got "
                             f"{type(cfg).__name__}")
    store = out if isinstance(out, RunStore) else RunStore(out, part=PART)
    if store.locked:
        return _run_all(configs, store, restart, wandb, project, figures, progress, echo)
    with store:
        return _run_all(configs, store, restart, wandb, project, figures, progress, echo)


def _run_all(configs: list[RestoreConfig], store: RunStore, restart: bool, wandb: str | None,
             project: str, figures: bool, progress: bool, echo: Echo | None
             ) -> list[dict[str, Any]]:
    done = stored_records(store)
    ran: set[str] = set()
    records = []
    for cfg in configs:
        rid = run_id(cfg)
        if rid in ran or (rid in done and not restart):
            if echo is not None and rid not in ran:
                echo(f"run {rid} already in {store.out / RESULTS}; skipping (--restart to "
                     "rerun)")
            records.append(done[rid])
            continue
        record = _run_one(cfg, rid, store, wandb, project, figures, progress)
        done[rid] = record
        ran.add(rid)
        records.append(record)
        if echo is not None:
            echo(_summary(record))
    return records


def run_restore(config: RestoreConfig, out: str | Path | RunStore, **opts: Any
                ) -> dict[str, Any]:
    """:func:`run_restores` of one config: its record (the stored one when it is already
    recorded, unless ``restart=True``)."""
    return run_restores([config], out, **opts)[0]
