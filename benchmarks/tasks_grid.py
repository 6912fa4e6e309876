"""Speed of a task's destroy grid: one run at a time vs vectorised ensembles (the MLP tasks
and the MNIST-1D CNN).

1. The same configs (the task's default grid: every target × {sign, flip p ∈ 10 values} ×
   5 seeds + exact + the FA family, shortened to ``--compare-steps``; DFA runs are left out
   as they run one by one on both paths) run one by one
   (``torch.optim`` + ``SurrogateLinear``/``SurrogateConv1d``: what a user would write) and
   through ``run_grid``'s vectorised path (``EnsembleXorMLP``/``EnsembleMnist1dCNN`` per
   group; DFA and Transformer runs stay sequential), in
   interleaved repeats; the table shows median wall and process CPU times (CPU time is
   what to compare on a shared, loaded machine), the speed-up (target ≥ 8×), the 1-minute
   load average and the largest difference in final test accuracy.
2. ``--full``: the whole default grid at the task's default steps, vectorised (target for
   mnist1d-mlp: < 10 min on 2 cores).

    .venv/bin/python benchmarks/tasks_grid.py [--task mnist1d-mlp] [--compare-steps 100]
        [--repeats 1] [--sample K] [--threads 1] [--full]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from xor_grid import timed_grid  # this folder is on sys.path when run as a script

from gradsurrogate.xor import XorConfig, default_grid, run_grid
from gradsurrogate.xor.grid import can_vectorise, ensemble_chunks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mnist1d-mlp")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compare-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sample", type=int, default=0,
                        help="run only every k-th config one by one (evenly spread) and scale "
                             "its time to all configs (0: run all; the table says so)")
    parser.add_argument("--full", action="store_true", help="also time the full default grid")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = XorConfig(task=args.task)
    steps = args.compare_steps
    short = default_grid(base.replace(steps=steps, diag_every=0 if base.diag_every > steps
                                      else base.diag_every))
    n_all = len(short)
    short = [c for c in short if can_vectorise(c)]  # the vectorised path; DFA stays sequential
    if not short:
        raise SystemExit(f"task {args.task!r} has no vectorisable runs (no ensemble model)")
    run_grid(short[:1], tempfile.mkdtemp(), wandb="disabled", progress=False)  # data, imports
    seq_t, vec_t, seq_cpu, vec_cpu = [], [], [], []
    sample = short[::args.sample] if args.sample > 1 else short
    load = [os.getloadavg()[0]]
    for k in range(args.repeats):  # interleaved
        cpu = time.process_time()
        t, rec_seq = timed_grid(sample, vectorised=False)
        seq_cpu.append((time.process_time() - cpu) * len(short) / len(sample))
        seq_t.append(t * len(short) / len(sample))
        cpu = time.process_time()
        t, rec_vec = timed_grid(short, vectorised=True)
        vec_cpu.append(time.process_time() - cpu)
        vec_t.append(t)
        load.append(os.getloadavg()[0])
        print(f"repeat {k + 1}: one by one {seq_t[-1]:.1f} s (scaled; CPU {seq_cpu[-1]:.1f} s), "
              f"vectorised {t:.1f} s (CPU {vec_cpu[-1]:.1f} s), ratio {seq_t[-1] / t:.2f} "
              f"(CPU {seq_cpu[-1] / vec_cpu[-1]:.2f}), load {load[-1]:.1f}", flush=True)
    by_id = {r["run_id"]: r for r in rec_seq}
    gap = max(abs(r["final_test_acc"] - by_id[r["run_id"]]["final_test_acc"]) for r in rec_vec
              if r["run_id"] in by_id)
    t_seq, t_vec = statistics.median(seq_t), statistics.median(vec_t)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); task {args.task}; "
          f"the {len(short)} vectorisable runs of the default grid (left out: "
          f"{n_all - len(short)} DFA runs, sequential in both); {args.repeats} interleaved "
          f"repeat(s), medians; max |Δ final test acc| one by one vs vectorised: {gap:.2e}; "
          f"one by one: {len(sample)} of the {len(short)} runs, time scaled to all; "
          f"ensembles of {sorted((len(c) for c in ensemble_chunks(short)), reverse=True)}; "
          f"1-min load average {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} cores\n")
    print("| runs | n | one by one (s) | vectorised (s) | speed-up |")
    print("|---|---|---|---|---|")
    ratios = sorted(a / b for a, b in zip(seq_t, vec_t))
    c_seq, c_vec = statistics.median(seq_cpu), statistics.median(vec_cpu)
    print(f"| default {args.task} grid, {steps} steps, wall | {len(short)} | {t_seq:.1f} | "
          f"{t_vec:.1f} | {t_seq / t_vec:.1f}× (per repeat {ratios[0]:.1f}-{ratios[-1]:.1f}×) |")
    print(f"| the same, process CPU time | {len(short)} | {c_seq:.1f} | {c_vec:.1f} | "
          f"{c_seq / c_vec:.1f}× |")
    if args.full:
        full = default_grid(base)
        cpu, load_full = time.process_time(), os.getloadavg()[0]
        t_full, rec = timed_grid(full, vectorised=True)
        cpu = time.process_time() - cpu
        est = t_seq / steps * base.steps
        print(f"\n| full default grid ({len(full)} runs × {base.steps} steps) | vectorised "
              f"{t_full:.0f} s wall, {cpu:.0f} s CPU ({torch.get_num_threads()} thread(s), "
              f"load {load_full:.1f}-{os.getloadavg()[0]:.1f}) | one by one ≈ {est:.0f} s "
              f"(extrapolated) |")
        accs = [r["final_test_acc"] for r in rec]
        print(f"\nmean final test acc {sum(accs) / len(accs):.4f}, "
              f"{sum(bool(r['diverged']) for r in rec)} diverged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
