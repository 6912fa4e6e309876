"""Markdown summary and PNG figures of a destroy-Jacobian results directory (XOR and the other
tasks of the benchmark; records without a ``task`` in their config are ``xor``).

``write_report(DIR)`` reads ``DIR/results.jsonl`` (and the curves of a few runs) and writes
``DIR/report.md``, ``DIR/summary.json`` (one row per cell: mean, std, 95% CI, n, unstable; what
:mod:`gradsurrogate.xor.compare` checks a re-run against) and ``DIR/figures/``: per task
``acc_vs_p[_TASK].png`` (final test accuracy vs p per target and mode, mean with 95% CI error
bars, one row per depth) and ``summary_TASK.png`` (the headline cells and the feedback family),
plus ``curves.png`` and ``boundaries.png`` (a few configs of one task). Cells are means over
seeds ± the half-width of the Student-t 95% CI (:mod:`gradsurrogate.stats`); † marks an unstable
cell (seed std > :data:`gradsurrogate.stats.UNSTABLE_STD`). Per task the Markdown holds the key
table, the verdicts on the reference's observations and the feedback ranking
(:mod:`.headline`), then one table per depth and the list of every configuration.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..backward import TARGETS, BackwardSpec
from ..io import write_text_atomic
from ..stats import UNSTABLE_STD, cell_stats
from .config import SUB_SEEDS
from .figures import plot_acc_vs_p, plot_boundaries, plot_curves, showcase
from .headline import chance_of, headline_lines, key_table_lines, label, plot_summary
from .results import environment, read_curves, read_results

__all__ = ["FIGURES", "describe_spec", "figure_names", "report_tables", "summarise",
           "summary_rows", "write_report"]

#: the figures :func:`write_report` draws under ``DIR/figures`` for an XOR-only folder
FIGURES = ("acc_vs_p.png", "summary_xor.png", "curves.png", "boundaries.png")

SEED_FIELDS = ("seed", *SUB_SEEDS)
TARGET_ORDER = ("exact", *TARGETS, "all")
DEFAULT_TASK = "xor"
XOR_ONLY = ("sigma", "label_noise")  #: settings of the XOR data only
MAX_HEADLINE_GROUPS = 8  #: most setting combinations that get their own headline table


def _published(task: str) -> str:
    """The task's published reference number (from the task registry, when it has one)."""
    try:
        from ..tasks import get_task

        return str(getattr(get_task(task), "published", "") or "")
    except (ImportError, ValueError, KeyError):
        return ""


def describe_spec(spec: str) -> tuple[str, str, float | None]:
    """(target, mode name, parameter) of a spec: target is one of the targets, ``"all"`` (every
    target with the same mode), ``"exact"``, or the spec string itself for other mixes (and for
    specs this version cannot parse, with mode = the spec)."""
    try:
        parsed = BackwardSpec.parse(spec).modes()
    except (ValueError, KeyError, TypeError):
        return spec, spec, None
    modes = {t: str(m) for t, m in parsed.items() if str(m) != "exact"}
    if not modes:
        return "exact", "exact", None
    distinct = set(modes.values())
    if len(modes) == 1:
        target = next(iter(modes))
    elif len(modes) == len(TARGETS) and len(distinct) == 1:
        target = "all"
    else:
        return spec, "mixed", None
    name, _, arg = next(iter(distinct)).partition(":")
    try:
        return target, name, float(arg)
    except ValueError:
        return target, f"{name}:{arg}" if arg else name, None


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _mean(xs: Sequence[float | None]) -> float:
    vals = [x for x in xs if x is not None]
    return statistics.fmean(vals) if vals else math.nan


def task_of(record_or_config: dict[str, Any]) -> str:
    """The task of a record (or of its config): ``config["task"]``, ``"xor"`` when absent."""
    cfg = record_or_config.get("config", record_or_config)
    return str(cfg.get("task") or DEFAULT_TASK)


