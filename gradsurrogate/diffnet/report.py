"""Markdown table (reference format, next to the reference's numbers) and PNG figures for
the results written by :func:`gradsurrogate.diffnet.experiment.run_experiment`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from gradsurrogate.diffnet.config import LOSSES
from gradsurrogate.diffnet.experiment import evaluate_checkpoint, result_path
from gradsurrogate.diffnet.problems import PROBLEMS
from gradsurrogate.io import save_figure, write_text_atomic

# stored with a leading member axis; stacked again when the runs of an activation merge
_PER_MEMBER = ("mse", "mse_inits", "y", "J", "H", "epoch", "finished")
# learning curves: test_mse has a member axis, test_epochs is per run (see _merge_curves)
_CURVES = ("test_mse", "test_epochs")

__all__ = [
    "REFERENCE", "format_spread", "format_table", "load_results", "plot_curves", "plot_problem",
    "write_report",
]

DISPLAY = {"relu": "ReLu", "softplus": "SoftPlus", "tanh": "TanH", "cos2pi": "Cos"}
LOSS_NAMES = {"type1": "Type 1 Loss", "type2": "Type 2 Loss", "hessian": "Hessian Loss"}
METRICS = ("MSE f(x)", "MSE ∂f/∂x", "MSE ∂²f/∂x²")
TITLES = {"sin1d": "1-d: f(x) = sin(x)", "cossin2d": "2-d: f(x, y) = cos(x)·sin(y)"}

# The reference README's tables: problem -> loss -> activation -> (MSE f, df, d²f).
_REF_ROWS = {  # (problem, loss): {activation: (MSE f, MSE df, MSE d²f)}
    ("sin1d", "type1"): {
        "relu": (9.792e-6, 4.514e-4, 4.950e-1), "softplus": (6.909e-6, 1.807e-4, 5.930e-3),
        "tanh": (8.239e-7, 3.099e-5, 1.625e-3), "cos2pi": (1.957e-7, 2.189e-6, 5.451e-5),
    },
    ("sin1d", "type2"): {
        "relu": (5.077e-7, 2.661e-3, 4.950e-1), "softplus": (8.666e-6, 1.494e-4, 4.519e-3),
        "tanh": (7.563e-6, 4.345e-4, 8.642e-3), "cos2pi": (1.746e-8, 5.731e-7, 1.209e-5),
    },
    ("cossin2d", "type1"): {
        "relu": (4.151e-5, 2.014e-3, 9.996e-1), "softplus": (2.851e-6, 3.656e-5, 1.288e-3),
        "tanh": (2.583e-6, 1.525e-5, 8.535e-4), "cos2pi": (2.929e-7, 4.344e-6, 1.709e-4),
    },
    ("cossin2d", "type2"): {
        "relu": (3.293e-5, 4.962e-3, 9.996e-1), "softplus": (4.282e-5, 8.128e-4, 1.468e-2),
        "tanh": (8.361e-6, 4.349e-4, 1.163e-2), "cos2pi": (2.118e-6, 7.038e-5, 1.316e-3),
    },
}
REFERENCE: dict[str, dict[str, dict[str, tuple[float, float, float]]]] = {}
for (_problem, _loss), _row in _REF_ROWS.items():
    REFERENCE.setdefault(_problem, {})[_loss] = _row


def load_results(
    out_dir: str | Path, problem: str, include_checkpoints: bool = False
) -> dict[str, dict[str, np.ndarray]]:
    """activation -> stored result arrays of ``problem``; results stored per loss subset
    (runs split with ``--losses``) are merged, members in :data:`LOSSES` order.

    With ``include_checkpoints``, unfinished runs are evaluated from their checkpoints;
    the per-member ``epoch`` array says how many epochs each member has trained.
    """
    parts: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    files = sorted(Path(out_dir).glob(f"{problem}_*.npz"))
    if include_checkpoints:
        ckpts = sorted(Path(out_dir).glob(f"{problem}_*.ckpt.pt"))
        done = lambda c: c.with_name(c.name.removesuffix(".ckpt.pt") + ".npz").exists()
        files += [c for c in ckpts if not done(c)]
    for path in files:
        if path.suffix == ".npz":
            activation = path.stem[len(problem) + 1 :].split("__")[0]
            with np.load(path) as stored:
                res = dict(stored)
            if result_path(out_dir, problem, activation, tuple(map(str, res["losses"]))) != path:
                continue
        else:
            _, activation, res = evaluate_checkpoint(path)
        res["epoch"] = np.full(len(res["losses"]), int(res.get("epoch", len(res["train_loss"]))))
        res["finished"] = np.full(len(res["losses"]), path.suffix == ".npz")
        for e, loss in enumerate(map(str, res["losses"])):
            member = {k: v[e] for k, v in res.items() if k in (*_PER_MEMBER, "test_mse")}
            member.update({k: v for k, v in res.items() if k not in member})
            parts.setdefault(activation, {})[loss] = member
    results = {}
    for activation, by_loss in parts.items():
        losses = [loss for loss in LOSSES if loss in by_loss]
        merged = {}
        for k in _PER_MEMBER:
            values = [by_loss[loss].get(k) for loss in losses]
            if all(v is not None for v in values) and len({v.shape for v in values}) == 1:
                merged[k] = np.stack(values)  # mse_inits only where every loss has as many
        shared = {k: v for k, v in by_loss[losses[0]].items()
                  if k not in _PER_MEMBER and k not in _CURVES}
        merged |= _merge_curves(f"{problem}/{activation}", [by_loss[loss] for loss in losses])
        results[activation] = {**shared, **merged, "losses": np.array(losses)}
    return results


def _merge_curves(name: str, members: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``test_mse`` (E, T, 3) and ``test_epochs`` (T,) of members stored in separate runs:
    members without curves get NaN rows; curves recorded at different epochs are dropped
    with a warning; no member with curves gives {}."""
    have = [m for m in members if "test_mse" in m]
    if not have:
        return {}
    epochs = have[0]["test_epochs"]
    if not all(np.array_equal(m["test_epochs"], epochs) for m in have):
        warnings.warn(f"{name}: learning curves recorded at different epochs; not drawn",
                      stacklevel=3)
        return {}
    blank = np.full((len(epochs), 3), np.nan)
    return {"test_mse": np.stack([m.get("test_mse", blank) for m in members]),
            "test_epochs": epochs}


