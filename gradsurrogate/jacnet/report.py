"""Markdown report of JacNet runs, rebuilt from the stored records (and curves for figures):
``OUT/report.md`` with ``OUT/figures/jacnet_*.png``.

1-d sections: one table per (target, settings) over seeds ``0..seeds-1``, errors as
median (mean ± std) and the guarantee columns worst case over seeds; diverged seeds are listed
and left out of the table. 2-d: one row per model. 100-d: one row per model over seeds, and a
figure of the per-epoch logs (``OUT/history.jsonl``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gradsurrogate.io import save_figure, write_text_atomic
from gradsurrogate.runs import RunStore, non_default_fields

from .exp1d import Config1D, summary_rows
from .experiment import Plan, curves_path, load_curves, load_history, record_key
from .figures import figure_1d, figure_2d, figure_100d
from .highdim import Config100D
from .plane import Config2D

__all__ = ["figure_name", "table_1d", "table_2d", "table_100d", "write_report"]


def _num(x: float | None) -> str:
    """4 decimals, or 4 significant digits beyond 1e4; ``nan`` for a stored null."""
    x = math.nan if x is None else float(x)
    return f"{x:.4f}" if abs(x) < 1e4 or not math.isfinite(x) else f"{x:.3e}"


def _fmt(vals: list[float | None]) -> str:
    """``mean ± std`` over seeds (one value: itself)."""
    xs = [math.nan if v is None else float(v) for v in vals]
    if len(xs) == 1:
        return _num(xs[0])
    return f"{_num(statistics.mean(xs))} ± {_num(statistics.stdev(xs))}"


def _med(vals: list[float | None]) -> str:
    """``median (mean ± std)`` over seeds (one value: itself)."""
    xs = [math.nan if v is None else float(v) for v in vals]
    if len(xs) == 1:
        return _num(xs[0])
    return f"{_num(statistics.median(xs))} ({_fmt(xs)})"


def _worst(vals: list[float | None], pick: Any) -> float:
    xs = [math.nan if v is None else float(v) for v in vals]
    return math.nan if any(math.isnan(x) for x in xs) else pick(xs)


def table_1d(records: list[dict[str, Any]]) -> str:
    """Markdown table over seeds (finished records of one target and setting)."""
    lines = ["| target | model | train L1, median (mean ± std) | test MAE, median (mean ± std) | "
             "test max err | min slope | max abs slope |",
             "|---|---|---|---|---|---|---|"]
    rows = [summary_rows(r) for r in records]
    for k in range(2):
        per = [rs[k] for rs in rows]
        lines.append(
            f"| {per[0]['target']} | {per[0]['model']} ({per[0]['structure']}) | "
            f"{_med([p['train L1'] for p in per])} | {_med([p['test MAE'] for p in per])} | "
            f"{_fmt([p['test max'] for p in per])} | "
            f"{_worst([p['min slope'] for p in per], min):.2e} | "
            f"{_num(_worst([p['max |slope|'] for p in per], max))} |"
        )
    return "\n".join(lines)


def table_2d(record: dict[str, Any]) -> str:
    """Markdown table of the 2-d models that finished training."""
    lines = ["| task/structure | train L1 | test MAE | min det J | path gap mean / max | "
             "inverse MAE (ODE / +refine) | round trip max (ODE / +refine) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in record["models"].items():
        if "test_mae" not in r:
            continue
        def f(key: str, spec: str, r: dict[str, Any] = r) -> str:
            return format(math.nan if r.get(key) is None else r[key], spec)

        inv = (f"{f('inv_true_mae', '.4f')} / {f('inv_true_mae_refined', '.4f')}"
               if "inv_true_mae" in r else "–")
        rt = (f"{f('round_trip_max', '.2e')} / {f('round_trip_max_refined', '.2e')}"
              if "round_trip_max" in r else "–")
        det = f("min_det", ".3f") if "min_det" in r else "–"
        lines.append(f"| {name} | {f('train_l1', '.4f')} | {f('test_mae', '.4f')} | {det} | "
                     f"{f('gap_mean', '.2e')} / {f('gap_max', '.2e')} | {inv} | {rt} |")
    return "\n".join(lines)


def _settings(cfg: Config1D | Config2D) -> dict[str, Any]:
    """Non-default fields of a section's config, without the per-run ones."""
    return {k: v for k, v in non_default_fields(cfg).items() if k not in ("target", "seed")}


