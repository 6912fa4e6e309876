"""``gradsurrogate jacnet {exp,abs,2d,all}``: the JacNet experiments.

1-d runs train on several seeds (the table reports mean ± std over seeds and the worst-case
guarantee check) and draw the paper-like figure for ``--figure-seed``. Outputs go to
``--out``: ``results_<name>.json`` (atomic writes) and ``jacnet_<name>.png``. Bad arguments
exit with code 2 and a message on stderr.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Any

import torch
from tqdm import tqdm

from gradsurrogate.activations import get_activation

from ..io import write_json_atomic
from .exp1d import Config1D, run_1d, summary_rows
from .figures import figure_1d, figure_2d
from .plane import Config2D, run_2d
from .training import METHODS


def _fmt(vals: list[float]) -> str:
    if len(vals) == 1:
        return f"{vals[0]:.4f}"
    return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"


def table_1d(results: list[dict[str, Any]]) -> str:
    """Markdown table over seeds: errors as mean ± std, guarantee columns worst case."""
    lines = ["| target | model | train L1 | test MAE | test max err | min slope | max abs slope |",
             "|---|---|---|---|---|---|---|"]
    rows = [summary_rows(r) for r in results]
    for k in range(2):
        per = [rs[k] for rs in rows]
        lines.append(
            f"| {per[0]['target']} | {per[0]['model']} ({per[0]['structure']}) | "
            f"{_fmt([p['train L1'] for p in per])} | {_fmt([p['test MAE'] for p in per])} | "
            f"{_fmt([p['test max'] for p in per])} | {min(p['min slope'] for p in per):.2e} | "
            f"{max(p['max |slope|'] for p in per):.4f} |"
        )
    return "\n".join(lines)


def table_2d(result: dict[str, Any]) -> str:
    lines = ["| task/structure | train L1 | test MAE | min det J | path gap mean / max | "
             "inverse MAE (ODE / +refine) | round trip max (ODE / +refine) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in result["models"].items():
        inv = (f"{r['inv_true_mae']:.4f} / {r['inv_true_mae_refined']:.4f}"
               if "inv_true_mae" in r else "–")
        rt = (f"{r['round_trip_max']:.2e} / {r['round_trip_max_refined']:.2e}"
              if "round_trip_max" in r else "–")
        det = f"{r['min_det']:.3f}" if "min_det" in r else "–"
        lines.append(f"| {name} | {r['train_l1']:.4f} | {r['test_mae']:.4f} | {det} | "
                     f"{r['gap_mean']:.2e} / {r['gap_max']:.2e} | {inv} | {rt} |")
    return "\n".join(lines)


def run_1d_cli(target: str, args: argparse.Namespace) -> str:
    seeds = list(range(args.seeds))
    if args.figure_seed not in seeds:
        seeds.append(args.figure_seed)
    results = []
    for seed in tqdm(seeds, desc=target, disable=None):
        cfg = Config1D(target=target, seed=seed, method=args.method, dtype=args.dtype,
                       steps=args.steps, lr=args.lr, hidden=args.hidden,
                       activation=args.activation)
        results.append(run_1d(cfg))
    table_seeds = [r for r in results if r["config"]["seed"] < args.seeds]
    write_json_atomic(os.path.join(args.out, f"results_{target}.json"),
                      [{k: v for k, v in r.items() if k not in ("grid", "target")}
                       for r in results], indent=1)
    fig = figure_1d(results[seeds.index(args.figure_seed)],
                    os.path.join(args.out, f"jacnet_{target}.png"))
    per_seed = {role: [round(r[role]["test_mae"], 3) for r in table_seeds]
                for role in ("structured", "baseline")}
    extra = f"\ntest MAE per seed: {per_seed}"
    s = [r["structured"] for r in table_seeds if "inverse_mae" in r["structured"]]
    if s:
        extra += (f"\nlearned inverse vs log: mean |x̂(y) - log y| = "
                 f"{_fmt([r['inverse_mae'] for r in s])}; round trip max "
                 f"{_fmt([r['round_trip_max'] for r in s])}")
    return (f"### {target} ({args.method}, seeds 0..{args.seeds - 1})\n\n"
            f"{table_1d(table_seeds)}\n{extra}\nfigure (seed {args.figure_seed}): {fig}\n")


def run_2d_cli(args: argparse.Namespace) -> str:
    result = run_2d(Config2D(method=args.method, steps=args.steps_2d, activation="tanh"))
    write_json_atomic(os.path.join(args.out, "results_2d.json"), result, indent=1)
    fig = figure_2d(result, os.path.join(args.out, "jacnet_2d.png"))
    return f"### 2-d ({args.method})\n\n{table_2d(result)}\n\nfigure: {fig}\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gradsurrogate jacnet", description=__doc__)
    p.add_argument("experiment", choices=["exp", "abs", "2d", "all"])
    p.add_argument("--method", choices=METHODS, default="gauss-legendre",
                   help="integrator used for training (dopri5 is the reference's)")
    p.add_argument("--out", default="runs/jacnet")
    p.add_argument("--seeds", type=int, default=5, help="1-d: seeds 0..N-1 in the table")
    p.add_argument("--figure-seed", type=int, default=2)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--steps-2d", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--activation", default="leaky_relu")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (the models are tiny; 1 avoids stalls on a "
                        "loaded machine)")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the first bad flag value (before any training starts)."""
    for flag, low in (("seeds", 1), ("figure_seed", 0), ("steps", 1), ("steps_2d", 1),
                      ("hidden", 1), ("threads", 1)):
        value = getattr(args, flag)
        if value < low:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= {low}; got {value}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be positive; got {args.lr}")
    get_activation(args.activation)  # unknown name: ValueError listing the accepted ones


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        torch.set_num_threads(args.threads)
        names = ["exp", "abs", "2d"] if args.experiment == "all" else [args.experiment]
        for name in names:
            print(run_2d_cli(args) if name == "2d" else run_1d_cli(name, args), flush=True)
    except ValueError as err:
        print(f"gradsurrogate jacnet: error: {err}", file=sys.stderr)
        return 2
    return 0
