"""Stored runs of the diffnet experiments, through :class:`gradsurrogate.runs.RunStore`.

One run = one (problem, activation) with the loss variants of its config. Each finished run
is one record in ``<out>/results.jsonl``: ``run_id`` (:func:`gradsurrogate.runs.run_id` of
the run's config, whose ``activations`` is the run's one activation), ``config`` (its
``asdict``), ``problem``, ``activation``, ``losses``, the final test MSEs ``mse``
({loss: {f, df, d2f}}) and training losses ``final_train_loss`` of the variants that did not
diverge, ``diverged`` / ``diverged_step`` (the earliest divergence of a variant, as in every
part: the 0-based index of the first epoch whose mean loss was not finite = epochs completed
before it; the number of epochs run if only the final parameters were not finite; None if no
variant diverged) / ``diverged_losses`` ({loss: that index}; the report shows the 1-based
epoch, ``diverged@E`` with E = index + 1), ``epochs_run``, ``seconds``
and ``file``: the arrays (test predictions, curves; see :func:`.experiment.train_one`) of the
variants that did not diverge, ``<problem>_<activation>[__<losses>]-<run_id>.npz`` (None when
every variant diverged). Unfinished runs keep a checkpoint ``<same stem>.ckpt.pt``. Both side
files are written atomically.

Resume: a run whose ``run_id`` has a record (and its ``.npz``) is not trained again.
Results of older versions (``<problem>_<activation>[__<losses>].npz`` without a record, and
their checkpoints) are reused when their settings match, as before. A damaged ``.npz`` or
checkpoint is a ``ValueError`` naming the file; ``restart=True`` (``--restart``) discards the
selected runs' side files and trains them again.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from gradsurrogate.diffnet.config import (
    DIFFNET_LOSSES,
    METRIC_KEYS,
    ExperimentConfig,
    config_from,
    parse_settings,
    run_config,
    settings_match,
    settings_text,
)
from gradsurrogate.diffnet.experiment import (
    checkpoint_matches,
    evaluate_checkpoint,
    load_checkpoint,
    train_one,
)
from gradsurrogate.io import atomic_path
from gradsurrogate.runs import RESULTS, RunStore, StoreWarning, run_id

__all__ = ["PART", "legacy_path", "read_npz", "rekey", "run_experiment", "run_stem",
           "stored_runs"]

#: the command that writes diffnet folders (``RunStore(out, part=PART)``, read by
#: ``gradsurrogate report``)
PART = "diffnet"

_NEW_NAME = re.compile(r"-[0-9a-f]{12}(\.ckpt\.pt|\.npz)$")


def _loss_tag(losses: tuple[str, ...]) -> str:
    return "" if tuple(losses) == DIFFNET_LOSSES else "__" + "-".join(losses)


def run_stem(run_cfg: ExperimentConfig) -> str:
    """``<problem>_<activation>[__<loss>-<loss>]-<run_id>`` of a run config."""
    return (f"{run_cfg.problem}_{run_cfg.activations[0]}{_loss_tag(run_cfg.losses)}"
            f"-{run_id(run_cfg)}")


def legacy_path(out: str | Path, problem: str, activation: str,
                losses: tuple[str, ...] = DIFFNET_LOSSES) -> Path:
    """Where older versions stored a result: ``<problem>_<activation>[__<losses>].npz``."""
    return Path(out) / f"{problem}_{activation}{_loss_tag(losses)}.npz"


def _restart_hint(problem: str, activation: str, losses: Any) -> str:
    flags = f"--problem {problem} --activations {activation}"
    if tuple(losses) != DIFFNET_LOSSES:
        flags += " --losses " + " ".join(map(str, losses))
    return f"pass --restart (with {flags} and that run's other flags) to retrain it"


def read_npz(path: Path, hint: str = "pass --restart to retrain this run") -> dict[str, Any]:
    """Every array of a stored ``.npz``; ``ValueError`` naming the file if it is damaged."""
    try:
        with np.load(path) as stored:
            arrays = dict(stored)
        if "losses" not in arrays:
            raise ValueError("no 'losses' array")
    except Exception as err:  # zip, pickle and format errors have many types
        raise ValueError(f"stored result {str(path)!r} is unreadable ({type(err).__name__}: "
                         f"{err}); {hint}") from None
    return arrays


def rekey(record: dict[str, Any]) -> str | None:
    """A record's run id recomputed from its stored config (None: not a valid config)."""
    cfg = config_from(record.get("config")) if isinstance(record.get("config"), dict) else None
    return None if cfg is None else run_id(cfg)