def summarise(records: Sequence[dict[str, Any]], max_std: float = UNSTABLE_STD
              ) -> list[dict[str, Any]]:
    """One row per config up to the seeds: final test accuracy over seeds as mean, sample std,
    95% CI (``acc_hw``, ``acc_low``, ``acc_high``), ``unstable`` (std > ``max_std``), etc."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        cfg = dict(r["config"])
        cfg.setdefault("task", DEFAULT_TASK)
        key = tuple(sorted((k, repr(v)) for k, v in cfg.items() if k not in SEED_FIELDS))
        groups.setdefault(key, []).append({**r, "config": cfg})
    chances = {t: chance_of(t, [r for r in records if task_of(r) == t])
               for t in {task_of(r) for r in records}}
    rows = []
    for rs in groups.values():
        cfg = {k: v for k, v in rs[0]["config"].items() if k not in SEED_FIELDS}
        target, mode, p = describe_spec(str(cfg.get("spec", "exact")))
        acc = cell_stats([r.get("final_test_acc") for r in rs], max_std=max_std)
        reach = [r["steps_to_90pct_bayes"] for r in rs
                 if r.get("steps_to_90pct_bayes") is not None]
        cos = [d["cosine"] for r in rs for k, d in (r.get("grad_diagnostics") or {}).items()
               if k.startswith("hidden.0/grad_weight") and d.get("cosine") is not None]
        rows.append({"task": cfg["task"], "config": cfg, "target": target, "mode": mode, "p": p,
                     "n": len(rs), "n_acc": acc.n, "acc": acc, "acc_mean": acc.mean,
                     "acc_std": acc.std, "acc_hw": acc.half_width, "acc_low": acc.low,
                     "acc_high": acc.high, "unstable": acc.unstable,
                     "accs": [r.get("final_test_acc") for r in rs],
                     "loss_mean": _mean([r.get("final_test_loss") for r in rs]),
                     "best_mean": _mean([r.get("best_test_acc") for r in rs]),
                     "rise_mean": _mean([r.get("max_test_loss_rise") for r in rs]),
                     "diverged": sum(bool(r.get("diverged")) for r in rs),
                     "reach_median": statistics.median(reach) if reach else None,
                     "reached": len(reach), "cos_w0": _mean(cos) if cos else None,
                     "bayes": rs[0].get("bayes_acc"), "chance": chances[cfg["task"]],
                     "run_ids": [r["run_id"] for r in rs]})
    order = {t: k for k, t in enumerate(TARGET_ORDER)}
    tasks = _task_order(rows)
    rows.sort(key=lambda r: (tasks.index(r["task"]), r["config"].get("depth", 0),
                             order.get(r["target"], 99), r["mode"],
                             -1 if r["p"] is None else r["p"], str(key_varying(r))))
    return rows


def _task_order(rows: Sequence[dict[str, Any]]) -> list[str]:
    names = {r["task"] for r in rows}
    return sorted(names, key=lambda t: (t != DEFAULT_TASK, t))


def key_varying(row: dict[str, Any]) -> tuple[Any, ...]:
    cfg = row["config"]
    return tuple(repr(cfg.get(k)) for k in ("lr", "width", "sigma", "label_noise", "steps"))


def _varying(rows: Sequence[dict[str, Any]]) -> list[str]:
    skip = {"spec", "depth", "task", *TARGETS}
    keys = sorted({k for r in rows for k in r["config"]} - skip)
    return [k for k in keys if len({repr(r["config"].get(k)) for r in rows}) > 1]


def _cell(row: dict[str, Any], n_common: int | None = None) -> str:
    """``mean ± half-width`` with † (unstable), ``(k✗)`` (diverged) and ``(n=K)`` when the
    cell's seed count differs from the table's."""
    text = f"{_fmt(row['acc_mean'])} ± {_fmt(row['acc_hw'])}" + ("†" if row["unstable"] else "")
    if row["diverged"]:
        text += f" ({row['diverged']}✗)"
    if n_common is not None and row["n"] != n_common:
        text += f" (n={row['n']})"
    return text


def _env_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    """Where the runs ran (their ``env``, when recorded) and where this report was written."""
    def describe(env: dict[str, Any]) -> str:
        return (f"{env.get('processor') or env.get('machine')} ({env.get('cpu_count')} CPUs, "
                f"{env.get('system', '?')}), torch {env.get('torch')}, gradsurrogate "
                f"{env.get('gradsurrogate')}")

    ran = sorted({describe(r["env"]) for r in records if isinstance(r.get("env"), dict)})
    lines = [f"Runs made on: {'; '.join(ran)}." if ran
             else "Runs made on: not recorded in these records."]
    lines.append(f"Report written on: {describe(environment())}.")
    return lines


def _markdown(rows: list[dict[str, Any]], records: Sequence[dict[str, Any]], figures: Path,
              out_dir: Path) -> str:
    return "\n".join([*_summary_lines(rows, records, figures, out_dir),
                      *_listing(rows, figures, out_dir)])


def _summary_lines(rows: list[dict[str, Any]], records: Sequence[dict[str, Any]],
                   figures: Path | None = None, out_dir: Path | None = None) -> list[str]:
    """Title, machine, conventions, then per task: settings, the headline table and the
    per-depth accuracy tables."""
    tasks = _task_order(rows)
    title = ("# XOR destroy-Jacobian report" if tasks in ([], [DEFAULT_TASK])
             else "# Destroy-Jacobian benchmark report")
    lines = [title, "", f"{len(records)} runs; tasks: {', '.join(tasks) or '–'}.",
             *_env_lines(records), "",
             "Cells: final test accuracy, mean over seeds ± half-width of the 95% confidence "
             "interval (Student t, n − 1 degrees of freedom); † = unstable (sample std over "
             f"seeds > {UNSTABLE_STD:g}); (k✗) = k runs diverged.", ""]
    for task in tasks:
        lines += _task_lines(task, [r for r in rows if r["task"] == task], figures, out_dir)
    return lines


def _setting_groups(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """One task's rows grouped by the settings that vary among them (one group if none)."""
    varying = _varying(rows)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(repr(r["config"].get(k)) for k in varying), []).append(r)
    return groups


