"""Markdown summary and PNG figures of an XOR results directory.

``write_report(DIR)`` reads ``DIR/results.jsonl`` (and the curves of a few runs) and writes
``DIR/report.md`` plus ``DIR/figures/``: ``acc_vs_p.png`` (final test accuracy vs p for every
target and mode, mean ± std over seeds, one row per depth), ``curves.png`` (test loss/accuracy of
a few configs) and ``boundaries.png`` (their decision functions).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..backward import TARGETS, BackwardSpec
from ..io import save_figure, write_text_atomic
from .config import SUB_SEEDS
from .record import BOUNDARY_LIM
from .results import read_curves, read_results

__all__ = ["FIGURES", "describe_spec", "report_tables", "summarise", "write_report"]

#: the figures :func:`write_report` draws, under ``DIR/figures``
FIGURES = ("acc_vs_p.png", "curves.png", "boundaries.png")

SEED_FIELDS = ("seed", *SUB_SEEDS)
TARGET_ORDER = ("exact", *TARGETS, "all")
SHOWCASE = [("exact", "exact"), ("grad_weight", "sign"), ("grad_input", "sign"),
            ("all", "flip:0.45"), ("grad_input", "flip:0.45"), ("all", "sign")]


def describe_spec(spec: str) -> tuple[str, str, float | None]:
    """(target, mode name, parameter) of a spec: target is one of the targets, ``"all"`` (every
    target with the same mode), ``"exact"``, or the spec string itself for other mixes."""
    modes = {t: str(m) for t, m in BackwardSpec.parse(spec).modes().items() if str(m) != "exact"}
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


def _stats(xs: Sequence[float | None]) -> tuple[float, float]:
    vals = [x for x in xs if x is not None]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.pstdev(vals) if len(vals) > 1 else 0.0


def summarise(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per config up to the seeds: mean/std of final test accuracy over seeds etc."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        cfg = r["config"]
        key = tuple(sorted((k, v) for k, v in cfg.items() if k not in SEED_FIELDS))
        groups.setdefault(key, []).append(r)
    rows = []
    for key, rs in groups.items():
        cfg = dict(key)
        target, mode, p = describe_spec(cfg["spec"])
        acc_mean, acc_std = _stats([r["final_test_acc"] for r in rs])
        reach = [r["steps_to_90pct_bayes"] for r in rs if r["steps_to_90pct_bayes"] is not None]
        cos = [d["cosine"] for r in rs for k, d in r.get("grad_diagnostics", {}).items()
               if k.startswith("hidden.0/grad_weight") and d.get("cosine") is not None]
        rows.append({"config": cfg, "target": target, "mode": mode, "p": p, "n": len(rs),
                     "acc_mean": acc_mean, "acc_std": acc_std,
                     "accs": [r["final_test_acc"] for r in rs],
                     "loss_mean": _stats([r["final_test_loss"] for r in rs])[0],
                     "best_mean": _stats([r.get("best_test_acc") for r in rs])[0],
                     "rise_mean": _stats([r.get("max_test_loss_rise") for r in rs])[0],
                     "diverged": sum(bool(r["diverged"]) for r in rs),
                     "reach_median": statistics.median(reach) if reach else None,
                     "reached": len(reach), "cos_w0": _stats(cos)[0] if cos else None,
                     "bayes": rs[0]["bayes_acc"], "run_ids": [r["run_id"] for r in rs]})
    order = {t: k for k, t in enumerate(TARGET_ORDER)}
    rows.sort(key=lambda r: (r["config"]["depth"], order.get(r["target"], 99), r["mode"],
                             -1 if r["p"] is None else r["p"], str(key_varying(r))))
    return rows


def key_varying(row: dict[str, Any]) -> tuple[Any, ...]:
    cfg = row["config"]
    return tuple(cfg[k] for k in ("lr", "width", "sigma", "label_noise", "steps"))


def _varying(rows: Sequence[dict[str, Any]]) -> list[str]:
    skip = {"spec", "depth", *TARGETS}
    keys = sorted({k for r in rows for k in r["config"]} - skip)
    return [k for k in keys if len({repr(r["config"].get(k)) for r in rows}) > 1]


def _markdown(rows: list[dict[str, Any]], n_runs: int, figures: Path, out_dir: Path) -> str:
    return "\n".join([*_summary_lines(rows, n_runs), *_listing(rows, figures, out_dir)])


def _summary_lines(rows: list[dict[str, Any]], n_runs: int) -> list[str]:
    """Title, fixed settings and the per-depth accuracy tables."""
    varying = _varying(rows)
    lines = ["# XOR destroy-Jacobian report", ""]
    if rows:
        c = rows[0]["config"]
        lines += [f"{n_runs} runs; fixed settings: " + ", ".join(
            f"{k}={c[k]}" for k in ("width", "steps", "lr", "optimizer", "batch_size", "n_train",
                                    "n_test", "sigma", "label_noise")
            if k not in varying) + f". Bayes accuracy {rows[0]['bayes']:.4f}.", ""]
    depths = sorted({r["config"]["depth"] for r in rows})
    for depth in depths:
        sub = [r for r in rows if r["config"]["depth"] == depth and not varying]
        if not sub:
            continue
        cols = sorted({(r["mode"], r["p"]) for r in sub if r["target"] not in ("exact",)},
                      key=lambda m: (m[0], -1 if m[1] is None else m[1]))
        targets = [t for t in TARGET_ORDER if any(r["target"] == t for r in sub)]
        lines += [f"## Depth {depth}: final test accuracy (mean ± std over seeds)", ""]
        exact = [r for r in sub if r["target"] == "exact"]
        if exact:
            e = exact[0]
            lines += [f"Exact baseline: {_fmt(e['acc_mean'])} ± {_fmt(e['acc_std'])} "
                      f"({e['n']} seeds, {e['diverged']} diverged).", ""]
        if cols:
            head = ["target"] + [m if p is None else f"{m} {p:g}" for m, p in cols]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for t in targets:
                if t == "exact":
                    continue
                cells = [t]
                for m, p in cols:
                    hit = [r for r in sub if r["target"] == t and r["mode"] == m and r["p"] == p]
                    cells.append(f"{_fmt(hit[0]['acc_mean'])} ± {_fmt(hit[0]['acc_std'], 2)}"
                                 + (f" ({hit[0]['diverged']}✗)" if hit[0]["diverged"] else "")
                                 if hit else "")
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def _listing(rows: list[dict[str, Any]], figures: Path, out_dir: Path) -> list[str]:
    """The table of every configuration and the figure links."""
    varying = _varying(rows)
    lines = ["## All configurations", "",
              "`reach` = median step at which test accuracy first reached 90% of the Bayes "
              "accuracy (runs that reached it); `cos W0` = mean cosine between the used and the "
              "true grad_weight of the first layer; `div` = diverged runs; `best` = mean best "
              "test accuracy during training; `rise` = mean largest rise of the test loss above "
              "its running minimum (instability).", ""]
    head = ["depth", "target", "mode", "p", *varying, "n", "test acc", "best", "test loss",
            "rise", "div", "reach", "cos W0"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["config"]["depth"], r["target"], r["mode"], _fmt(r["p"], 2),
                 *[r["config"].get(k) for k in varying], r["n"],
                 f"{_fmt(r['acc_mean'])} ± {_fmt(r['acc_std'])}", _fmt(r["best_mean"]),
                 _fmt(r["loss_mean"]), _fmt(r["rise_mean"]), r["diverged"],
                 "–" if r["reach_median"] is None
                 else f"{r['reach_median']:g} ({r['reached']}/{r['n']})", _fmt(r["cos_w0"])]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    rel = figures.relative_to(out_dir) if figures.is_relative_to(out_dir) else figures
    lines += ["", "## Figures", "", f"![accuracy vs p]({rel}/acc_vs_p.png)", "",
              f"![curves]({rel}/curves.png)", "", f"![decision functions]({rel}/boundaries.png)",
              ""]
    return lines


def report_tables(out_dir: str | Path) -> str:
    """The report's title, settings and per-depth accuracy tables (Markdown) of a folder."""
    records = read_results(out_dir)
    return "\n".join(_summary_lines(summarise(records), len(records))).strip()