def figure_name(experiment: str, cfg: Config1D | Config2D, figure_seed: int | None) -> str:
    """``jacnet_<experiment>[_<field>-<value>...][_seed-<k>].png``; the run key instead when
    that is long or not a plain file name."""
    parts = [f"{k}-{v}" for k, v in _settings(cfg).items()]
    if figure_seed is not None and figure_seed != Plan().figure_seed:
        parts.append(f"seed-{figure_seed}")
    name = "_".join([f"jacnet_{experiment}", *parts])
    if len(name) > 80 or not re.fullmatch(r"[A-Za-z0-9._=-]+", name):
        name = f"jacnet_{record_key(cfg)}"
    return name + ".png"


def _diverged_line(rec: dict[str, Any], label: str) -> str:
    return (f"- {label} diverged: {rec.get('diverged_model')} model, non-finite loss at step "
            f"{rec.get('diverged_step')}")


def _figure(out: Path, experiment: str, plan: Plan, records: dict[str, dict[str, Any]]) -> str:
    cfg = plan.figure_run(experiment)
    key = record_key(cfg)
    rec = records[key]
    seed = None if experiment == "2d" else plan.figure_seed
    label = "2-d" if seed is None else f"seed {seed}"
    if rec["diverged"]:
        return f"figure ({label}): none, the run diverged"
    name = figure_name(experiment, cfg, seed)
    path, src = out / "figures" / name, curves_path(out, key)
    line = f"figure ({label}): ![{experiment}](figures/{name})"
    if path.exists() and src.exists() and path.stat().st_mtime_ns > src.stat().st_mtime_ns:
        return line  # drawn from these very curves already
    curves = load_curves(out, key)
    if curves is None:
        return f"figure ({label}): none, {src} is missing or unreadable"
    fig = figure_2d(rec, curves) if experiment == "2d" else figure_1d(rec, curves)
    save_figure(fig, path, dpi=80)
    return line


def _section_1d(out: Path, target: str, plan: Plan, records: dict[str, dict[str, Any]]) -> str:
    recs = [records[record_key(c)] for c in plan.table_runs(target)]
    base = plan.base_1d
    head = f"## {target} ({base.method}, seeds 0..{plan.seeds - 1})\n"
    settings = _settings(base)
    if settings:
        head += "\nsettings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + "\n"
    ok = [r for r in recs if not r["diverged"]]
    body = [table_1d(ok) if ok else "every seed diverged"]
    body += [_diverged_line(r, f"seed {r['config']['seed']}") for r in recs if r["diverged"]]
    if ok:
        per_seed = {role: [round(r[role]["test_mae"], 3) for r in ok]
                    for role in ("structured", "baseline")}
        body.append(f"\ntest MAE per seed: {per_seed}")
        inv = [r["structured"] for r in ok if "inverse_mae" in r["structured"]]
        if inv:
            body.append(f"learned inverse vs log: mean |x̂(y) - log y| = "
                        f"{_med([s['inverse_mae'] for s in inv])}; round trip max on the test "
                        f"points {_med([s['round_trip_max'] for s in inv])}, on the training "
                        f"points {_med([s.get('round_trip_train_max') for s in inv])}")
        pinv = [r["baseline"] for r in ok if "inverse_mae" in r["baseline"]]
        if pinv:
            body.append(f"pseudo-inverse of the unconstrained model (not a true inverse) vs log: "
                        f"mean |x̂(y) - log y| = {_med([b['inverse_mae'] for b in pinv])}")
    body.append(_figure(out, target, plan, records))
    return head + "\n" + "\n".join(body) + "\n"


_COLS_100D = (("train L1", "train_l1"), ("test MAE", "test_mae"), ("relative", "test_rel"),
              ("min eig (J+Jᵀ)/2", "min_sym_eig"), ("det J > 0", "det_pos_frac"),
              ("cond J, median", "cond_median"), ("cond J, max", "cond_max"),
              ("round trip max ‖x̂−x‖, ODE", "round_trip_max"),
              ("+refine", "round_trip_max_refined"),
              ("residual max ‖ŷ(x̂)−ŷ‖, ODE", "residual_max"),
              ("+refine", "residual_max_refined"),
              ("inverse of true y vs x", "inverse_mae"), ("train s", "train_time"))


