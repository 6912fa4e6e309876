"""What a ``gradsurrogate jacnet`` command runs (:class:`Plan`) and running it resumably.

Each 1-d seed (``Config1D``: structured model + baseline), the 2-d run (``Config2D``: five
models) and each 100-d seed (``Config100D``) is one record of ``OUT/results.jsonl`` stored
through :class:`~gradsurrogate.runs.RunStore`:

    {"run_id": "<experiment>-<run_id(config)>", "experiment": "exp" | "abs" | "2d" | "100d",
     "config": asdict(config), "diverged": bool, "diverged_step": int | null,
     "diverged_model": str | null, "structured": {metrics}, "baseline": {metrics}}   # 1-d
                                                      ... "models": {name: {metrics}}  # 2-d, 100-d

Per-step (1-d, 2-d) and per-epoch (100-d) logs go to ``OUT/history.jsonl`` through the same
store, one line per model and step/epoch keyed ``<run key>/<model>/<index>`` (a rewritten line
supersedes the earlier one). A 100-d run appends its lines as each epoch finishes and keeps a
checkpoint in ``OUT/checkpoints/<run key>.pt`` (removed once its record is stored), so an
interrupted run resumes after its last finished epoch.

The experiment prefix keeps a 1-d and a 2-d config with the same non-default fields apart.
The arrays a figure draws (fits on the grid, loss curves, warped grids) go to
``OUT/curves/<run_id>.json`` (written atomically, before the record) for the runs a figure
needs. Rerunning skips every run that has a usable record, and reruns a figure run whose curves
file is missing or unreadable.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gradsurrogate.io import write_json_atomic
from gradsurrogate.registry import check_choice, check_int
from gradsurrogate.runs import RunStore, run_id
from gradsurrogate.tracking import Tracker

from .exp1d import Config1D, run_1d
from .highdim import Config100D, run_100d
from .plane import Config2D, run_2d

__all__ = ["ALL", "CHOICES", "EXPERIMENTS", "HISTORY", "Plan", "checkpoint_path", "curves_path",
           "history_lines", "load_curves", "load_history", "record_key", "run_one", "run_plans",
           "split_result"]

EXPERIMENTS: tuple[str, ...] = ("exp", "abs", "2d", "100d")
#: what ``all`` runs: the quick experiments (the 100-d one takes minutes: run it by name)
ALL: tuple[str, ...] = ("exp", "abs", "2d")
#: the CLI's experiment argument: one experiment or ``all``
CHOICES: tuple[str, ...] = (*EXPERIMENTS, "all")
HISTORY = "history.jsonl"
RunConfig = Config1D | Config2D | Config100D

#: per-model keys of a ``run_1d`` result that are arrays for the figure, not metrics
_CURVES_1D = ("init", "fit", "jacobian", "inverse_y", "inverse")
_CURVES_2D = ("loss", "atol", "n")


@dataclass(frozen=True)
class Plan:
    """One command's runs: ``experiments`` (subset of :data:`EXPERIMENTS`), 1-d runs of
    ``base_1d`` on seeds ``0..seeds-1`` (the tables) plus ``figure_seed`` (the figures), the
    2-d run ``config_2d`` and the 100-d runs of ``config_100d`` on seeds ``0..seeds_100d-1``."""

    experiments: tuple[str, ...] = ALL
    base_1d: Config1D = field(default_factory=Config1D)
    seeds: int = 5
    figure_seed: int = 2
    config_2d: Config2D = field(default_factory=Config2D)
    config_100d: Config100D = field(default_factory=Config100D)
    seeds_100d: int = 3

    def __post_init__(self) -> None:
        if not self.experiments:
            raise ValueError(f"no experiment given; accepted: {', '.join(CHOICES)}")
        for name in self.experiments:
            check_choice(name, EXPERIMENTS, "experiment")
        check_int(self.seeds, "seeds", 1)
        check_int(self.figure_seed, "figure_seed", 0)
        check_int(self.seeds_100d, "seeds_100d", 1)

    @classmethod
    def for_experiment(cls, experiment: str, **kwargs: Any) -> Plan:
        """A plan for ``exp``, ``abs``, ``2d``, ``100d`` or ``all`` (= :data:`ALL`)."""
        check_choice(experiment, CHOICES, "experiment")
        names = ALL if experiment == "all" else (experiment,)
        return cls(experiments=names, **kwargs)

    def table_runs(self, target: str) -> list[Config1D] | list[Config100D]:
        """The configs of seeds ``0..seeds-1`` for a 1-d ``target`` (or of the 100-d seeds)."""
        if target == "100d":
            return [dataclasses.replace(self.config_100d, seed=s)
                    for s in range(self.seeds_100d)]
        return [dataclasses.replace(self.base_1d, target=target, seed=s)
                for s in range(self.seeds)]

    def figure_run(self, experiment: str) -> RunConfig:
        """The run a figure of ``experiment`` draws (100-d: seed 0)."""
        if experiment == "2d":
            return self.config_2d
        if experiment == "100d":
            return self.table_runs("100d")[0]
        return dataclasses.replace(self.base_1d, target=experiment, seed=self.figure_seed)

    def configs(self) -> list[RunConfig]:
        """Every run of the plan (table seeds, figure seed, 2-d), without repeats."""
        out: list[RunConfig] = []
        for name in self.experiments:
            runs: list[Any] = [] if name == "2d" else self.table_runs(name)
            for c in [*runs, self.figure_run(name)]:
                if c not in out:
                    out.append(c)
        return out


def record_key(cfg: RunConfig) -> str:
    """``"<experiment>-<run_id(cfg)>"`` (experiment: the 1-d target, ``2d`` or ``100d``)."""
    kind = ("2d" if isinstance(cfg, Config2D) else "100d" if isinstance(cfg, Config100D)
            else cfg.target)
    return f"{kind}-{run_id(cfg)}"


def _history_columns(history: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [h.get(k) for h in history] for k in ("loss", "atol", "n")}


def split_result(cfg: RunConfig, result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(record, curves)`` of a ``run_1d``/``run_2d`` result: metrics for ``results.jsonl``,
    arrays for the figure."""
    key = record_key(cfg)
    record: dict[str, Any] = {
        "run_id": key, "experiment": key.split("-", 1)[0], "config": dataclasses.asdict(cfg),
        "diverged": result["diverged"], "diverged_step": result["diverged_step"],
        "diverged_model": result["diverged_model"],
    }
    if isinstance(cfg, Config100D):
        record["models"] = result["models"]
        record["reference"] = result["reference"]
        return record, {}
    if isinstance(cfg, Config2D):
        record["models"] = {name: {k: v for k, v in m.items() if k not in _CURVES_2D}
                            for name, m in result["models"].items()}
        curves = {"grid_true": result.get("grid_true"), "grid_model": result.get("grid_model"),
                  "models": {name: {k: m.get(k) for k in _CURVES_2D}
                             for name, m in result["models"].items()}}
        return record, curves
    curves = {k: result[k] for k in ("x_train", "grid", "target")}
    for role in ("structured", "baseline"):
        if role not in result:
            continue
        r = result[role]
        record[role] = {k: v for k, v in r.items() if k not in (*_CURVES_1D, "history")}
        record[role]["steps_done"] = len(r["history"])
        curves[role] = {**{k: r.get(k) for k in _CURVES_1D}, **_history_columns(r["history"])}
    return record, curves