def _ordered(acts: Iterable[str]) -> list[str]:
    """Activations in the reference's column order (ReLu, SoftPlus, TanH, Cos), others after."""
    acts = list(acts)
    return [a for a in DISPLAY if a in acts] + [a for a in acts if a not in DISPLAY]


def _grid(
    problem: str,
    cols: list[tuple[str, str]],
    head: list[str],
    cell: Callable[[str, str, int], tuple[float, str] | None],
) -> tuple[list[str], int, int]:
    """Markdown rows in the reference's format: per metric k a row of ``cell(loss, act, k)``
    ((value, text), or None for "–"), ✓ where the value is at or below the reference, then
    the reference's row. Returns (lines, ✓ cells, cells compared)."""
    lines = ["| " + " | ".join(["", *head]) + " |", "|---" * (len(head) + 1) + "|"]
    wins = compared = 0
    for k, metric in enumerate(METRICS):
        ours, ref = [f"**{metric}**"], [f"↳ reference {metric}"]
        for loss, act in cols:
            target = REFERENCE.get(problem, {}).get(loss, {}).get(act)
            ref.append(f"{target[k]:.3e}" if target is not None else "–")
            got = cell(loss, act, k)
            if got is None:
                ours.append("–")
                continue
            value, text = got
            if target is not None:
                compared += 1
                if value <= target[k]:
                    wins += 1
                    text += " ✓"
            ours.append(text)
        lines += ["| " + " | ".join(ours) + " |", "| " + " | ".join(ref) + " |"]
    return lines, wins, compared


