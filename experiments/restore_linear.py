"""The reference restoration experiment: f(x) = A x, all losses × dim_sample fractions.

Sizes 4×4 … 128×128 (A ~ N(0, 1/dim_in)), structured surrogate, jvp target, Adam; epochs
normalised as ``epoch_scale · dim_in · dim_out / dim_sample``. Every run is a
:class:`~gradsurrogate.restore.RestoreConfig` run by :func:`~gradsurrogate.restore.run_restores`
(one record per run in ``OUT/results.jsonl``; finished runs are skipped, so the script resumes).
Writes ``OUT/table.md`` (final cosine and relative error per loss × size for each fraction) and
figures (Jacobian heatmaps, metric curves, loss gradient fields).

    .venv/bin/python experiments/restore_linear.py --out runs/restore_linear
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gradsurrogate.cli import set_threads
from gradsurrogate.io import write_text_atomic
from gradsurrogate.restore import (
    RestoreConfig,
    build_problem,
    build_surrogate,
    restore,
    run_restores,
)
from gradsurrogate.restore.plots import plot_curves, plot_jacobians, plot_loss_fields
from gradsurrogate.restore.run import HISTORY, PART, stored_records
from gradsurrogate.runs import RunStore, StoreBusyError, run_id

LOSSES = ["mse", "log_mse", "cosine", "dot", "gensim:0.5", "gensim:1.5", "mixed", "log_mixed"]
SIZES = [4, 8, 16, 32, 64, 128]
FRACTIONS = [0.25, 0.5, 1.0]


def cfg_for(size: int, loss: str, frac: float, args: argparse.Namespace) -> RestoreConfig:
    return RestoreConfig(dim_in=size, dim_out=size, dim_sample=max(1, round(frac * size)),
                         loss=loss, epochs="auto", epoch_scale=args.epoch_scale, lr=args.lr,
                         seed=args.seed, initial_messup=args.initial_messup)


def table(records: dict[str, dict], configs: dict[tuple[str, int, float], RestoreConfig],
          losses: list[str], sizes: list[int], frac: float) -> str:
    """Final cosine / relative error of the runs of ``configs`` (loss, size, fraction)."""
    head = "| loss | " + " | ".join(f"{s}×{s}" for s in sizes) + " |"
    lines = [f"dim_sample = {frac:g}·dim_in — final cosine / relative error "
             "(diverged runs marked)", "", head, "|---" * (len(sizes) + 1) + "|"]
    for loss in losses:
        cells = []
        for s in sizes:
            r = records.get(run_id(configs[loss, s, frac]))
            if r is None:
                cells.append("–")
            elif r["diverged"] or r["final_cosine"] is None:
                cells.append("diverged")
            else:
                cells.append(f"{r['final_cosine']:.3f} / {r['final_rel_error']:.2f}")
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=SIZES)
    ap.add_argument("--losses", nargs="*", default=LOSSES)
    ap.add_argument("--fractions", type=float, nargs="*", default=FRACTIONS)
    ap.add_argument("--epoch-scale", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=2e-2)
    ap.add_argument("--initial-messup", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/restore_linear")
    args = ap.parse_args()
    try:  # every config is validated before any run
        set_threads(args.threads)
        configs = {(loss, size, frac): cfg_for(size, loss, frac, args)
                   for size in args.sizes for frac in args.fractions for loss in args.losses}
        store = RunStore(args.out, part=PART)
        store.acquire()  # --out writable and not in use by another process
    except (ValueError, StoreBusyError) as err:
        ap.error(str(err))
    out = Path(args.out)
    try:
        run_restores(configs.values(), store, progress=False)
        records = stored_records(store)
    finally:
        store.release()
    text = "\n\n".join(table(records, configs, args.losses, args.sizes, f)
                       for f in args.fractions)
    write_text_atomic(out / "table.md", text + "\n")
    print(text)

    figs = out / "figures"
    plot_loss_fields([*args.losses, "log_cosine", "gated"], figs / "loss_fields.png")
    mid = 64 if 64 in args.sizes else args.sizes[-1]
    runs = {}
    for loss in args.losses:
        path = out / HISTORY / f"{run_id(cfg_for(mid, loss, 0.25, args))}.json"
        if path.exists():
            runs[loss] = json.loads(path.read_text())
    if runs:
        plot_curves(runs, figs / f"curves_{mid}x{mid}.png")
    # heatmaps of one re-run (16×16, mse and cosine, dim_sample 1/4)
    for loss in ("mse", "cosine"):
        cfg = cfg_for(16, loss, 0.25, args)
        p, s = build_problem(cfg), build_surrogate(cfg)
        restore(p, s, cfg, progress=False, on_nonfinite="stop")
        z = torch.zeros(1, 16)
        plot_jacobians(p.jacobian(z)[0], s.jacobian(z)[0], figs / f"jacobian_16x16_{loss}.png",
                       f"16×16, {loss}, dim_sample {cfg.dim_sample}")


if __name__ == "__main__":
    main()