def _record(run_cfg: ExperimentConfig, res: dict[str, Any], file: str | None) -> dict[str, Any]:
    kept = [str(x) for x in res["losses"]]
    # diverged_at: 1-based epoch (0: never) -> records: 0-based epoch index
    div = {loss: int(e) - 1 for loss, e in zip(run_cfg.losses, res["diverged_at"]) if e}
    mse = {loss: dict(zip(METRIC_KEYS, map(float, res["mse"][i]))) for i, loss in
           enumerate(kept)}
    train = res.get("train_loss")
    last = {loss: float(train[-1, i]) for i, loss in enumerate(kept)} \
        if train is not None and len(train) else {}
    return {"run_id": run_id(run_cfg), "config": asdict(run_cfg), "problem": run_cfg.problem,
            "activation": run_cfg.activations[0], "losses": list(run_cfg.losses),
            "file": file, "mse": mse, "final_train_loss": last, "diverged": bool(div),
            "diverged_step": min(div.values()) if div else None, "diverged_losses": div,
            "epochs_run": int(res.get("epochs_run", res["train_loss"].shape[0]
                                      if train is not None else run_cfg.epochs)),
            "seconds": float(res.get("seconds", float("nan")))}


def _adopt_legacy(out: Path, run_cfg: ExperimentConfig) -> dict[str, Any] | None:
    """A record for an older version's stored result of this run, if its settings match."""
    path = legacy_path(out, run_cfg.problem, run_cfg.activations[0], run_cfg.losses)
    if not path.exists():
        return None
    hint = _restart_hint(run_cfg.problem, run_cfg.activations[0], run_cfg.losses)
    stored = read_npz(path, hint)
    if "config" not in stored or not settings_match(str(stored["config"]), run_cfg):
        return None
    div = _diverged_of(stored)
    return _record(run_cfg, {**stored, "losses": np.array([x for x, e in zip(
        run_cfg.losses, div) if not e]), "mse": stored["mse"][div == 0],
        "train_loss": stored["train_loss"][:, div == 0], "diverged_at": div}, path.name)


def _diverged_of(stored: dict[str, Any]) -> np.ndarray:
    """Per stored loss: the 1-based epoch its training loss first was not finite (older
    versions saved such runs as results), epochs + 1 if only its test results are not, 0 if
    neither (``diverged_at`` of :func:`.experiment.train_one`)."""
    train = stored["train_loss"]
    bad = ~np.isfinite(train)
    div = np.where(bad.any(0), bad.argmax(0) + 1, 0) if len(train) else \
        np.zeros(bad.shape[1], dtype=int)
    final = ~np.isfinite(stored["mse"]).all(-1)
    return np.where((div == 0) & final, len(train) + 1, div)


@contextmanager
def _opened(store: RunStore | str | Path) -> Iterator[RunStore]:
    if isinstance(store, RunStore) and store.locked:
        yield store
    else:
        with RunStore(store.out if isinstance(store, RunStore) else store,
                      part=PART) as opened:
            yield opened


def run_experiment(
    cfg: ExperimentConfig, store: RunStore | str | Path,
    log: Callable[[dict], None] | None = None, *, restart: bool = False,
) -> dict[str, dict[str, Any]]:
    """Train every activation of ``cfg`` that has no stored record (resume) and store it;
    ``restart`` discards the stored files of these runs first. ``store``: a locked
    :class:`RunStore` or an output folder. Returns activation -> record."""
    out: dict[str, dict[str, Any]] = {}
    with _opened(store) as st:
        done = st.records(RESULTS, rekey=rekey)
        for activation in cfg.activations:
            run_cfg = run_config(cfg, activation)
            rid, stem = run_id(run_cfg), run_stem(run_cfg)
            npz, ckpt = st.out / f"{stem}.npz", st.out / f"{stem}.ckpt.pt"
            old = legacy_path(st.out, cfg.problem, activation, cfg.losses)
            if restart:
                for path in (npz, ckpt, old, old.with_suffix(".ckpt.pt")):
                    path.unlink(missing_ok=True)
            else:
                rec = done.get(rid)
                if rec is not None and (rec.get("file") is None or (st.out / rec["file"]).exists()):
                    out[activation] = rec
                    continue
                if rec is not None:
                    warnings.warn(f"{st.out / rec['file']} (run {rid}) is missing; training "
                                  "the run again", StoreWarning, stacklevel=2)
                rec = _adopt_legacy(st.out, run_cfg)
                if rec is not None:
                    st.append([rec])
                    out[activation] = rec
                    continue
                old_ckpt = old.with_suffix(".ckpt.pt")
                if not ckpt.exists() and old_ckpt.exists() and \
                        checkpoint_matches(load_checkpoint(old_ckpt), run_cfg, activation):
                    os.replace(old_ckpt, ckpt)
            res = train_one(run_cfg, activation, log, checkpoint=ckpt)
            file = None
            if len(res["losses"]):
                file = npz.name
                with atomic_path(npz, suffix=".npz") as tmp:
                    np.savez(tmp, **res, config=np.array(settings_text(run_cfg)))
            rec = _record(run_cfg, res, file)
            st.append([rec])
            ckpt.unlink(missing_ok=True)
            out[activation] = rec
    return out