def table_100d(records: list[dict[str, Any]]) -> str:
    """Markdown table of the 100-d models over finished seeds: median (mean ± std)."""
    names = list(records[0]["models"])
    lines = ["| model | " + " | ".join(c for c, _ in _COLS_100D) + " |",
             "|---|" + "---|" * len(_COLS_100D)]
    for name in names:
        ms = [r["models"][name] for r in records if "test_mae" in r["models"].get(name, {})]
        if not ms:
            continue
        cells = [_med([m.get(k) for m in ms]) if k in ms[0] else "–" for _, k in _COLS_100D]
        label = name + ("" if ms[0].get("inverse_exact", True) else " (pseudo-inverse)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ref = [r["reference"] for r in records]
    lines.append(f"\nreference points: affine least-squares fit of the training set, test "
                 f"MAE {_med([x['affine_test_mae'] for x in ref])}; the constant y0, "
                 f"{_med([x['anchor_test_mae'] for x in ref])}")
    return "\n".join(lines)


def _section_100d(out: Path, plan: Plan, records: dict[str, dict[str, Any]]) -> str:
    cfgs = plan.table_runs("100d")
    recs = [records[record_key(c)] for c in cfgs]
    base = plan.config_100d
    head = (f"## 100-d ({base.method}, seeds 0..{plan.seeds_100d - 1})\n\nsettings: "
            + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(base).items()
                        if k != "seed") + "\n")
    ok = [r for r in recs if all("test_mae" in m for m in r["models"].values())]
    body = [table_100d(ok) if ok else "no seed finished every model"]
    body += [_diverged_line(r, f"seed {r['config']['seed']}") for r in recs if r["diverged"]]
    keys = [record_key(c) for c in cfgs]
    history = {k: load_history(RunStore(out), k) for k in keys}
    name = f"jacnet_100d_{run_id_of(base)}.png"
    save_figure(figure_100d(history), out / "figures" / name, dpi=80)
    body.append(f"\nper-epoch logs (OUT/history.jsonl): ![100d](figures/{name})")
    return head + "\n" + "\n".join(body) + "\n"


def run_id_of(cfg: Config100D) -> str:
    """Short name of a 100-d setting (seed left out) for its figure file."""
    return record_key(dataclasses.replace(cfg, seed=0)).split("-", 1)[1]


def _section_2d(out: Path, plan: Plan, records: dict[str, dict[str, Any]]) -> str:
    cfg = plan.config_2d
    rec = records[record_key(cfg)]
    head = f"## 2-d ({cfg.method})\n"
    settings = _settings(cfg)
    if settings:
        head += "\nsettings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + "\n"
    body = [table_2d(rec)]
    if rec["diverged"]:
        body.append(_diverged_line(rec, "the 2-d run"))
    body.append("\n" + _figure(out, "2d", plan, records))
    return head + "\n" + "\n".join(body) + "\n"


def write_report(out: str | Path, plans: Iterable[Plan],
                 records: dict[str, dict[str, Any]]) -> str:
    """Write ``out/report.md`` (and its figures) for ``plans`` from ``records`` (by
    ``record_key``, as ``run_plans`` returns them); returns the Markdown. Identical sections
    (same experiment, settings and seeds) appear once."""
    out = Path(out)
    sections, seen = [], set()
    for plan in plans:
        for name in plan.experiments:
            ident = ((name, dataclasses.astuple(plan.config_2d)) if name == "2d" else
                     (name, dataclasses.astuple(plan.config_100d), plan.seeds_100d)
                     if name == "100d" else
                     (name, dataclasses.astuple(plan.base_1d), plan.seeds, plan.figure_seed))
            if ident in seen:
                continue
            seen.add(ident)
            if name == "2d":
                sections.append(_section_2d(out, plan, records))
            elif name == "100d":
                sections.append(_section_100d(out, plan, records))
            else:
                sections.append(_section_1d(out, name, plan, records))
    text = "# JacNet report\n\n" + "\n".join(sections)
    write_text_atomic(out / "report.md", text)
    return text