def format_table(problem: str, results: dict[str, dict[str, np.ndarray]]) -> tuple[str, int, int]:
    """Reference-format table: a column per loss / activation, a row per metric, each followed
    by the reference's row. Returns (markdown, cells at or below the reference, cells compared).
    """
    have = {act: [str(x) for x in results[act]["losses"]] for act in _ordered(results)}
    losses = [loss for loss in LOSSES if any(loss in h for h in have.values())]
    cols = [(loss, act) for loss in losses for act in have]

    def header(loss: str, act: str) -> str:
        name = f"{LOSS_NAMES[loss]} / {DISPLAY.get(act, act)}"
        if loss not in have[act]:
            return f"{name} (not run)"
        row = have[act].index(loss)
        if bool(results[act]["finished"][row]):
            return name
        return f"{name} (epoch {int(results[act]['epoch'][row])}, unfinished)"

    def cell(loss: str, act: str, k: int) -> tuple[float, str] | None:
        if loss not in have[act]:
            return None
        value = float(results[act]["mse"][have[act].index(loss)][k])
        return value, f"{value:.3e}"

    lines, wins, compared = _grid(problem, cols, [header(*c) for c in cols], cell)
    return "\n".join(lines), wins, compared


def format_spread(problem: str, results: dict[str, dict[str, np.ndarray]]) -> tuple[str, int, int]:
    """Seed-spread table for runs with several initialisations per loss (``inits`` > 1):
    each cell "median [min, max]" over the initialisations; ✓ where the median is at or below
    the reference. Returns (markdown, ✓ cells, cells compared); empty if no run has spread."""
    have = {act: [str(x) for x in results[act]["losses"]]
            for act in _ordered(a for a in results if "mse_inits" in results[a])}
    cols = [(loss, act) for loss in LOSSES for act in have if loss in have[act]]
    if not cols:
        return "", 0, 0

    def cell(loss: str, act: str, k: int) -> tuple[float, str]:
        draws = results[act]["mse_inits"][have[act].index(loss)][:, k]
        med = float(np.median(draws))
        return med, f"{med:.2e} [{draws.min():.1e}, {draws.max():.1e}]"

    head = [f"{LOSS_NAMES[loss]} / {DISPLAY.get(act, act)}" for loss, act in cols]
    lines, wins, compared = _grid(problem, cols, head, cell)
    n = "/".join(str(x) for x in sorted({results[act]["mse_inits"].shape[1] for act in have}))
    return f"Median [min, max] over {n} initialisations:\n\n" + "\n".join(lines), wins, compared


def plot_problem(problem: str, activation: str, res: dict[str, np.ndarray], path: Path) -> None:
    """PNG of f, df/dx and d²f/dx² of every loss variant against the truth."""
    losses = [str(x) for x in res["losses"]]
    title = f"{TITLES[problem]}, {DISPLAY.get(activation, activation)} activation"
    if PROBLEMS[problem].n_in == 1:
        x = res["x"][:, 0]
        fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
        truths = (res["f_true"][:, 0], res["J_true"][:, 0, 0], res["H_true"][:, 0, 0, 0])
        labels = ("f(x) = sin x", "∂f/∂x = cos x", "∂²f/∂x² = -sin x")
        for k, (ax, truth, label) in enumerate(zip(axes, truths, labels)):
            ax.plot(x, truth, color="k", lw=2.5, label="truth")
            for e, loss in enumerate(losses):
                pred = (res["y"][e][:, 0], res["J"][e][:, 0, 0], res["H"][e][:, 0, 0, 0])[k]
                ax.plot(x, pred, lw=1.3, ls=("-", "--", ":")[e % 3], label=LOSS_NAMES[loss])
            ax.set_ylabel(label)
            ax.set_ylim(-1.5, 1.5)
            ax.grid(alpha=0.3)
        axes[0].legend(loc="upper left", fontsize=8)
        axes[-1].set_xlabel("x")
    else:
        side = PROBLEMS[problem].n_test_side
        lo, hi = res["x"].min(0), res["x"].max(0)
        ext = (lo[0], hi[0], lo[1], hi[1])
        fields = ("f", "∂f/∂x", "∂f/∂y", "∂²f/∂x²", "∂²f/∂x∂y", "∂²f/∂y²")

        def panels(y: np.ndarray, jac: np.ndarray, hes: np.ndarray) -> list[np.ndarray]:
            flat = [y[:, 0], jac[:, 0, 0], jac[:, 0, 1], hes[:, 0, 0, 0], hes[:, 0, 0, 1],
                    hes[:, 0, 1, 1]]
            return [v.reshape(side, side).T for v in flat]  # rows: y, columns: x

        rows = [("truth", panels(res["f_true"], res["J_true"], res["H_true"]))]
        rows += [(LOSS_NAMES[loss], panels(res["y"][e], res["J"][e], res["H"][e]))
                 for e, loss in enumerate(losses)]
        fig, axes = plt.subplots(len(rows), 6, figsize=(12, 2.1 * len(rows)), squeeze=False)
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
    save_figure(fig, path, dpi=90 if PROBLEMS[problem].n_in == 1 else 64)
    plt.close(fig)


