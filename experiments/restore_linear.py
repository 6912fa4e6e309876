"""The reference restoration experiment: f(x) = A x, all losses × dim_sample fractions.

Sizes 4×4 … 128×128 (A ~ N(0, 1/dim_in)), structured surrogate, jvp target, Adam; epochs
normalised as ``epoch_scale · dim_in · dim_out / dim_sample``. Every run appends a record to
``OUT/results.jsonl`` through the ``gradsurrogate restore`` runner (finished runs are skipped,
so the script resumes). Writes ``OUT/table.md`` (final cosine and relative error per loss ×
size for each fraction) and figures (Jacobian heatmaps, metric curves, loss gradient fields).

    .venv/bin/python experiments/restore_linear.py --out runs/restore_linear
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gradsurrogate.io import read_jsonl, write_text_atomic
from gradsurrogate.restore.cli import build_parser, config_of, run_one
from gradsurrogate.restore.plots import plot_curves, plot_jacobians, plot_loss_fields

LOSSES = ["mse", "log_mse", "cosine", "dot", "gensim:0.5", "gensim:1.5", "mixed", "log_mixed"]
SIZES = [4, 8, 16, 32, 64, 128]
FRACTIONS = [0.25, 0.5, 1.0]


def cfg_for(size: int, loss: str, frac: float, args: argparse.Namespace) -> dict:
    ds = max(1, round(frac * size))
    argv = ["--dim-in", str(size), "--dim-out", str(size), "--dim-sample", str(ds),
            "--loss", loss, "--epochs", "auto", "--epoch-scale", str(args.epoch_scale),
            "--lr", str(args.lr), "--seed", str(args.seed), "--initial-messup",
            str(args.initial_messup)]
    return config_of(build_parser().parse_args(argv))


def table(records: list[dict], losses: list[str], sizes: list[int], frac: float) -> str:
    by = {(r["loss"], r["dim_in"]): r for r in records
          if round(r["dim_sample"] / r["dim_in"], 3) == round(max(1, round(frac * r["dim_in"]))
                                                              / r["dim_in"], 3)}
    head = "| loss | " + " | ".join(f"{s}×{s}" for s in sizes) + " |"
    lines = [f"dim_sample = {frac:g}·dim_in — final cosine / relative error "
             "(nonfinite runs marked)", "", head, "|---" * (len(sizes) + 1) + "|"]
    for loss in losses:
        cells = []
        for s in sizes:
            r = by.get((loss, s))
            if r is None:
                cells.append("–")
            elif r["status"] == "nonfinite" or r["final_cosine"] is None:
                cells.append("NaN")
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
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    done = {r["run_id"] for r in read_jsonl(out / "results.jsonl")}
    for size in args.sizes:
        for frac in args.fractions:
            for loss in args.losses:
                cfg = cfg_for(size, loss, frac, args)
                if cfg["run_id"] in done:
                    continue
                rec = run_one(cfg, out, wandb_mode="disabled", progress=False)
                print(json.dumps({k: rec[k] for k in ("loss", "dim_in", "dim_sample", "status",
                                                      "final_cosine", "jvp_evals")}), flush=True)
    records = read_jsonl(out / "results.jsonl")
    text = "\n\n".join(table(records, args.losses, args.sizes, f) for f in args.fractions)
    write_text_atomic(out / "table.md", text + "\n")
    print(text)

    figs = out / "figures"
    plot_loss_fields([*args.losses, "log_cosine", "gated"], figs / "loss_fields.png")
    mid = 64 if 64 in args.sizes else args.sizes[-1]
    runs = {}
    for loss in args.losses:
        cfg = cfg_for(mid, loss, 0.25, args)
        path = out / "history" / f"{cfg['run_id']}.json"
        if path.exists():
            runs[loss] = json.loads(path.read_text())
    if runs:
        plot_curves(runs, figs / f"curves_{mid}x{mid}.png")
    # heatmaps of one re-run (16×16, mse and cosine, dim_sample 1/4)
    from gradsurrogate.restore import RestoreConfig, linear_problem, make_surrogate, restore

    for loss in ("mse", "cosine"):
        cfg = cfg_for(16, loss, 0.25, args)
        p = linear_problem(16, 16, seed=args.seed)
        s = make_surrogate("structured", 16, 16, args.initial_messup,
                           torch.Generator().manual_seed(args.seed + 1))
        restore(p, s, RestoreConfig(dim_sample=cfg["dim_sample"], loss=loss,
                                    epochs=cfg["epochs"], lr=args.lr, seed=args.seed),
                progress=False)
        z = torch.zeros(1, 16)
        plot_jacobians(p.jacobian(z)[0], s.jacobian(z)[0], figs / f"jacobian_16x16_{loss}.png",
                       f"16×16, {loss}, dim_sample 4")


if __name__ == "__main__":
    main()