def _members(run_cfg: ExperimentConfig, stored: dict[str, Any], div: dict[str, int],
             finished: bool, epoch: int) -> list[dict[str, Any]]:
    """One dict per requested loss: its arrays (none if diverged) and status; ``div``: loss ->
    1-based ``diverged_at`` epoch (see :func:`.experiment.train_one`)."""
    kept = [str(x) for x in stored.get("losses", [])]
    members = []
    for loss in run_cfg.losses:
        m: dict[str, Any] = {"loss": loss, "finished": finished, "epoch": epoch,
                             "diverged_at": int(div.get(loss, 0))}
        if not m["diverged_at"] and loss in kept:
            i = kept.index(loss)
            m |= {k: stored[k][i] for k in ("mse", "mse_inits", "y", "J", "H", "test_mse")
                  if k in stored}
        members.append(m)
    return members


def stored_runs(out: str | Path, problem: str, include_checkpoints: bool = False
                ) -> list[tuple[ExperimentConfig, list[dict[str, Any]], dict[str, Any]]]:
    """The runs of ``problem`` stored in ``out`` and in its direct subfolders (parallel
    processes each need their own ``--out``; a report of the parent merges them), in record
    order: (run config, members, shared arrays), where members are per requested loss (see
    :func:`_members`) and the shared arrays hold the test inputs and truths (absent when
    every member diverged) and ``test_epochs``. Per folder: records, then older versions'
    ``.npz`` files without a record, then (``include_checkpoints``) unfinished runs from
    their checkpoints."""
    out = Path(out)
    subs = sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []
    runs: list = []
    for folder in [out, *subs]:
        runs += _stored_in(folder, problem, include_checkpoints)
    return runs


def _stored_in(out: Path, problem: str, include_checkpoints: bool
               ) -> list[tuple[ExperimentConfig, list[dict[str, Any]], dict[str, Any]]]:
    records = [r for r in RunStore(out).records(RESULTS, rekey=rekey).values()
               if r.get("problem") == problem]
    runs, files = [], set()
    for rec in records:
        run_cfg = config_from(rec["config"])
        stored: dict[str, Any] = {}
        if rec.get("file"):
            files.add(rec["file"])
            path = out / rec["file"]
            if not path.exists():
                warnings.warn(f"{path} (run {rec['run_id']}) is missing; not reported",
                              StoreWarning, stacklevel=2)
                continue
            stored = read_npz(path, _restart_hint(problem, rec["activation"], run_cfg.losses))
        # records: 0-based epoch index -> members: 1-based diverged_at
        div = {k: int(v) + 1 for k, v in (rec.get("diverged_losses") or {}).items()}
        runs.append((run_cfg, _members(run_cfg, stored, div, True, rec["epochs_run"]), stored))
    for path in sorted(out.glob(f"{problem}_*.npz")):
        if path.name in files or _NEW_NAME.search(path.name):
            continue
        activation = path.stem[len(problem) + 1:].split("__")[0]
        stored = read_npz(path, "delete it or pass --restart with its run's flags")
        run_cfg = parse_settings(str(stored.get("config", "")), activation)
        if run_cfg is None or legacy_path(out, problem, activation, run_cfg.losses) != path:
            continue
        div = dict(zip(run_cfg.losses, map(int, _diverged_of(stored))))
        runs.append((run_cfg, _members(run_cfg, stored, div, True, len(stored["train_loss"])),
                     stored))
    if include_checkpoints:
        finished = {run_id(c) for c, _, _ in runs}
        for path in sorted(out.glob(f"{problem}_*.ckpt.pt")):
            run_cfg, activation, res = evaluate_checkpoint(path)
            run_cfg = run_config(run_cfg, activation)
            if run_id(run_cfg) in finished:
                continue
            div = {loss: int(e) for loss, e in zip(run_cfg.losses, res["diverged_at"]) if e}
            runs.append((run_cfg, _members(run_cfg, res, div, False, int(res["epoch"])), res))
    return runs