def _task_lines(task: str, rows: list[dict[str, Any]], figures: Path | None,
                out_dir: Path | None) -> list[str]:
    varying = _varying(rows)
    c = rows[0]["config"]
    skip = ("spec", "depth", "task", *TARGETS, *(() if task == DEFAULT_TASK else XOR_ONLY))
    fixed = ", ".join(f"{k}={c[k]}" for k in sorted(c) if k not in varying and k not in skip)
    chance = rows[0]["chance"]
    extra = [f"Bayes accuracy {rows[0]['bayes']:.4f}"] if rows[0]["bayes"] is not None else []
    if chance is not None:
        extra.append(f"chance {chance:g}")
    lines = [f"## Task: {task}", "", f"Fixed settings: {fixed}." + (
        " " + ", ".join(extra) + "." if extra else ""), ""]
    published = _published(task)
    if published:
        lines += [f"Published reference: {published}", ""]
    groups = _setting_groups(rows)
    if len(groups) > MAX_HEADLINE_GROUPS:
        lines += [f"Settings vary ({', '.join(varying)}) over {len(groups)} combinations: no "
                  "headline table (it needs a grid with fixed settings).", ""]
    for sub in list(groups.values())[:MAX_HEADLINE_GROUPS] if len(groups) > 1 else []:
        name = ", ".join(f"{k}={sub[0]['config'].get(k)}" for k in varying)
        lines += [f"#### Settings {name}", "", *key_table_lines(task, sub),
                  *headline_lines(task, sub, chance)]
    if len(groups) == 1:
        lines += [*key_table_lines(task, rows), *headline_lines(task, rows, chance)]
    if figures is not None and out_dir is not None:
        rel = figures.relative_to(out_dir) if figures.is_relative_to(out_dir) else figures
        lines += [f"![{task} summary]({rel}/summary_{task}.png)", ""]
    for depth in sorted({r["config"].get("depth", 0) for r in rows}):
        sub = [r for r in rows if r["config"].get("depth", 0) == depth and not varying]
        if not sub:
            continue
        ns = [r["n"] for r in sub]
        n_common = max(set(ns), key=ns.count)
        cols = sorted({(r["mode"], r["p"]) for r in sub if r["target"] != "exact"},
                      key=lambda m: (m[0], -1 if m[1] is None else m[1]))
        targets = list(dict.fromkeys(r["target"] for r in sub))
        lines += [f"### Depth {depth}: final test accuracy (mean ± 95% CI, n = {n_common} "
                  f"seed{'' if n_common == 1 else 's'})", ""]
        exact = [r for r in sub if r["target"] == "exact"]
        if exact:
            e = exact[0]
            lines += [f"Exact baseline: {_cell(e)} ({e['n']} seeds, std {_fmt(e['acc_std'])}, "
                      f"{e['diverged']} diverged).", ""]
        if cols:
            head = ["target"] + [m if p is None else f"{m} {p:g}" for m, p in cols]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for t in targets:
                if t == "exact":
                    continue
                cells = [t]
                for m, p in cols:
                    hit = [r for r in sub if r["target"] == t and r["mode"] == m and r["p"] == p]
                    cells.append(_cell(hit[0], n_common) if hit else "")
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def _listing(rows: list[dict[str, Any]], figures: Path, out_dir: Path) -> list[str]:
    """The table of every configuration and the figure links."""
    varying = sorted({k for t in _task_order(rows)
                      for k in _varying([r for r in rows if r["task"] == t])})
    multi = len(_task_order(rows)) > 1
    lines = ["## All configurations", "",
             "`test acc` = mean ± 95% CI half-width over seeds; `std` = sample std over seeds "
             "(min–max in `range`); `reach` = median step at which test accuracy first reached "
             "90% of the Bayes accuracy (runs that reached it); `cos W0` = mean cosine between "
             "the used and the true grad_weight of the first layer; `div` = diverged runs; "
             "`best` = mean best test accuracy during training; `rise` = mean largest rise of "
             "the test loss above its running minimum (instability).", ""]
    head = [*(["task"] if multi else []), "depth", "target", "mode", "p", *varying, "n",
            "test acc", "std", "range", "best", "test loss", "rise", "div", "reach", "cos W0"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        a = r["acc"]
        cells = [*([r["task"]] if multi else []), r["config"].get("depth", "–"), r["target"],
                 r["mode"], _fmt(r["p"], 2), *[r["config"].get(k) for k in varying], r["n"],
                 _cell(r), _fmt(a.std), f"{_fmt(a.min)}–{_fmt(a.max)}", _fmt(r["best_mean"]),
                 _fmt(r["loss_mean"]), _fmt(r["rise_mean"]), r["diverged"],
                 "–" if r["reach_median"] is None
                 else f"{r['reach_median']:g} ({r['reached']}/{r['n']})", _fmt(r["cos_w0"])]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    rel = figures.relative_to(out_dir) if figures.is_relative_to(out_dir) else figures
    lines += ["", "## Figures", ""]
    for task in _task_order(rows):
        name = figure_names(task)[0]
        lines += [f"![{task}: accuracy vs p]({rel}/{name})", ""]
    lines += [f"![curves]({rel}/curves.png)", "", f"![decision functions]({rel}/boundaries.png)",
              ""]
    return lines


def figure_names(task: str) -> tuple[str, str]:
    """(accuracy-vs-p figure, summary figure) file names of ``task`` under ``DIR/figures``."""
    return ("acc_vs_p.png" if task == DEFAULT_TASK else f"acc_vs_p_{task}.png",
            f"summary_{task}.png")


def summary_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON-ready rows of ``summary.json``: ``key`` (task / depth / label, plus any varying
    setting), ``n``, ``mean``, ``std``, ``half_width``, ``low``, ``high``, ``min``, ``max``,
    ``unstable``, ``diverged``."""
    out = []
    for task in _task_order(rows):
        sub = [r for r in rows if r["task"] == task]
        varying = _varying(sub)
        for r in sub:
            extra = "".join(f" {k}={r['config'].get(k)}" for k in varying)
            key = f"{task} / depth {r['config'].get('depth', '–')} / {label(r)}{extra}"
            a = r["acc"]
            out.append({"key": key, **{k: (None if isinstance(v, float) and math.isnan(v)
                                             else v) for k, v in a.to_dict().items()},
                        "diverged": r["diverged"]})
    return out


def report_tables(out_dir: str | Path) -> str:
    """The report's title, settings, headline and per-depth accuracy tables (Markdown)."""
    records = read_results(out_dir)
    return "\n".join(_summary_lines(summarise(records), records)).strip()


def write_report(out_dir: str | Path, figures: str | Path | None = None,
                 max_std: float = UNSTABLE_STD) -> Path:
    """Write ``out_dir/report.md``, ``out_dir/summary.json`` and the figures (per task: accuracy
    vs p and the headline summary; curves and decision functions of one task's showcase
    configs); returns the Markdown path. ``max_std``: the unstable threshold."""
    out_dir = Path(out_dir)
    records = read_results(out_dir)
    if not records:
        raise ValueError(f"no results in {out_dir / 'results.jsonl'}: run `gradsurrogate xor` "
                         "or `xor-grid` with --out pointing there first")
    figures = Path(figures) if figures is not None else out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    rows = summarise(records, max_std)
    tasks = _task_order(rows)
    for task in tasks:
        sub = [r for r in rows if r["task"] == task]
        acc_name, summary_name = figure_names(task)
        plot_acc_vs_p(sub, figures / acc_name)
        first = next(iter(_setting_groups(sub).values()))  # one setting: comparable cells
        plot_summary(task, first, sub[0]["chance"], figures / summary_name)
    show = showcase([r for r in rows if r["task"] == tasks[0]])
    curves = read_curves(out_dir, [r["run_ids"][0] for r in show], records)
    plot_curves(show, curves, figures / "curves.png")
    plot_boundaries(show, curves, figures / "boundaries.png")
    write_text_atomic(out_dir / "summary.json", json.dumps(
        {"convention": "mean ± 95% CI half-width (Student t, n-1 dof) of final_test_acc over "
                       f"seeds; unstable = sample std > {max_std:g}",
         "env": environment(), "rows": summary_rows(rows)}, indent=1, allow_nan=False) + "\n")
    return write_text_atomic(out_dir / "report.md", _markdown(rows, records, figures, out_dir))