def _label(row: dict[str, Any]) -> str:
    """``exact`` or ``target mode[:p]``."""
    if row["target"] == "exact":
        return "exact"
    return f"{row['target']} {row['mode']}" + ("" if row["p"] is None else f":{row['p']:g}")


def _subplots(nrows: int, ncols: int, figsize: tuple[float, float], **kwargs: Any):
    """A ``matplotlib.figure.Figure`` and its axes grid (no pyplot, no global backend)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=kwargs.pop("dpi", 100))
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _colours() -> list[str]:
    import matplotlib

    return matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


def plot_acc_vs_p(rows: list[dict[str, Any]], path: Path) -> None:
    """Final test accuracy vs p per target (columns) and depth (rows), mean ± std over seeds."""
    depths = sorted({r["config"]["depth"] for r in rows})
    targets = [t for t in TARGET_ORDER[1:] if any(r["target"] == t for r in rows)] or ["exact"]
    fig, axes = _subplots(len(depths), len(targets), figsize=(2.6 * len(targets) + 0.5,
                             2.3 * len(depths) + 0.4), squeeze=False, sharey=True, dpi=80)
    colours = _colours()
    for i, depth in enumerate(depths):
        sub = [r for r in rows if r["config"]["depth"] == depth]
        for j, target in enumerate(targets):
            ax = ax0 = axes[i][j]
            for e in (r for r in sub if r["target"] == "exact"):
                ax.axhline(e["acc_mean"], color="k", lw=1, label="exact")
            ax.axhline(sub[0]["bayes"], color="k", ls=":", lw=1, label="Bayes")
            modes = sorted({r["mode"] for r in sub if r["target"] == target})
            for k, mode in enumerate(modes):
                pts = sorted((r for r in sub if r["target"] == target and r["mode"] == mode),
                             key=lambda r: -1 if r["p"] is None else r["p"])
                col = colours[k % len(colours)]
                if all(r["p"] is None for r in pts):
                    for r in pts:
                        ax.axhspan(r["acc_mean"] - r["acc_std"], r["acc_mean"] + r["acc_std"],
                                   color=col, alpha=0.2)
                        ax.axhline(r["acc_mean"], color=col, ls="--", lw=1.5, label=mode)
                    continue
                ps = [r["p"] for r in pts]
                ax.errorbar(ps, [r["acc_mean"] for r in pts], [r["acc_std"] for r in pts],
                            color=col, marker="o", ms=3, capsize=2, label=mode)
                for r in pts:
                    ax.scatter([r["p"]] * len(r["accs"]), r["accs"], color=col, s=4, alpha=0.4)
            ax0.set_ylim(0.0, 1.0)
            if i == 0:
                ax.set_title(target, fontsize=9)
            if i == len(depths) - 1:
                ax.set_xlabel("p (flip prob. / blend amount)", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"depth {depth}\nfinal test acc", fontsize=8)
            ax.tick_params(labelsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    fig.legend(uniq.values(), uniq.keys(), loc="lower center", ncol=len(uniq), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(fig, path)


def _showcase(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    picked = []
    for depth in sorted({r["config"]["depth"] for r in rows}):
        for target, mode in SHOWCASE:
            name, _, arg = mode.partition(":")
            for r in rows:
                if (r["config"]["depth"] == depth and r["target"] == target
                        and r["mode"] == name and (r["p"] == (float(arg) if arg else None))):
                    picked.append(r)
                    break
    return picked or rows[:4]


def plot_curves(rows: list[dict[str, Any]], curves: dict[str, Any], path: Path) -> None:
    """Test loss and accuracy vs step for the showcase configs (first seed)."""
    depths = sorted({r["config"]["depth"] for r in rows})
    fig, axes = _subplots(2, len(depths), figsize=(4.2 * len(depths), 5), squeeze=False,
                             dpi=80)
    for j, depth in enumerate(depths):
        for r in (r for r in rows if r["config"]["depth"] == depth):
            c = curves.get(r["run_ids"][0])
            if c is None:
                continue
            label = _label(r)
            axes[0][j].plot(c["step"], [math.nan if v is None else v for v in c["test_loss"]],
                            lw=1, label=label)
            axes[1][j].plot(c["step"], c["test_acc"], lw=1, label=label)
        axes[0][j].set_title(f"depth {depth}", fontsize=9)
        axes[0][j].set_ylabel("test loss", fontsize=8)
        axes[0][j].set_yscale("log")
        axes[1][j].set_ylabel("test acc", fontsize=8)
        axes[1][j].set_xlabel("step", fontsize=8)
        axes[1][j].set_ylim(0.3, 1.0)
    axes[1][0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def plot_boundaries(rows: list[dict[str, Any]], curves: dict[str, Any], path: Path) -> None:
    """P(class 1) on [-L, L]² for the showcase configs (first seed), Bayes rule dashed."""
    n = len(rows)
    cols = min(n, 6)
    nrows = -(-n // cols)
    fig, axes = _subplots(nrows, cols, figsize=(2.1 * cols, 2.2 * nrows), squeeze=False,
                             dpi=80)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        r = rows[k]
        c = curves.get(r["run_ids"][0])
        if c is None or not c.get("boundary"):
            continue
        m = round(math.sqrt(len(c["boundary"])))
        grid = [[math.nan if v is None else v for v in c["boundary"][i * m:(i + 1) * m]]
                for i in range(m)]
        ax.imshow(grid, origin="lower", extent=(-BOUNDARY_LIM, BOUNDARY_LIM, -BOUNDARY_LIM,
                  BOUNDARY_LIM), cmap="coolwarm", vmin=0, vmax=1)
        ax.axhline(0, color="k", ls="--", lw=0.6)
        ax.axvline(0, color="k", ls="--", lw=0.6)
        ax.set_title(f"d{r['config']['depth']} {_label(r)}\nacc "
                     f"{_fmt(r['accs'][0])}", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def write_report(out_dir: str | Path, figures: str | Path | None = None) -> Path:
    """Write ``out_dir/report.md`` and the figures; returns the Markdown path."""
    out_dir = Path(out_dir)
    records = read_results(out_dir)
    if not records:
        raise ValueError(f"no results in {out_dir / 'results.jsonl'}: run `gradsurrogate xor` "
                         "or `xor-grid` with --out pointing there first")
    figures = Path(figures) if figures is not None else out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    rows = summarise(records)
    show = _showcase(rows)
    curves = read_curves(out_dir, [r["run_ids"][0] for r in show], records)
    plot_acc_vs_p(rows, figures / "acc_vs_p.png")
    plot_curves(show, curves, figures / "curves.png")
    plot_boundaries(show, curves, figures / "boundaries.png")
    return write_text_atomic(out_dir / "report.md", _markdown(rows, len(records), figures, out_dir))