def history_lines(key: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    """``history.jsonl`` lines of a finished 1-d or 2-d result: one per model and step."""
    models = result.get("models") or {r: result[r] for r in ("structured", "baseline")
                                      if r in result}
    lines = []
    for name, m in models.items():
        steps = m.get("history")
        if steps is None:  # 2-d: columns
            loss = m.get("loss") or []
            steps = [{"step": k, "loss": v} for k, v in enumerate(loss)]
            for col in ("atol", "n"):
                for h, v in zip(steps, m.get(col) or []):
                    h[col] = v
        lines += [{"run_id": f"{key}/{name}/{h['step']}", "run": key, "model": name, **h}
                  for h in steps]
    return lines


def load_history(store: RunStore, key: str) -> dict[str, list[dict[str, Any]]]:
    """The stored step/epoch lines of run ``key`` by model, in order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for rec in store.records(HISTORY).values():
        if rec.get("run") == key and isinstance(rec.get("model"), str):
            out.setdefault(rec["model"], []).append(rec)
    index = "epoch" if key.startswith("100d-") else "step"
    return {m: sorted(v, key=lambda r: r.get(index, 0)) for m, v in out.items()}


def checkpoint_path(out: str | Path, key: str) -> Path:
    """Where an unfinished 100-d run keeps its training state: ``out/checkpoints/<key>.pt``."""
    return Path(out) / "checkpoints" / f"{key}.pt"


def curves_path(out: str | Path, key: str) -> Path:
    """Where the figure arrays of run ``key`` are stored: ``out/curves/<key>.json``."""
    return Path(out) / "curves" / f"{key}.json"


def load_curves(out: str | Path, key: str) -> dict[str, Any] | None:
    """The stored figure arrays of run ``key``; ``None`` when missing or unreadable."""
    try:
        data = json.loads(curves_path(Path(out), key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _usable(rec: dict[str, Any] | None, cfg: RunConfig) -> bool:
    """A stored record counts as finished when it is this config's (fields added since it was
    stored take their defaults) and complete."""
    if rec is None or not isinstance(rec.get("diverged"), bool) or \
            not isinstance(rec.get("config"), dict):
        return False
    try:
        upgrade = getattr(type(cfg), "from_record", None)  # legacy records of a config
        stored = upgrade(rec["config"]) if upgrade else type(cfg)(**rec["config"])
        if stored != cfg:
            return False
    except (TypeError, ValueError):  # a field it names no longer exists, or a bad value
        return False
    parts = ["structured", "baseline"] if isinstance(cfg, Config1D) else ["models"]
    return rec["diverged"] or all(isinstance(rec.get(p), dict) for p in parts)


def _loss_rows(result: dict[str, Any]) -> list[dict[str, float]]:
    """Per-step ``{model/loss: value}`` rows of every model trained in ``result``."""
    models = result.get("models") or {r: result[r] for r in ("structured", "baseline")
                                      if r in result}
    curves = {name: (m["loss"] if "loss" in m else [h["loss"] for h in m["history"]])
              for name, m in models.items()}
    steps = max((len(c) for c in curves.values()), default=0)
    return [{f"{name}/loss": c[k] for name, c in curves.items() if k < len(c)}
            for k in range(steps)]


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {"diverged": record["diverged"]}
    for part in ("structured", "baseline"):
        for k, v in (record.get(part) or {}).items():
            if isinstance(v, (int, float)):
                flat[f"{part}/{k}"] = v
    for name, m in (record.get("models") or {}).items():
        flat.update({f"{name}/{k}": v for k, v in m.items() if isinstance(v, (int, float))})
    return flat


def _run_100d(cfg: Config100D, key: str, tracker: Tracker,
              store: RunStore | None) -> dict[str, Any]:
    """``run_100d`` with its epoch lines appended to the store's history as they finish (and
    logged to the tracker) and a checkpoint in the store's folder."""
    def on_epoch(model: str, summary: dict[str, Any]) -> None:
        if store is not None:
            store.append([{"run_id": f"{key}/{model}/{summary['epoch']}", "run": key,
                           "model": model, **summary}], name=HISTORY)
        tracker.log({f"{model}/{k}": summary[k] for k in ("loss", "test_mae") if k in summary},
                    step=summary["epoch"])

    ckpt = None if store is None else checkpoint_path(store.out, key)
    return run_100d(cfg, on_epoch, ckpt)


