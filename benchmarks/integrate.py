"""Benchmark: one JacNet training step through Gauss–Legendre vs torchdiffeq dopri5.

Setting: ``JacNet(1, 1, hidden=64, structure="invertible")`` fitted to exp on a full batch of
``--points`` points in [-2, 2] (forward + L1 loss + backward + Adam step). Baseline: dopri5 with
rtol = atol = 1e-5 (the reference's solver). Gauss–Legendre uses the smallest node count in
{4, 8, ..., 256} whose error (vs a float64 Gauss–Legendre reference with 1024 nodes) is not
worse than dopri5's, so the comparison is at equal or better accuracy. Also times the inverse
(ODE in y for outputs of x in [-1, 1], dopri5 rtol = atol = 1e-5, and RK4). Prints a Markdown table.

Run: ``python benchmarks/integrate.py [--activation tanh] [--repeats 30]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from gradsurrogate.jacnet import JacNet


def timed(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, float]]:
    """``(min, median)`` wall time (s) of each ``fn``, runs interleaved so that load from other
    processes hits all of them alike; two warm-up runs each."""
    for fn in fns:
        fn()
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return [(min(t), statistics.median(t)) for t in times]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--points", type=int, default=100)
    p.add_argument("--activation", default="leaky_relu")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--structure", choices=["invertible", "orientation"], default="invertible")
    p.add_argument("--train-steps", type=int, default=200, help="pre-training before timing")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = JacNet(1, 1, 64, 1, args.structure, activation=args.activation,
                   x0=torch.zeros(1), y0=torch.ones(1))
    # a partly trained model, as mid-training
    x = torch.linspace(-2, 2, args.points)[:, None]
    y = torch.exp(x)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(args.train_steps):
        loss = (model(x) - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    ref64 = JacNet(1, 1, 64, 1, args.structure, activation=args.activation)
    ref64.load_state_dict(model.state_dict())
    ref64 = ref64.double()
    with torch.no_grad():
        exact = ref64(x.double(), n=1024)

    def error(method: str, **opts: object) -> float:
        with torch.no_grad():
            return (ref64(x.double(), method=method, **opts) - exact).abs().max().item()

    dopri = {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5}
    err_dopri = error(**dopri)
    n = 4
    while n < 256 and error("gauss-legendre", n=n) > err_dopri:
        n *= 2
    gl = {"method": "gauss-legendre", "n": n}
    err_gl = error(**gl)

    opt = torch.optim.Adam(model.parameters(), lr=1e-7)  # tiny steps: same problem each run

    def step(opts: dict) -> Callable[[], int]:
        def run() -> int:
            res = model.integrate(x, **opts)
            loss = (res.value - y).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            return res.n_evals
        return run

    cases = [("dopri5 rtol=atol=1e-5", dopri, err_dopri), (f"Gauss–Legendre n={n}", gl, err_gl)]
    evals = [step(opts)() for _, opts, _ in cases]
    times = timed([step(opts) for _, opts, _ in cases], args.repeats)
    rows = [(c[0], e, c[2], t) for c, e, t in zip(cases, evals, times)]
    speedup = (rows[0][3][0] / rows[1][3][0], rows[0][3][1] / rows[1][3][1])

    x_inv = torch.linspace(-1, 1, args.points)[:, None]  # inverse on the training range
    with torch.no_grad():
        yq = model(x_inv, n=256)
        inv_cases = [("inverse, dopri5 rtol=atol=1e-5", {"rtol": 1e-5, "atol": 1e-5}),
                     ("inverse, RK4 64 steps", {"method": "rk4", "steps": 64})]
        results = [model.solve_inverse(yq, **o) for _, o in inv_cases]
        inv_times = timed([lambda o=o: model.solve_inverse(yq, **o) for _, o in inv_cases],
                          max(5, args.repeats // 3))
    inv_rows = [(c[0], r.n_evals, (r.value - x_inv).abs().max().item(), t)
                for c, r, t in zip(inv_cases, results, inv_times)]

    print(f"JacNet(1, 1, 64, {args.structure}, {args.activation}), {args.points} points, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print("| method | Jacobian evals per point | max abs error | time min / median (ms) | "
          "speed-up min / median |")
    print("|---|---|---|---|---|")
    base = rows[0][3]
    for name, evals, err, (tmin, tmed) in rows:
        print(f"| training step, {name} | {evals} | {err:.1e} | {tmin * 1e3:.2f} / "
              f"{tmed * 1e3:.2f} | {base[0] / tmin:.1f}× / {base[1] / tmed:.1f}× |")
    for name, evals, err, (tmin, tmed) in inv_rows:
        print(f"| {name} | {evals} | {err:.1e} (round trip) | {tmin * 1e3:.2f} / "
              f"{tmed * 1e3:.2f} | – |")
    ok = "met" if min(speedup) >= 10 else "NOT met"
    print(f"\nGauss–Legendre vs dopri5 per training step: {speedup[0]:.1f}× (min times), "
          f"{speedup[1]:.1f}× (medians) faster; target ≥ 10×: {ok}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
