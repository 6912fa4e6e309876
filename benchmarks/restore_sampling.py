"""Random-subspace sampling against dimension, at an equal budget in multiples of the limit.

The reference observed that "for the same dim_sample (in proportion) the random subspace
sampling improvement works better on higher dimension". Here f(x) = A x (n × n) is restored
with ``dim_sample`` = a fraction of ``n`` at the same budget (``--budget`` × the information
limit ``n`` directional evaluations, held-out probes included), every other setting at the
restore defaults, through the library's run function
(:func:`gradsurrogate.restore.run_restores`, resumable in ``--out``). Per (n, fraction) the
table gives, over seeds, the final cosine and relative error with the true Jacobian (mean and
worst), the optimizer steps run, least squares on the same probes, and how many runs the
restore report flags ``loss_up_sign_up`` (:func:`gradsurrogate.restore.report.loss_sign_flag`).

    .venv/bin/python benchmarks/restore_sampling.py                      # 32 64 128, 3 seeds
    .venv/bin/python benchmarks/restore_sampling.py --subspace random --out runs/rs_random
"""

from __future__ import annotations

import argparse
import json
import statistics
from fractions import Fraction
from pathlib import Path

import torch

from gradsurrogate.restore import RestoreConfig
from gradsurrogate.restore.report import loss_sign_flag
from gradsurrogate.restore.run import HISTORY, run_restores


def configs(args: argparse.Namespace) -> list[tuple[int, str, RestoreConfig]]:
    out = []
    for n in args.dims:
        for frac in args.fractions:
            ds = max(1, round(float(Fraction(frac)) * n))
            for seed in range(args.seeds):
                extra = {k: v for k, v in (("epochs", args.epochs), ("patience", args.patience))
                         if v is not None}
                cfg = RestoreConfig(dim_in=n, dim_out=n, dim_sample=ds, budget=args.budget,
                                    loss=args.loss, subspace=args.subspace, probes=args.probes,
                                    seed=seed, **extra)
                out.append((n, frac, cfg))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--fractions", nargs="+", default=["1/8", "1/4", "1/2", "1"],
                    help="dim_sample as fractions of n")
    ap.add_argument("--budget", type=float, default=2.0, help="x the limit n")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--loss", default="mse")
    ap.add_argument("--subspace", default="cycle", help="cycle (default) or random")
    ap.add_argument("--probes", default="replay", help="replay (default) or fresh")
    ap.add_argument("--epochs", type=int, default=None,
                    help="step cap (default: the restore default, epochs 'auto' = "
                         "max(1000, 16 n^2 / dim_sample): it grows with n at a fixed fraction)")
    ap.add_argument("--patience", type=int, default=None, help="default: the restore default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/restore_sampling")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = configs(args)
    records = run_restores([c for _, _, c in grid], args.out, wandb="disabled", progress=False,
                           echo=None)
    print(f"f = A x (n x n), budget {args.budget:g}x the limit n, loss {args.loss}, subspace "
          f"{args.subspace}, probes {args.probes}, epochs {args.epochs or 'auto'}, patience "
          f"{args.patience or 'default'}, {args.seeds} seeds; store {args.out}\n")
    print("| n | dim_sample | cosine mean (min) | rel. error median (max) | steps median (cap) | "
          "stopped by | x limit | least squares rel. error (max) | flagged loss_up_sign_up |")
    print("|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[int, str], list[dict]] = {}
    for (n, frac, _), rec in zip(grid, records):
        groups.setdefault((n, frac), []).append(rec)
    for (n, frac), rs in groups.items():
        cos = [r["final_cosine"] for r in rs]
        rel = [r["final_rel_error"] for r in rs]
        flags = 0
        for r in rs:
            path = Path(args.out) / HISTORY / f"{r['run_id']}.json"
            flags += path.exists() and loss_sign_flag(json.loads(path.read_text())) is not None
        print(f"| {n} | {rs[0]['config']['dim_sample']} ({frac} n) | {statistics.mean(cos):.5f} "
              f"({min(cos):.5f}) | {statistics.median(rel):.1e} ({max(rel):.1e}) | "
              f"{statistics.median(r['steps'] for r in rs):.0f} ({rs[0]['config']['epochs']}) | "
              f"{', '.join(sorted({str(r['stop']) for r in rs}))} | {rs[0]['x_limit']:.2f} | "
              f"{max(r['ls_rel_error'] for r in rs):.1e} | {flags}/{len(rs)} |", flush=True)


if __name__ == "__main__":
    main()
