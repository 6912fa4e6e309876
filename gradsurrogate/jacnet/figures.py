"""Paper-like figures of the JacNet experiments, built from a stored record and its curves
(``experiment.split_result``) as :class:`matplotlib.figure.Figure` objects (no global backend;
save with :func:`gradsurrogate.io.save_figure`)."""

from __future__ import annotations

import math
from typing import Any

from matplotlib.figure import Figure

__all__ = ["figure_1d", "figure_2d", "figure_100d"]


def _loss_panel(ax: Any, record: dict[str, Any], curves: dict[str, Any], method: str) -> None:
    for role, color in (("structured", "C0"), ("baseline", "C3")):
        ax.semilogy(curves[role]["loss"], color=color,
                    label=f"{role} ({record[role]['structure']}) loss")
    s = curves["structured"]
    ax.semilogy(s["atol"], "k--", lw=1, label="schedule tolerance (atol)")
    if method == "gauss-legendre":
        ax2 = ax.twinx()
        ax2.step(range(len(s["n"])), s["n"], "g:", where="post")
        ax2.set_ylabel("Gauss–Legendre nodes", color="g")
    ax.set_xlabel("training step")
    ax.set_title("training L1 loss and tolerance schedule")
    ax.legend(fontsize=7)


def figure_1d(record: dict[str, Any], curves: dict[str, Any]) -> Figure:
    """Fit panel (target, init, trained, baseline), inverse or derivative panel, loss panel."""
    cfg, s, b = record["config"], curves["structured"], curves["baseline"]
    grid, name = curves["grid"], cfg["target"]
    s_name = record["structured"]["structure"]
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    ax = axes[0]
    ax.plot(grid, curves["target"], "k", lw=2, label=f"target {name}(x)")
    ax.plot(grid, s["init"], "C0:", label=f"{s_name} at init")
    ax.plot(grid, s["fit"], "C0", label=f"{s_name} trained")
    ax.plot(grid, b["fit"], "C3--", label="unconstrained trained")
    ys = [abs(x) if name == "abs" else math.exp(x) for x in curves["x_train"]]
    ax.plot(curves["x_train"], ys, "ko", ms=6, mfc="none", label="training points")
    (a, c), (lo, hi) = cfg["train_range"], cfg["test_range"]
    ax.axvspan(a, c, color="0.93")
    ax.set_title(f"learning {name}(x): {cfg['n_train']} points in [{a:g}, {c:g}], "
                 f"tested on [{lo:g}, {hi:g}]")
    ax.legend(fontsize=7)
    ax = axes[1]
    if s.get("inverse") is not None:
        yv = s["inverse_y"]
        ax.plot(yv, [math.log(v) for v in yv], "k", lw=2, label="true inverse log(y)")
        ax.plot(yv, s["inverse"], "C0", label=f"{s_name}: exact inverse (ODE in y)")
        if b.get("inverse") is not None:  # the reference's pinv(J + 1e-5 I) path
            ax.plot(b["inverse_y"], b["inverse"], "C3--", lw=1,
                    label="unconstrained: pseudo-inverse (not a true inverse)")
        ax.set_xlabel("y")
        ax.set_ylim(min(grid) - 0.5, max(grid) + 0.5)
        ax.set_title(f"inverse: mean |x̂(y) - log y| = {record['structured']['inverse_mae']:.3f}")
    else:
        ax.plot(grid, s["jacobian"], "C0", label=f"{s_name} J(x)")
        ax.plot(grid, b["jacobian"], "C3--", label="unconstrained J(x)")
        ax.axhline(1, color="k", lw=0.8)
        ax.axhline(-1, color="k", lw=0.8)
        ax.set_title("learned derivative; ±1 is the Lipschitz bound")
    ax.legend(fontsize=7)
    _loss_panel(axes[2], record, curves, cfg["method"])
    fig.tight_layout()
    return fig


def figure_2d(record: dict[str, Any], curves: dict[str, Any]) -> Figure:
    """Warped grid (true vs orientation JacNet), path gaps per model, training losses."""
    fig = Figure(figsize=(15, 4.5))
    axes = fig.subplots(1, 3)
    ax = axes[0]
    for i, c in enumerate(curves["grid_true"] or []):
        ax.plot([p[0] for p in c], [p[1] for p in c], color="0.6", lw=2,
                label="true f" if i == 0 else None)
    for i, c in enumerate(curves["grid_model"] or []):
        ax.plot([p[0] for p in c], [p[1] for p in c], color="C0", lw=0.8,
                label="orientation JacNet" if i == 0 else None)
    ax.set_aspect("equal")
    box = record["config"]["box"]
    ax.set_title(f"image of the grid of [-{box:g}, {box:g}]²")
    ax.legend(fontsize=7)
    ax = axes[1]
    names = [n for n, m in record["models"].items() if "gap_mean" in m]
    gaps = [max(record["models"][n]["gap_mean"], 1e-17) for n in names]
    ax.bar(range(len(names)), gaps, color=["C3", "C0", "C2", "C3", "C1"][: len(names)])
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=7)
    ax.set_title("path dependence: mean |y_straight - y_bent|")
    ax = axes[2]
    for n, c in curves["models"].items():
        ax.semilogy(c["loss"], label=n)
    if len(names) > 1:
        ax.semilogy(curves["models"][names[1]]["atol"], "k--", lw=1, label="schedule atol")
    ax.set_xlabel("training step")
    ax.set_title("training L1 loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_100d(history: dict[str, dict[str, list[dict[str, Any]]]]) -> Figure:
    """Per-epoch training L1 and test error of every model of every 100-d seed
    (``history``: run key -> model -> epoch lines, as ``experiment.load_history`` gives)."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    colors: dict[str, str] = {}
    for runs in history.values():
        for model, lines in runs.items():
            color = colors.setdefault(model, f"C{len(colors)}")
            epochs = [ln["epoch"] + 1 for ln in lines]
            first = model not in {t.get_label() for t in axes[0].get_lines()}
            axes[0].semilogy(epochs, [ln["loss"] for ln in lines], color=color, alpha=0.8,
                             label=model if first else None)
            axes[1].semilogy(epochs, [ln.get("test_mae", math.nan) for ln in lines],
                             color=color, alpha=0.8, label=model if first else None)
    for ax, title in zip(axes, ("training L1 (mean over the epoch's minibatches)",
                                "test error mean ‖ŷ - y‖ (16 nodes)")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
