"""Paper-like figures of the JacNet experiments (matplotlib, Agg, PNG)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from gradsurrogate.io import save_figure


def _loss_panel(ax: Any, result: dict[str, Any], method: str) -> None:
    for role, color in (("structured", "C0"), ("baseline", "C3")):
        h = result[role]["history"]
        ax.semilogy([r["loss"] for r in h], color=color,
                    label=f"{role} ({result[role]['structure']}) loss")
    h = result["structured"]["history"]
    ax.semilogy([r["atol"] for r in h], "k--", lw=1, label="schedule tolerance (atol)")
    if method == "gauss-legendre":
        ax2 = ax.twinx()
        ax2.step(range(len(h)), [r["n"] for r in h], "g:", where="post")
        ax2.set_ylabel("Gauss–Legendre nodes", color="g")
    ax.set_xlabel("training step")
    ax.set_title("training L1 loss and tolerance schedule")
    ax.legend(fontsize=7)


def figure_1d(result: dict[str, Any], path: str) -> str:
    """Fit panel (target, init, trained, baseline), inverse or derivative panel, loss panel."""
    cfg, s, b = result["config"], result["structured"], result["baseline"]
    grid, name = result["grid"], cfg["target"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot(grid, result["target"], "k", lw=2, label=f"target {name}(x)")
    ax.plot(grid, s["init"], "C0:", label=f"{s['structure']} at init")
    ax.plot(grid, s["fit"], "C0", label=f"{s['structure']} trained")
    ax.plot(grid, b["fit"], "C3--", label="unconstrained trained")
    ys = [abs(x) if name == "abs" else 2.718281828459045**x for x in result["x_train"]]
    ax.plot(result["x_train"], ys, "ko", ms=6, mfc="none", label="training points")
    ax.axvspan(-1, 1, color="0.93")
    ax.set_title(f"learning {name}(x): 5 points in [-1, 1], tested on [-2, 2]")
    ax.legend(fontsize=7)
    ax = axes[1]
    if "inverse" in s:
        import math

        yv = s["inverse_y"]
        ax.plot(yv, [math.log(v) for v in yv], "k", lw=2, label="true inverse log(y)")
        ax.plot(yv, s["inverse"], "C0", label="learned inverse (ODE in y)")
        ax.set_xlabel("y")
        ax.set_title(f"inverse: mean |x̂(y) - log y| = {s['inverse_mae']:.3f}")
    else:
        ax.plot(grid, s["jacobian"], "C0", label=f"{s['structure']} J(x)")
        ax.plot(grid, b["jacobian"], "C3--", label="unconstrained J(x)")
        ax.axhline(1, color="k", lw=0.8)
        ax.axhline(-1, color="k", lw=0.8)
        ax.set_title("learned derivative; ±1 is the Lipschitz bound")
    ax.legend(fontsize=7)
    _loss_panel(axes[2], result, cfg["method"])
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
    return path


def figure_2d(result: dict[str, Any], path: str) -> str:
    """Warped grid (true vs orientation JacNet), path gaps per model, training losses."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    for i, c in enumerate(result["grid_true"]):
        ax.plot([p[0] for p in c], [p[1] for p in c], color="0.6", lw=2,
                label="true f" if i == 0 else None)
    for i, c in enumerate(result["grid_model"]):
        ax.plot([p[0] for p in c], [p[1] for p in c], color="C0", lw=0.8,
                label="orientation JacNet" if i == 0 else None)
    ax.set_aspect("equal")
    ax.set_title("image of the grid of [-2, 2]²")
    ax.legend(fontsize=7)
    ax = axes[1]
    names = list(result["models"])
    gaps = [max(result["models"][n]["gap_mean"], 1e-17) for n in names]
    ax.bar(range(len(names)), gaps, color=["C3", "C0", "C2", "C3", "C1"][: len(names)])
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=7)
    ax.set_title("path dependence: mean |y_straight - y_bent|")
    ax = axes[2]
    for n in names:
        ax.semilogy(result["models"][n]["loss"], label=n)
    ax.semilogy(result["models"][names[1]]["atol"], "k--", lw=1, label="schedule atol")
    ax.set_xlabel("training step")
    ax.set_title("training L1 loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
    return path
