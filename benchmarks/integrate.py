"""Benchmark: JacNet line integrals, the adaptive default vs torchdiffeq dopri5 at equal accuracy.

Speed (default): one training step (forward + L1 loss + backward + Adam step with a tiny
learning rate, so every repeat sees the same problem) of ``JacNet(1, 1, 64, invertible)``
partly fitted to exp on ``--points`` points in [-2, 2], for a kinked network (LeakyReLU, the
default) and a smooth one (tanh). Rows: the adaptive default (``line_integral``'s tolerance for
the dtype), torchdiffeq dopri5 batched (all points one ODE state, as ``method="dopri5"``) and
per point (one solve per point, as the reference code), each at the loosest tolerance of
1e-3, 1e-4, ... 1e-10 that meets the same requirement (every point within the adaptive's
tolerance ``max(atol, rtol·|∫|)``) and, batched, also the one whose max error is not above the
adaptive's achieved error (on smooth networks the adaptive overshoots its tolerance by orders
and float32 dopri5 may not get there: then its tightest is shown, marked), and fixed-node
Gauss–Legendre at the smallest n in 16, 32, ... 4096 that is as accurate. Errors are against
``scipy.integrate.quad`` per point (float64, epsabs = epsrel = 1e-12, the network's kinks as
break points). Times: medians over interleaved repeats (per-point dopri5: fewer repeats).

Accuracy (``--accuracy``): the issue's cases, default LeakyReLU JacNets (invertible and
10·tanh baseline on exp, 1-Lipschitz and unconstrained on |x|) fitted for 50 Adam steps on 5
evenly spaced points in [-1, 1], seeds 0..4; forward error on 101 points of [-2, 2] of the old
default (16 Gauss–Legendre nodes) and of the adaptive default in float64 and float32.

Inverse (``--inverse``): round trip ``inverse(forward(x))`` on [-1, 1] of the LeakyReLU
``invertible`` and ``orientation`` models, dopri5 (rtol = atol = 1e-5) and RK4 (64 steps).

Run: ``python benchmarks/integrate.py [--threads 1] [--repeats 15] [--dtype float64]
[--accuracy | --inverse]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import quad

from gradsurrogate.integrate import DEFAULT_TOLERANCES, AdaptiveWarning
from gradsurrogate.jacnet import JacNet

LADDER = [10.0**-k for k in range(3, 11)]
PIECEWISE_LINEAR = ("leaky_relu", "relu")


def kinks(model: JacNet, a: float, b: float) -> list[float]:
    """Path parameters ``t ∈ (0, 1)`` of the kinks of a 1-hidden-layer piecewise-linear net."""
    if getattr(model.net[1], "name", None) not in PIECEWISE_LINEAR or len(model.net) != 3:
        return []
    lin = model.net[0]
    w, bias = lin.weight.detach().double()[:, 0].numpy(), lin.bias.detach().double().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -(bias + w * a) / (w * (b - a))
    return sorted(float(v) for v in t[np.isfinite(t)] if 0 < v < 1)


def quad_reference(model: JacNet, x: torch.Tensor) -> torch.Tensor:
    """``y(x) (n, 1)`` of a 1-d JacNet by ``scipy.integrate.quad`` per point, float64."""
    m64 = copy.deepcopy(model).double()
    a = float(m64.x0[0])
    out = []
    for b in x[:, 0].double().tolist():
        def g(t: float, b: float = b) -> float:
            with torch.no_grad():
                c = torch.tensor([[a + t * (b - a)]], dtype=torch.float64)
                return float(m64.jacobian(c)[0, 0, 0]) * (b - a)
        v = quad(g, 0.0, 1.0, points=kinks(m64, a, b) or None, epsabs=1e-12, epsrel=1e-12,
                 limit=500)[0] if b != a else 0.0
        out.append(v + float(m64.y0[0]))
    return torch.tensor(out, dtype=torch.float64)[:, None]


def timed(fns: list[Callable[[], object]], repeats: list[int]) -> list[float]:
    """Median wall time (s) of each ``fn``: rounds interleave all of them (a function stops
    after its own number of repeats) so that load from other processes hits all alike; one
    warm-up run each except for single-repeat (slow) ones."""
    for fn, r in zip(fns, repeats):
        if r > 1:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(max(repeats)):
        for k, fn in enumerate(fns):
            if r < repeats[k]:
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def fitted(activation: str, structure: str, f: Callable[[torch.Tensor], torch.Tensor],
           x: torch.Tensor, steps: int, seed: int, **opts: object) -> JacNet:
    """A JacNet anchored at ``(0, f(0))`` fitted to ``f`` on ``x`` by Adam (lr 0.01, L1) through
    32 Gauss–Legendre nodes."""
    torch.manual_seed(seed)
    y = f(x)
    model = JacNet(1, 1, 64, 1, structure, activation=activation, x0=torch.zeros(1),
                   y0=f(torch.zeros(1)), **opts)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss = (model(x, n=32) - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def speed(activation: str, args: argparse.Namespace) -> list[tuple]:
    """Rows ``(method, tolerance, error, evals, calls, median s)`` for one network."""
    x = torch.linspace(-2, 2, args.points)[:, None]
    y = torch.exp(x)
    model = fitted(activation, "invertible", torch.exp, x, args.train_steps, args.seed,
                   eps=1e-4)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    model, x, y = model.to(dtype), x.to(dtype), y.to(dtype)
    ref = quad_reference(model, x)

    def err(values: torch.Tensor) -> float:
        return (values.double() - ref).abs().max().item()

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", AdaptiveWarning)
        res = model.integrate(x)
        e_ad = err(res.value)
        rtol, atol = DEFAULT_TOLERANCES[x.dtype]
        tol_p = (rtol * (res.value - model.y0).double().abs()).clamp_min(atol)
        cases = [("adaptive (default)", f"rtol {rtol:g}, atol {atol:g}", e_ad, res.n_evals,
                  res.n_calls, lambda: model.integrate(x))]
        batched = lambda t: model.integrate(x, method="dopri5", rtol=t, atol=t)
        # the same requirement (every point within the adaptive's tolerance), then the same
        # achieved error
        for name, run, ok in (
                ("dopri5 batched, same requirement", batched,
                 lambda v: bool(((v.double() - ref).abs() <= tol_p).all())),
                ("dopri5 batched, same error", batched, lambda v: err(v) <= e_ad),
                ("dopri5 per point, same requirement", lambda t: _pp(model, x, t),
                 lambda v: bool(((v.double() - ref).abs() <= tol_p).all())))[
                    : 3 if args.per_point_repeats else 2]:
            for tol in LADDER:
                out = run(tol)
                if ok(out.value) or tol == LADDER[-1]:
                    break
            note = "" if ok(out.value) else " (not reached)"
            cases.append((name, f"rtol = atol = {tol:g}{note}", err(out.value), out.n_evals,
                          out.n_calls, lambda run=run, tol=tol: run(tol)))
        n = 16
        while n < 4096 and err(model(x, n=n)) > e_ad:
            n *= 2
        cases.append((f"Gauss–Legendre n = {n}, same error", "fixed", err(model(x, n=n)), n, 1,
                      lambda n=n: model.integrate(x, n=n)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-9)

    def step(integrate: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            loss = (integrate().value - y).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return run

    reps = [args.per_point_repeats if "per point" in c[0] else args.repeats for c in cases]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdaptiveWarning)
        times = timed([step(c[5]) for c in cases], reps)
    return [(*c[:5], t) for c, t in zip(cases, times)]


class _Joined:
    """Per-point dopri5 results joined as one ``IntegralResult``-like object."""

    def __init__(self, parts: list) -> None:
        self.value = torch.cat([p.value for p in parts])
        self.n_evals = round(sum(p.n_evals for p in parts) / len(parts))
        self.n_calls = sum(p.n_calls for p in parts)


def _pp(model: JacNet, x: torch.Tensor, tol: float) -> _Joined:
    return _Joined([model.integrate(x[j : j + 1], method="dopri5", rtol=tol, atol=tol)
                    for j in range(x.shape[0])])


CASES = [("exp", torch.exp, "invertible", {"eps": 1e-4}), ("exp", torch.exp, "none",
         {"bound": 10.0}), (r"\|x\|", torch.abs, "lipschitz", {"k": 1.0}), (r"\|x\|", torch.abs,
         "none", {})]


def accuracy(seeds: int) -> None:
    """Forward error of the issue's cases: old default vs adaptive default (float64/32)."""
    xt = torch.linspace(-1, 1, 5)[:, None]
    xe = torch.linspace(-2, 2, 101)[:, None]
    print("| target | structure | GL n = 16 error (float64) | adaptive error float64 | "
          "error estimate (max) | points with error > estimate | evals / point (mean, max) | "
          "calls | GL n as accurate | adaptive rel. error float32 | evals float32 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for target, f, structure, opts in CASES:
        cols: list[list[float]] = [[] for _ in range(10)]
        for seed in range(seeds):
            m = fitted("leaky_relu", structure, f, xt, 50, seed, **opts)
            ref = quad_reference(m, xe)
            m64, x64 = copy.deepcopy(m).double(), xe.double()
            with torch.no_grad():
                r64 = m64.integrate(x64)
                r32 = m.integrate(xe)
                gl = m64(x64, n=16)
            cols[0].append((gl - ref).abs().max().item())
            cols[1].append((r64.value - ref).abs().max().item())
            cols[2].append(r64.error.max().item())
            cols[3].append(r64.evals.double().mean().item())
            cols[4].append(r64.evals.max().item())
            cols[5].append(r64.n_calls)
            cols[6].append(((r32.value.double() - ref).abs() / ref.abs().clamp_min(1)).max()
                           .item())
            cols[7].append(r32.evals.double().mean().item())
            n = 16
            with torch.no_grad():
                while n <= 4096 and (m64(x64, n=n) - ref).abs().max().item() > cols[1][-1]:
                    n *= 2
            cols[8].append(n)
            cols[9].append(int(((r64.value - ref).abs() > r64.error).sum()))
        gl_n = f"{max(cols[8])}" if max(cols[8]) <= 4096 else "> 4096"
        print(f"| {target} | {structure} | {max(cols[0]):.1e} | **{max(cols[1]):.1e}** | "
              f"{max(cols[2]):.1e} | {sum(cols[9])} of {101 * seeds} | "
              f"{statistics.mean(cols[3]):.0f}, {max(cols[4]):.0f} | "
              f"≤ {max(cols[5])} | {gl_n} | **{max(cols[6]):.1e}** | "
              f"{statistics.mean(cols[7]):.0f} |")
    print(f"\nworst over seeds 0..{seeds - 1}; reference scipy quad per point (epsabs = epsrel "
          f"= 1e-12, kinks as break points); default tolerances {DEFAULT_TOLERANCES}")


def inverse(args: argparse.Namespace) -> None:
    """Round trip ``inverse(forward(x))`` on x in [-1, 1] of models fitted as in the speed
    table: dopri5 (rtol = atol = 1e-5) and fixed-step RK4 (64 steps)."""
    x = torch.linspace(-2, 2, args.points)[:, None]
    x_inv = torch.linspace(-1, 1, args.points)[:, None]
    print("| model | method | evals / point | round-trip max error | median (ms) |")
    print("|---|---|---|---|---|")
    for structure, opts in (("invertible", {"eps": 1e-4}), ("orientation", {})):
        model = fitted("leaky_relu", structure, torch.exp, x, args.train_steps, args.seed, **opts)
        with torch.no_grad():
            yq = model(x_inv)
            for name, o in (("dopri5 rtol = atol = 1e-5", {"rtol": 1e-5, "atol": 1e-5}),
                            ("RK4, 64 steps", {"method": "rk4", "steps": 64})):
                res = model.solve_inverse(yq, **o)
                t = timed([lambda m=model, y=yq, o=o: m.solve_inverse(y, **o)], [3])[0]
                print(f"| {structure} | {name} | {res.n_evals} | "
                      f"{(res.value - x_inv).abs().max().item():.1e} | {t * 1e3:.1f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=100)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-steps", type=int, default=200, help="pre-training before timing")
    p.add_argument("--activations", default="leaky_relu,tanh")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--accuracy", action="store_true", help="the forward-error table instead")
    p.add_argument("--inverse", action="store_true", help="the inverse round-trip table instead")
    p.add_argument("--seeds", type=int, default=5, help="seeds of the accuracy table")
    p.add_argument("--per-point-repeats", type=int, default=3,
                   help="timed repeats of per-point dopri5 (seconds each; 0: leave it out)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    if args.accuracy:
        accuracy(args.seeds)
        return 0
    if args.inverse:
        inverse(args)
        return 0
    targets = {"leaky_relu": 5.0, "tanh": 10.0}
    print(f"JacNet(1, 1, 64, invertible) on exp, {args.points} points, {args.dtype}; training "
          "step = forward + L1 + backward + Adam\n")
    print("| network | method | tolerance | max abs error | Jacobian evals / point | calls | "
          "step median (ms) | adaptive faster by |")
    print("|---|---|---|---|---|---|---|---|")
    verdicts = []
    for act in args.activations.split(","):
        rows = speed(act, args)
        base = rows[0][5]
        for name, tol, e, ev, calls, t in rows:
            print(f"| {act} | {name} | {tol} | {e:.1e} | {ev} | {calls} | {t * 1e3:.2f} | "
                  f"{t / base:.1f}× |")
        ratio = rows[1][5] / base
        goal = targets.get(act, 5.0)
        verdicts.append(f"{act}: adaptive vs batched dopri5 meeting the same requirement "
                        f"{ratio:.1f}×, reaching the same error {rows[2][5] / base:.1f}× "
                        f"(target ≥ {goal:g}×: {'met' if ratio >= goal else 'NOT met'})")
    print("\n" + "\n".join(verdicts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
