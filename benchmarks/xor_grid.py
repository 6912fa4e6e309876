"""Speed of the XOR destroy grid: sequential runs vs one vectorised ensemble per group.

1. The same set of runs (the default grid's 560 configs, shortened to ``--compare-steps``
   steps) is run one by one (``torch.optim`` + ``SurrogateLinear``, the reference path) and
   vectorised (``EnsembleXorMLP`` per depth); the results agree (tests/test_xor.py checks the
   numbers), the table shows times and the speed-up (target ≥ 10×).
2. The full default grid (560 runs × the default steps) runs vectorised once (target < 200 s on
   2 cores).

    .venv/bin/python benchmarks/xor_grid.py [--threads 1] [--compare-steps 60] [--no-full]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from gradsurrogate.xor import XorConfig, default_grid, run_grid


def timed_grid(configs: list[XorConfig], vectorised: bool) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        records = run_grid(configs, out, vectorised=vectorised, wandb="disabled",
                           progress=False)
        return time.perf_counter() - start, records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (see docs/xor.md: 2 oversubscribe a busy box)")
    parser.add_argument("--compare-steps", type=int, default=60)
    parser.add_argument("--no-full", action="store_true", help="skip the full default grid")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = XorConfig()
    short = default_grid(base.replace(steps=args.compare_steps))
    rows = []
    t_seq, rec_seq = timed_grid(short, vectorised=False)
    t_vec, rec_vec = timed_grid(short, vectorised=True)
    by_id = {r["run_id"]: r for r in rec_seq}
    gap = max(abs(r["final_test_acc"] - by_id[r["run_id"]]["final_test_acc"]) for r in rec_vec)
    rows.append((f"default grid, {args.compare_steps} steps", len(short), f"{t_seq:.1f}",
                 f"{t_vec:.1f}", f"{t_seq / t_vec:.1f}×"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"max |Δ final test acc| sequential vs vectorised: {gap:.2e}\n")
    print("| runs | n | sequential (s) | vectorised (s) | speed-up |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    if not args.no_full:
        full = default_grid(base)
        t_full, rec = timed_grid(full, vectorised=True)
        est = t_seq / args.compare_steps * base.steps
        print(f"\n| full default grid ({len(full)} runs × {base.steps} steps) | vectorised "
              f"{t_full:.1f} s | sequential ≈ {est:.0f} s (extrapolated) | target < 200 s: "
              f"{'yes' if t_full < 200 else 'NO'} |")
        print(f"\nmean final test acc {sum(r['final_test_acc'] for r in rec) / len(rec):.4f}, "
              f"{sum(r['diverged'] for r in rec)} diverged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
