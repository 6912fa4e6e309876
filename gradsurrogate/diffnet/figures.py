"""PNG figures of the diffnet experiments, as :class:`matplotlib.figure.Figure` objects
(no global backend or pyplot state). Members that diverged (``diverged_at`` > 0) are not
drawn."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from gradsurrogate.diffnet.problems import DIFFNET_PROBLEMS
from gradsurrogate.io import save_figure

__all__ = ["DISPLAY", "LOSS_NAMES", "MSE_LABELS", "TITLES", "plot_learning_curves",
           "plot_problem"]

DISPLAY = {"relu": "ReLu", "softplus": "SoftPlus", "tanh": "TanH", "cos": "Cos",
           "cos2pi": "Cos 2πx"}
LOSS_NAMES = {"type1": "Type 1 Loss", "type2": "Type 2 Loss", "hessian": "Hessian Loss"}
#: labels of the three test MSEs (``mse[..., k]``, :data:`.config.METRIC_KEYS` order)
MSE_LABELS = ("MSE f(x)", "MSE ∂f/∂x", "MSE ∂²f/∂x²")
TITLES = {"sin1d": "1-d: f(x) = sin(x)", "cossin2d": "2-d: f(x, y) = cos(x)·sin(y)"}


def _drawn(res: dict[str, np.ndarray]) -> list[tuple[int, str]]:
    """(row, loss) of the members with results (not diverged)."""
    div = res.get("diverged_at", np.zeros(len(res["losses"]), int))
    return [(e, str(loss)) for e, loss in enumerate(res["losses"]) if not div[e]]


def plot_problem(problem: str, activation: str, res: dict[str, np.ndarray],
                 path: Path) -> Figure:
    """PNG of f, df/dx and d²f/dx² of every loss variant against the truth: x (B, n),
    truths ``f_true`` (B, 1), ``J_true`` (B, 1, n), ``H_true`` (B, 1, n, n) and per member
    ``y``/``J``/``H`` with a leading member axis."""
    members = _drawn(res)
    title = f"{TITLES[problem]}, {DISPLAY.get(activation, activation)} activation"
    if DIFFNET_PROBLEMS[problem].n_in == 1:
        x = res["x"][:, 0]
        fig = Figure(figsize=(8, 9))
        axes = fig.subplots(3, 1, sharex=True)
        truths = (res["f_true"][:, 0], res["J_true"][:, 0, 0], res["H_true"][:, 0, 0, 0])
        labels = ("f(x) = sin x", "∂f/∂x = cos x", "∂²f/∂x² = -sin x")
        for k, (ax, truth, label) in enumerate(zip(axes, truths, labels)):
            ax.plot(x, truth, color="k", lw=2.5, label="truth")
            for e, loss in members:
                pred = (res["y"][e][:, 0], res["J"][e][:, 0, 0], res["H"][e][:, 0, 0, 0])[k]
                ax.plot(x, pred, lw=1.3, ls=("-", "--", ":")[e % 3], label=LOSS_NAMES[loss])
            ax.set_ylabel(label)
            ax.set_ylim(-1.5, 1.5)
            ax.grid(alpha=0.3)
        axes[0].legend(loc="upper left", fontsize=8)
        axes[-1].set_xlabel("x")
    else:
        side = DIFFNET_PROBLEMS[problem].n_test_side
        lo, hi = res["x"].min(0), res["x"].max(0)
        ext = (lo[0], hi[0], lo[1], hi[1])
        fields = ("f", "∂f/∂x", "∂f/∂y", "∂²f/∂x²", "∂²f/∂x∂y", "∂²f/∂y²")

        def panels(y: np.ndarray, jac: np.ndarray, hes: np.ndarray) -> list[np.ndarray]:
            flat = [y[:, 0], jac[:, 0, 0], jac[:, 0, 1], hes[:, 0, 0, 0], hes[:, 0, 0, 1],
                    hes[:, 0, 1, 1]]
            return [v.reshape(side, side).T for v in flat]  # rows: y, columns: x

        rows = [("truth", panels(res["f_true"], res["J_true"], res["H_true"]))]
        rows += [(LOSS_NAMES[loss], panels(res["y"][e], res["J"][e], res["H"][e]))
                 for e, loss in members]
        fig = Figure(figsize=(12, 2.1 * len(rows)))
        axes = fig.subplots(len(rows), 6, squeeze=False)
        for r, (name, imgs) in enumerate(rows):
            for c, img in enumerate(imgs):
                ax = axes[r, c]
                im = ax.imshow(img, origin="lower", extent=ext, cmap="RdBu_r", vmin=-1.2, vmax=1.2)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(fields[c])
                if c == 0:
                    ax.set_ylabel(name)
        fig.colorbar(im, ax=axes, shrink=0.6)
    fig.suptitle(title)
    save_figure(fig, path, dpi=90 if DIFFNET_PROBLEMS[problem].n_in == 1 else 64)
    return fig


def plot_learning_curves(problem: str, activation: str, res: dict[str, np.ndarray], path: Path,
                reference: dict | None = None) -> Figure:
    """PNG of the test MSEs of f, df/dx, d²f/dx² against the epoch (runs with ``eval_every``):
    ``res["test_mse"]`` (E, T, 3) against ``res["test_epochs"]`` (T,), one line per loss
    variant (NaN points, e.g. a member stored without curves, are not drawn), the
    reference's final value of that loss (``reference[loss][activation]``) dotted."""
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3, sharex=True)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    curves = res["test_mse"]
    for k, (ax, metric) in enumerate(zip(axes, MSE_LABELS)):
        for e, loss in _drawn(res):
            c = colors[e % len(colors)]
            ax.semilogy(res["test_epochs"], curves[e][:, k], color=c, label=LOSS_NAMES[loss])
            ref = (reference or {}).get(loss, {}).get(activation)
            if ref is not None:
                ax.axhline(ref[k], color=c, ls=":", lw=1.2)
        finite = curves[..., k][np.isfinite(curves[..., k])]
        if finite.size and finite.min() == finite.max() > 0:  # e.g. ReLU's ∂²f: a constant
            ax.set_ylim(finite.min() / 3, finite.max() * 3)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8, title="dotted: reference", title_fontsize=8)
    fig.suptitle(f"{TITLES[problem]}, {DISPLAY.get(activation, activation)}: test MSE during "
                 "training")
    save_figure(fig, path, dpi=80)
    return fig
