"""Directional evaluations needed to restore a 64×64 linear map to cosine 0.999.

Baseline (the information limit): ``dim_in`` directional evaluations determine a full-rank
linear map; least squares on the same equations reaches it. For each loss the structured
surrogate is trained (Adam) on a fixed bank of ``P`` probes (replayed with fresh cotangents)
and we report the smallest ``P`` on a ladder for which training reaches the target cosine
(trying a few learning rates), as a ratio to the limit; the target is best trained method
within 3× of the limit. We also report, for fresh sampling (new probes every step, no replay),
the evaluations spent when the target was first reached, and the wall time per epoch.

    .venv/bin/python benchmarks/restore.py            # Markdown table on stdout
"""

from __future__ import annotations

import argparse
import time

import torch

from gradsurrogate.restore import (
    RestoreConfig,
    least_squares_restore,
    linear_problem,
    make_surrogate,
    restore,
)

LOSSES = ["mse", "log_mse", "cosine", "dot", "gensim:1.5", "mixed"]
LADDER = [64, 72, 80, 96, 128, 192, 384, 1024]
LRS = [3e-2, 1e-2]


def min_probes(problem, loss: str, dim: int, target: float, steps: int, seed: int
               ) -> tuple[int | None, float | None]:
    """Smallest budget on the ladder (and the lr) reaching ``target`` with replay."""
    for budget in LADDER:
        for lr in LRS:
            gen = torch.Generator().manual_seed(seed + 1)  # not the seed that drew A
            s = make_surrogate("structured", dim, dim, 1.0, gen)
            cfg = RestoreConfig(dim_in=dim, dim_out=dim, dim_sample=dim, loss=loss,
                                epochs=steps, lr=lr, probe_budget=budget,
                                target_cosine=target, seed=seed)
            if restore(problem, s, cfg, progress=False).status == "target_reached":
                return budget, lr
    return None, None


def fresh(problem, loss: str, dim: int, dim_sample: int, target: float, epochs: int,
          seed: int) -> tuple[int | None, float, float]:
    """Fresh sampling: evaluations when ``target`` is reached, final cosine, s/epoch."""
    s = make_surrogate("structured", dim, dim, 1.0, torch.Generator().manual_seed(seed + 1))
    cfg = RestoreConfig(dim_in=dim, dim_out=dim, dim_sample=dim_sample, loss=loss,
                        epochs=epochs, lr=1e-2, target_cosine=target, seed=seed)
    start = time.perf_counter()
    res = restore(problem, s, cfg, progress=False)
    per_epoch = (time.perf_counter() - start) / len(res.history)
    return res.reached_at, res.final["cosine"], per_epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--target", type=float, default=0.999)
    ap.add_argument("--steps", type=int, default=1500, help="max steps per replay run")
    ap.add_argument("--fresh-epochs", type=int, default=600)
    ap.add_argument("--fresh-dim-sample", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--losses", nargs="*", default=LOSSES)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = args.dim
    problem = linear_problem(d, d, seed=args.seed)
    limit = d

    ls_needed = None
    for p in range(max(1, d - 8), 4 * d + 1):
        if least_squares_restore(problem, p, d, seed=args.seed)[1]["cosine"] >= args.target:
            ls_needed = p
            break
    start = time.perf_counter()
    least_squares_restore(problem, d, d, seed=args.seed)
    ls_time = time.perf_counter() - start

    print(f"## Jacobian restoration, {d}×{d} linear map, target cosine {args.target}\n")
    print(f"information limit: {limit} directional evaluations (dim_in); "
          f"torch threads {args.threads}\n")
    print("| method | evals to target (replay) | × limit | lr | fresh evals "
          f"(dim_sample {args.fresh_dim_sample}) | fresh × limit | fresh final cos | ms/epoch |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| least squares | {ls_needed} | {ls_needed / limit:.2f} | – | – | – | – | "
          f"{1e3 * ls_time:.1f} (solve) |")
    best = None
    for loss in args.losses:
        need, lr = min_probes(problem, loss, d, args.target, args.steps, args.seed)
        f_evals, f_cos, per_epoch = fresh(problem, loss, d, args.fresh_dim_sample, args.target,
                                          args.fresh_epochs, args.seed)
        if need is not None and (best is None or need < best[1]):
            best = (loss, need)
        ratio = f"{need / limit:.2f}" if need else f"> {LADDER[-1] / limit:.0f}"
        fr = f"{f_evals / limit:.1f}" if f_evals else "–"
        print(f"| {loss} | {need or f'> {LADDER[-1]}'} | {ratio} | {lr or '–'} | "
              f"{f_evals or 'not reached'} | {fr} | {f_cos:.4f} | {1e3 * per_epoch:.2f} |",
              flush=True)
    if best:
        verdict = "meets" if best[1] <= 3 * limit else "misses"
        print(f"\nbest trained method: {best[0]} with {best[1]} evaluations = "
              f"{best[1] / limit:.2f}× the limit ({verdict} the 3× target)")


if __name__ == "__main__":
    main()