def run_one(cfg: RunConfig, wandb: str | None = "disabled",
            project: str = "gradsurrogate-jacnet",
            store: RunStore | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one run (logging the per-step losses, or the 100-d per-epoch losses as they
    come, to a Tracker given the resolved config); returns ``(record, curves)``. With
    ``store``, a 100-d run writes its epoch lines and checkpoint there."""
    key = record_key(cfg)
    tracker = Tracker(wandb, project, dataclasses.asdict(cfg), name=key,
                      group=key.split("-", 1)[0], job_type="jacnet")
    try:
        if isinstance(cfg, Config100D):
            result = _run_100d(cfg, key, tracker, store)
        else:
            result = run_2d(cfg) if isinstance(cfg, Config2D) else run_1d(cfg)
            for step, row in enumerate(_loss_rows(result)):
                tracker.log(row, step=step)
        record, curves = split_result(cfg, result)
        if not isinstance(cfg, Config100D):
            curves["history"] = history_lines(key, result)
        tracker.summary(_summary(record))
    finally:
        tracker.finish()
    return record, curves


def run_plans(plans: Iterable[Plan], store: RunStore, wandb: str | None = "disabled",
              project: str = "gradsurrogate-jacnet") -> dict[str, dict[str, Any]]:
    """Run every config of ``plans`` not yet stored in ``store`` (resume) and return the
    records of all of them by :func:`record_key`. Figure runs also keep their curves; every
    run's step/epoch lines go to ``history.jsonl``."""
    plans = list(plans)
    configs: dict[str, RunConfig] = {}
    for plan in plans:
        for cfg in plan.configs():
            configs.setdefault(record_key(cfg), cfg)
    figure_keys = {record_key(p.figure_run(e)) for p in plans for e in p.experiments
                   if e != "100d"}
    stored = store.records()
    todo = []
    for key, cfg in configs.items():
        rec = stored.get(key)
        if not _usable(rec, cfg):
            todo.append(key)
        elif key in figure_keys and not rec["diverged"] and load_curves(store.out, key) is None:
            todo.append(key)  # figure arrays lost: rerun (deterministic) to redraw
        elif isinstance(cfg, Config100D):
            checkpoint_path(store.out, key).unlink(missing_ok=True)  # stale: run finished
    for key in tqdm(todo, desc="jacnet runs", disable=None):
        record, curves = run_one(configs[key], wandb, project, store)
        lines = curves.pop("history", [])
        if lines:
            store.append(lines, name=HISTORY)
        if key in figure_keys:
            write_json_atomic(curves_path(store.out, key), curves)
        store.append([record])
        stored[key] = record
        if isinstance(configs[key], Config100D):
            checkpoint_path(store.out, key).unlink(missing_ok=True)
    return {key: stored[key] for key in configs}
