"""Figures of a destroy-Jacobian report (one task's rows from :func:`.report.summarise`):
accuracy vs p with 95% CI error bars, learning curves and XOR decision functions. Built as
``matplotlib.figure.Figure`` objects (no pyplot, no global backend) and saved with
:func:`gradsurrogate.io.save_figure`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..backward import TARGETS
from ..io import save_figure
from .headline import label
from .record import BOUNDARY_LIM

__all__ = ["plot_acc_vs_p", "plot_boundaries", "plot_curves", "showcase"]

TARGET_ORDER = ("exact", *TARGETS, "all")
SHOWCASE = [("exact", "exact"), ("grad_weight", "sign"), ("grad_input", "sign"),
            ("all", "flip:0.45"), ("grad_input", "flip:0.45"), ("all", "sign")]


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _subplots(nrows: int, ncols: int, figsize: tuple[float, float], **kwargs: Any):
    """A ``matplotlib.figure.Figure`` and its axes grid (no pyplot, no global backend)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=kwargs.pop("dpi", 100))
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _colours() -> list[str]:
    import matplotlib

    return matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


def _hw(row: dict[str, Any]) -> float:
    """The CI half-width of a row for error bars (0 without an interval)."""
    return row["acc_hw"] if math.isfinite(row["acc_hw"]) else 0.0


def plot_acc_vs_p(rows: list[dict[str, Any]], path: Path) -> None:
    """Final test accuracy vs p per target (columns) and depth (rows) of one task: mean with
    95% CI error bars (bands for modes without p), every seed as a dot, hollow markers for
    unstable cells."""
    depths = sorted({r["config"].get("depth", 0) for r in rows})
    targets = [t for t in TARGET_ORDER[1:] if any(r["target"] == t for r in rows)] or ["exact"]
    fig, axes = _subplots(len(depths), len(targets), figsize=(2.6 * len(targets) + 0.5,
                             2.3 * len(depths) + 0.4), squeeze=False, sharey=True, dpi=80)
    colours = _colours()
    for i, depth in enumerate(depths):
        sub = [r for r in rows if r["config"].get("depth", 0) == depth]
        for j, target in enumerate(targets):
            ax = ax0 = axes[i][j]
            for e in (r for r in sub if r["target"] == "exact"):
                ax.axhline(e["acc_mean"], color="k", lw=1, label="exact")
            if sub[0]["bayes"] is not None:
                ax.axhline(sub[0]["bayes"], color="k", ls=":", lw=1, label="Bayes")
            elif sub[0]["chance"] is not None:
                ax.axhline(sub[0]["chance"], color="k", ls=":", lw=1, label="chance")
            modes = sorted({r["mode"] for r in sub if r["target"] == target})
            for k, mode in enumerate(modes):
                pts = sorted((r for r in sub if r["target"] == target and r["mode"] == mode),
                             key=lambda r: -1 if r["p"] is None else r["p"])
                col = colours[k % len(colours)]
                if all(r["p"] is None for r in pts):
                    for r in pts:
                        ax.axhspan(r["acc_mean"] - _hw(r), r["acc_mean"] + _hw(r), color=col,
                                   alpha=0.2)
                        ax.axhline(r["acc_mean"], color=col, ls="--", lw=1.5, label=mode)
                    continue
                ps = [r["p"] for r in pts]
                ax.errorbar(ps, [r["acc_mean"] for r in pts], [_hw(r) for r in pts],
                            color=col, marker="o", ms=3, capsize=2, label=mode)
                for r in pts:
                    if r["unstable"]:
                        ax.scatter([r["p"]], [r["acc_mean"]], s=40, facecolors="none",
                                   edgecolors=col, lw=1)
                    accs = [a for a in r["accs"] if a is not None]
                    ax.scatter([r["p"]] * len(accs), accs, color=col, s=4, alpha=0.4)
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


def showcase(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    picked = []
    for depth in sorted({r["config"].get("depth", 0) for r in rows}):
        for target, mode in SHOWCASE:
            name, _, arg = mode.partition(":")
            for r in rows:
                if (r["config"].get("depth", 0) == depth and r["target"] == target
                        and r["mode"] == name and (r["p"] == (float(arg) if arg else None))):
                    picked.append(r)
                    break
    return picked or rows[:4]


def plot_curves(rows: list[dict[str, Any]], curves: dict[str, Any], path: Path) -> None:
    """Test loss and accuracy vs step for the showcase configs (first seed)."""
    depths = sorted({r["config"].get("depth", 0) for r in rows})
    fig, axes = _subplots(2, len(depths), figsize=(4.2 * len(depths), 5), squeeze=False,
                             dpi=80)
    for j, depth in enumerate(depths):
        for r in (r for r in rows if r["config"].get("depth", 0) == depth):
            c = curves.get(r["run_ids"][0])
            if c is None:
                continue
            name = label(r)
            axes[0][j].plot(c["step"], [math.nan if v is None else v for v in c["test_loss"]],
                            lw=1, label=name)
            axes[1][j].plot(c["step"], c["test_acc"], lw=1, label=name)
        axes[0][j].set_title(f"depth {depth}", fontsize=9)
        axes[0][j].set_ylabel("test loss", fontsize=8)
        axes[0][j].set_yscale("log")
        axes[1][j].set_ylabel("test acc", fontsize=8)
        axes[1][j].set_xlabel("step", fontsize=8)
        axes[1][j].set_ylim(0.0 if rows[0]["chance"] is None else
                            max(0.0, rows[0]["chance"] - 0.2), 1.0)
    if axes[1][0].get_legend_handles_labels()[0]:
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
        ax.set_title(f"d{r['config'].get('depth', '–')} {label(r)}\nacc "
                     f"{_fmt(r['accs'][0])}", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