def plot_curves(problem: str, activation: str, res: dict[str, np.ndarray], path: Path) -> None:
    """PNG of the test MSEs of f, df/dx, d²f/dx² against the epoch (runs with ``eval_every``):
    ``res["test_mse"]`` (E, T, 3) against ``res["test_epochs"]`` (T,), one line per loss
    variant (NaN points, e.g. a member stored without curves, are not drawn), the
    reference's final value of that loss dotted."""
    losses = [str(x) for x in res["losses"]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharex=True, layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (ax, metric) in enumerate(zip(axes, METRICS)):
        for e, loss in enumerate(losses):
            c = colors[e % len(colors)]
            ax.semilogy(res["test_epochs"], res["test_mse"][e][:, k], color=c,
                        label=LOSS_NAMES[loss])
            ref = REFERENCE.get(problem, {}).get(loss, {}).get(activation)
            if ref is not None:
                ax.axhline(ref[k], color=c, ls=":", lw=1.2)
        finite = res["test_mse"][..., k][np.isfinite(res["test_mse"][..., k])]
        if finite.size and finite.min() == finite.max() > 0:  # e.g. ReLU's ∂²f: a constant
            ax.set_ylim(finite.min() / 3, finite.max() * 3)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8, title="dotted: reference", title_fontsize=8)
    fig.suptitle(f"{TITLES[problem]}, {DISPLAY.get(activation, activation)}: test MSE during "
                 "training")
    save_figure(fig, path, dpi=80)
    plt.close(fig)


def write_report(out_dir: str | Path, problems: list[str], figures: bool = True,
                 command: str = "", include_checkpoints: bool = False) -> str:
    """Write ``table.md`` (and PNGs) into ``out_dir`` from the stored results (and, with
    ``include_checkpoints``, from unfinished runs' checkpoints); return the text."""
    out = Path(out_dir)
    parts = [f"Command: `{command}`\n"] if command else []
    for problem in problems:
        results = load_results(out, problem, include_checkpoints)
        if not results:
            continue
        table, wins, compared = format_table(problem, results)
        parts.append(f"### {TITLES[problem]}\n\n{table}\n\n"
                     f"{wins} of {compared} cells at or below the reference (✓).\n")
        spread, s_wins, s_compared = format_spread(problem, results)
        if spread:
            parts.append(f"{spread}\n\n{s_wins} of {s_compared} medians at or below the "
                         "reference (✓).\n")
        if figures:
            for activation, res in results.items():
                plot_problem(problem, activation, res, out / f"{problem}_{activation}.png")
                if "test_mse" in res:
                    plot_curves(problem, activation, res,
                                out / f"{problem}_{activation}_curves.png")
    text = "\n".join(parts)
    write_text_atomic(out / "table.md", text)
    return text
