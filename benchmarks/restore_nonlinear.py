"""Restoring nonlinear maps with the CLI's defaults: held-out cosine at every cotangent scale.

Problems: ``tanh_bias`` (f(x) = tanh(A x + b)) and ``mlp2`` (a 2-layer tanh MLP, hidden 64),
``dim`` → ``dim``. Each run uses ``RestoreConfig`` defaults (only the problem, the dims, the
seed and optionally the budget are set), i.e. what ``gradsurrogate restore --problem P``
gives: the ``gradnet`` surrogate ``g = ∇_f · ∂h_θ/∂α`` fitted on its JVPs, 50× the limit
(``dim_in`` directional evaluations), one direction per point, Adam with a cosine schedule.
The held-out evaluation draws 256 fresh points and cotangents ``∇_f = s·z`` at
``s = 1e-2 .. 1e2`` (:func:`gradsurrogate.restore.heldout_scales`) and compares ``g`` with the
true ``∇_f · J_f(α)``. Baseline a user would pick: least squares on the same training probes
(the best constant Jacobian, ``ls cos``: its cosine with the true Jacobian at the evaluation
points). ``--compare`` adds rows for the ``jacnet`` and free-form ``mlp`` surrogates trained
with the same probes and optimiser settings.

``--timing`` measures the ``integral`` target's time per training step against the ``jvp``
target's, interleaved repeats in one process, medians (steps timed between two evaluations of
one run, so probe collection is excluded), for the default surrogates and for ``jacnet``/``mlp``.

    .venv/bin/python benchmarks/restore_nonlinear.py                  # 32, 3 seeds, 50x
    .venv/bin/python benchmarks/restore_nonlinear.py --budgets 10 20 30 --seeds 1
    .venv/bin/python benchmarks/restore_nonlinear.py --timing --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from gradsurrogate.restore import (
    SCALES,
    RestoreConfig,
    build_problem,
    build_surrogate,
    heldout_scales,
    restore,
)

SAME_SETTINGS = {"budget": 50.0, "optimizer": "adam", "lr": 1e-2, "schedule": "cosine",
                 "epochs": 3000, "directions": 1, "cotangent_dist": "basis", "points": 4096}


def run(cfg: RestoreConfig) -> dict[str, Any]:
    problem, surrogate = build_problem(cfg), build_surrogate(cfg)
    start = time.perf_counter()
    res = restore(problem, surrogate, cfg, progress=False, on_nonfinite="stop")
    wall = time.perf_counter() - start
    held = heldout_scales(problem, surrogate) if not res.diverged else {}
    return {"held": {s: v["cosine"] for s, v in held.items()},
            "held_min": min((v["min_cosine"] for v in held.values()), default=float("nan")),
            "x": res.jvp_evals / cfg.dim_in, "wall": wall, "steps": res.info.get("steps"),
            "ls_cos": res.info.get("ls_cosine", float("nan")), "stop": res.info.get("stop"),
            "status": res.status}


def row(name: str, cfg: RestoreConfig, rows: list[dict[str, Any]]) -> str:
    cells = []
    for s in SCALES:
        vals = [r["held"].get(s, float("nan")) for r in rows]
        cells.append(f"{statistics.mean(vals):.4f} ({min(vals):.4f})")
    wall = [r["wall"] for r in rows]
    ok = all(min(r["held"].values(), default=0.0) >= 0.99 for r in rows)
    return (f"| {name} | {cfg.surrogate} | {rows[0]['x']:.0f} | " + " | ".join(cells)
            + f" | {min(r['held_min'] for r in rows):.3f} | {statistics.median(wall):.0f} / "
            f"{max(wall):.0f} | {statistics.median([r['steps'] for r in rows]):.0f} | "
            f"{min(r['ls_cos'] for r in rows):.3f} | {'yes' if ok else 'no'} |")


def accuracy(args: argparse.Namespace) -> None:
    print(f"seeds 0..{args.seeds - 1}; target: held-out cosine >= 0.99 at every cotangent "
          "scale; cells: mean over seeds (min over seeds)\n")
    print("| problem | surrogate | evals × limit | " + " | ".join(f"cos s={s:g}" for s in SCALES)
          + " | min over pairs | wall s (median / max) | steps | least squares cos | target "
            "met |")
    print("|---|---|---|" + "---|" * len(SCALES) + "---|---|---|---|---|")
    for problem in args.problems:
        for budget in args.budgets:
            extra = {} if budget is None else {"budget": budget}
            if args.width is not None:
                extra["width"] = args.width
            cfgs = [RestoreConfig(problem=problem, dim_in=args.dim, dim_out=args.dim, seed=s,
                                  **extra) for s in range(args.seeds)]
            name = f"{problem} {args.dim}→{args.dim}"
            print(row(name, cfgs[0], [run(c) for c in cfgs]), flush=True)
            for other in args.compare:
                alt = [c.replace(surrogate=other, **{**SAME_SETTINGS, **extra}) for c in cfgs]
                print(row(name, alt[0], [run(c) for c in alt]), flush=True)


def step_time(cfg: RestoreConfig, steps: int) -> float:
    """Seconds per training step: between the two evaluations of a ``2·steps`` run."""
    cfg = cfg.replace(epochs=2 * steps, eval_every=steps, patience=10**6, stop_tol=0.0)
    res = restore(build_problem(cfg), build_surrogate(cfg), cfg, progress=False,
                  on_nonfinite="stop")
    t = [h["time"] for h in res.history]
    return (t[1] - t[0]) / steps


def timing(args: argparse.Namespace) -> None:
    d = args.dim
    cases = [("tanh_bias, default (gradnet)", RestoreConfig(problem="tanh_bias", dim_in=d,
                                                             dim_out=d)),
             ("linear, default (structured)", RestoreConfig(dim_in=d, dim_out=d)),
             ("tanh_bias, jacnet", RestoreConfig(problem="tanh_bias", dim_in=d, dim_out=d,
                                                 surrogate="jacnet", **SAME_SETTINGS)),
             ("tanh_bias, mlp", RestoreConfig(problem="tanh_bias", dim_in=d, dim_out=d,
                                              surrogate="mlp", **SAME_SETTINGS))]
    print(f"integral vs jvp target, time per training step, {args.repeats} interleaved repeats, "
          f"{args.steps} steps each, medians; integral: {cases[0][1].integral_method} "
          f"{cases[0][1].integral_nodes} nodes\n")
    print("| case | probes per step | jvp ms/step | integral ms/step | integral / jvp |")
    print("|---|---|---|---|---|")
    for name, cfg in cases:
        times: dict[str, list[float]] = {"jvp": [], "integral": []}
        for _ in range(args.repeats):
            for target in times:
                times[target].append(step_time(cfg.replace(target=target), args.steps))
        jvp, integ = (statistics.median(times[t]) for t in ("jvp", "integral"))
        per_step = min(cfg.points, cfg.total_probes - cfg.heldout_probes) * cfg.k
        print(f"| {name} | {per_step} | {1e3 * jvp:.2f} | {1e3 * integ:.2f} | "
              f"{integ / jvp:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", nargs="+", default=["tanh_bias", "mlp2"])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budgets", type=float, nargs="+", default=[None],
                    help="budgets in × the limit (default: the config's 'auto')")
    ap.add_argument("--width", type=int, default=None,
                    help="surrogate width (default: the surrogate's)")
    ap.add_argument("--compare", nargs="*", default=[],
                    help="also train these surrogates (jacnet, mlp) with the same settings")
    ap.add_argument("--timing", action="store_true",
                    help="measure the integral target's time per step against jvp instead")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads {args.threads}")
    timing(args) if args.timing else accuracy(args)


if __name__ == "__main__":
    main()
