"""DifferentialMLP's J / H / training step against torch.func on the plain MLP a user would
write (``nn.Sequential`` of ``nn.Linear`` + ``nn.Softplus`` holding the same weights).

Setting of issue 14: batch 1024, 3 hidden layers of 128 (softplus), float32, 2 threads,
rows (n, m) in {(2, 1), (2, 2), (16, 1), (1, 16), (16, 16)}. Per row every method of a
group runs once per round, the rounds interleave all methods (so load drifts hit them all
alike), and each time is the median over rounds. "×fwd" = median over rounds of
time / the plain ``nn.Sequential`` forward of the same round. The baseline of a group is
its fastest torch.func method (eager; the ``torch.compile`` d ones are listed beside it).

torch.func methods (``f`` = the plain MLP, ``x`` (B, n)):

* J: ``vmap(jacrev(f))``, ``vmap(jacfwd(f))``; ``vjp-batch``: one ``vjp`` of the batch
  with ``vmap`` over the m output rows (the "jacrev of the sum" trick, exact because
  samples do not interact); ``jvp-batch``: ``vmap`` over the n input directions of one
  ``jvp`` of the batch.
* H (m = 1): ``vmap(hessian(f))``, ``vmap(jacrev(jacrev(f)))``; ``fwd-over-rev-batch``:
  ``vmap`` over the n directions of ``jvp`` of ``grad(sum f)``.
* train: forward + backward (weight gradients) of ``mean(y²) + mean(J²)``, J by each J
  method under ordinary autograd.

Peak memory (H): the largest total of CPU allocations live at once during one call,
above what was live before it, read from ``torch.profiler``'s memory events
(``profile_memory=True``; every CPU tensor allocation and free with its size).

    .venv/bin/python benchmarks/diffnet.py [--repeats 30] [--threads 2] [--no-compile]
        [--clock wall|cpu] [--shapes 2x1,16x1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap
from torch.profiler import ProfilerActivity, profile

from gradsurrogate.diffnet import DifferentialMLP

SHAPES = ((2, 1), (2, 2), (16, 1), (1, 16), (16, 16))
Fn = Callable[[], object]


def plain_copy(net: DifferentialMLP) -> nn.Sequential:
    """The ``nn.Sequential`` (``nn.Linear`` + ``nn.Softplus``) with ``net``'s weights (E = 1)."""
    layers: list[nn.Module] = []
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        lin = nn.Linear(w.shape[2], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(w[0])
            lin.bias.copy_(b[0])
        layers.append(lin)
        if k < len(net.weights) - 1:
            layers.append(nn.Softplus())
    return nn.Sequential(*layers)


def jac_methods(f: nn.Module, x: Tensor) -> dict[str, Callable[[Tensor], Tensor]]:
    """torch.func Jacobian methods of ``f`` at a batch; each returns J (B, m, n)."""
    n, m = x.shape[1], f(x[:1]).shape[1]
    eye_m, eye_n = torch.eye(m), torch.eye(n)

    def vjp_batch(x: Tensor) -> Tensor:
        _, pull = vjp(f, x)
        rows = vmap(lambda e: pull(e.expand(x.shape[0], m))[0])(eye_m)  # (m, B, n)
        return rows.permute(1, 0, 2)

    def jvp_batch(x: Tensor) -> Tensor:
        cols = vmap(lambda v: jvp(f, (x,), (v.expand(x.shape[0], n),))[1])(eye_n)  # (n,B,m)
        return cols.permute(1, 2, 0)

    return {"vmap(jacrev)": lambda x: vmap(jacrev(f))(x),
            "vmap(jacfwd)": lambda x: vmap(jacfwd(f))(x),
            "vjp-batch": vjp_batch, "jvp-batch": jvp_batch}


def hess_methods(f: nn.Module, x: Tensor) -> dict[str, Callable[[Tensor], Tensor]]:
    """torch.func Hessian methods (m = 1); each returns H (B, 1, n, n)."""
    n = x.shape[1]
    grad_sum = grad(lambda x: f(x).sum())

    def fwd_over_rev(x: Tensor) -> Tensor:
        cols = vmap(lambda v: jvp(grad_sum, (x,), (v.expand(x.shape[0], n),))[1])(torch.eye(n))
        return cols.permute(1, 0, 2).unsqueeze(1)

    return {"vmap(hessian)": lambda x: vmap(hessian(f))(x),
            "vmap(jacrev(jacrev))": lambda x: vmap(jacrev(jacrev(f)))(x),
            "fwd-over-rev-batch": fwd_over_rev}


def compiled(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Callable | None, str]:
    """``torch.compile(fn)`` after a first call (the compile), or None and the reason."""
    try:
        c = torch.compile(fn)
        t0 = time.perf_counter()
        with torch.no_grad():
            c(x)
        return c, f"compiled in {time.perf_counter() - t0:.0f} s"
    except Exception as err:  # inductor raises many types (no compiler, unsupported op)
        return None, f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"


def peak_bytes(fn: Fn) -> int:
    """Peak of CPU bytes allocated and not yet freed during ``fn()`` (profiler events)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as fh:
            events = json.load(fh)["traceEvents"]
    mem = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    live = peak = 0
    for e in mem:
        live += e["args"]["Bytes"]
        peak = max(peak, live)
    return peak


CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU time of this process)


def interleaved(fns: dict[str, Fn], repeats: int) -> dict[str, list[float]]:
    """Times (s) of every function, one call each per round, ``repeats`` rounds."""
    for fn in fns.values():  # warm-up
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = CLOCK()
            fn()
            times[k].append(CLOCK() - t0)
    return times


def bench_row(n: int, m: int, batch: int, repeats: int, use_compile: bool) -> dict:
    """Every method of one (n, m) row: {group: {method: (ms, ×fwd)}}, notes, peak memory."""
    gen = torch.Generator().manual_seed(0)
    net = DifferentialMLP(n, m, width=128, depth=3, activation="softplus", generator=gen)
    f = plain_copy(net)
    x = torch.randn(batch, n, generator=gen)
    jm, notes = jac_methods(f, x), []
    groups: dict[str, dict[str, Fn]] = {
        "fwd": {"plain": lambda: f(x), "ours": lambda: net.value(x)},
        "J": {"ours": lambda: net(x), **{k: (lambda g=g: g(x)) for k, g in jm.items()}},
    }
    hm = hess_methods(f, x) if m == 1 else {}
    if hm:
        groups["H"] = {"ours": lambda: net(x, hessian=True),
                       **{k: (lambda g=g: g(x)) for k, g in hm.items()}}
    if use_compile:
        for group, name, fn in (("fwd", "plain", f), ("J", "vmap(jacrev)", jm["vmap(jacrev)"]),
                                ("H", "vmap(hessian)", hm.get("vmap(hessian)"))):
            if fn is None:
                continue
            c, why = compiled(fn, x)
            notes.append(f"({n}, {m}) compile {group} {name}: {why}")
            if c is not None:
                groups[group][f"compile {name}"] = lambda c=c: c(x)

    def train(jac_fn: Callable[[], tuple[Tensor, Tensor]], params: list[Tensor]) -> Fn:
        def step() -> None:
            for p in params:
                p.grad = None
            y, jac = jac_fn()
            (y.square().mean() + jac.square().mean()).backward()
        return step

    with torch.no_grad():  # every method computes the same J / H
        ref = {"J": net(x)[1], "H": net(x, hessian=True)[2] if hm else None}
        for g, d in (("J", jm), ("H", hm)):
            for k, fn in d.items():
                torch.testing.assert_close(fn(x).reshape(ref[g].shape), ref[g],
                                           rtol=1e-4, atol=1e-4, msg=f"{g} {k}")
    groups["train"] = {"ours": train(lambda: net(x), list(net.parameters()))}
    for k in ("vmap(jacrev)", "vjp-batch", "jvp-batch"):
        groups["train"][k] = train(lambda k=k: (f(x), jm[k](x)), list(f.parameters()))
    with torch.no_grad():
        fns = {(g, k): fn for g, d in groups.items() if g != "train" for k, fn in d.items()}
        times = interleaved({f"{g}|{k}": fn for (g, k), fn in fns.items()}, repeats)
    times |= interleaved({f"train|{k}": fn for k, fn in groups["train"].items()}, repeats)
    base = times["fwd|plain"]
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for key, ts in times.items():
        g, k = key.split("|")
        ratio = statistics.median(t / b for t, b in zip(ts, base))
        out.setdefault(g, {})[k] = (1e3 * statistics.median(ts), ratio)
    mem = {}
    if hm:
        with torch.no_grad():
            mem = {k: peak_bytes(fn) for k, fn in groups["H"].items() if "compile" not in k}
    return {"times": out, "notes": notes, "peak": mem}


def _best(group: dict[str, tuple[float, float]]) -> tuple[str, float]:
    eager = {k: v for k, v in group.items() if k != "ours" and not k.startswith("compile")}
    name = min(eager, key=lambda k: eager[k][1])
    return name, eager[name][1]


def to_markdown(rows: dict[tuple[int, int], dict]) -> str:
    """Per row and group: ours, best torch.func, compiled torch.func, speed-up."""
    head = ["(n, m)", "what", "ours ms (×fwd)", "best torch.func ms (×fwd)",
            "compiled torch.func ms (×fwd)", "speed-up vs best", "other torch.func ×fwd"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (n, m), row in rows.items():
        for g, group in row["times"].items():
            if g == "fwd":
                ms, r = group["ours"]
                pl = group["plain"][0]
                comp = group.get("compile plain")
                lines.append(f"| ({n}, {m}) | forward | {ms:.2f} ({r:.2f}×) | nn.Sequential "
                             f"{pl:.2f} (1.00×) | "
                             + (f"{comp[0]:.2f} ({comp[1]:.2f}×)" if comp else "–")
                             + f" | {1 / r:.2f}× | – |")
                continue
            best, ratio = _best(group)
            ours = group["ours"]
            comp = [f"{k[8:]} {v[0]:.2f} ({v[1]:.1f}×)" for k, v in group.items()
                    if k.startswith("compile")]
            others = ", ".join(f"{k} {v[1]:.1f}×" for k, v in group.items()
                               if k not in ("ours", best) and not k.startswith("compile"))
            lines.append(
                f"| ({n}, {m}) | {g} | {ours[0]:.2f} ({ours[1]:.2f}×) | {best} "
                f"{group[best][0]:.2f} ({ratio:.2f}×) | {'; '.join(comp) or '–'} | "
                f"{ratio / ours[1]:.2f}× | {others} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", default=",".join(f"{n}x{m}" for n, m in SHAPES),
                        help="rows as NxM,NxM,... (default: all five)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the torch.compile rows (each compile takes ~1 min)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: perf_counter; cpu: process CPU time, which on a loaded "
                             "machine is not inflated by waiting for a core (use with "
                             "--threads 1: with more threads it counts spin-waits too)")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    rows = {}
    for n, m in shapes:  # each row as soon as it is measured (a long run shows progress)
        rows[(n, m)] = bench_row(n, m, args.batch, args.repeats, args.compile)
        print(to_markdown({(n, m): rows[(n, m)]}).split("\n", 2)[2], flush=True)
    print(f"batch {args.batch}, 3×128 softplus, float32, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {args.repeats} interleaved rounds, {args.clock} clock; "
          "ms = median, "
          "×fwd = median ratio to the plain nn.Sequential forward of the same round; "
          "speed-up = best eager torch.func ×fwd / ours ×fwd; uptime load "
          f"{os.getloadavg()[0]:.1f} at the end\n")
    print(to_markdown(rows))
    print("\nPeak CPU memory of one H call (MB, torch.profiler memory events):")
    for (n, m), row in rows.items():
        if row["peak"]:
            print(f"- ({n}, {m}): " + ", ".join(f"{k} {v / 2**20:.1f}"
                                                for k, v in row["peak"].items()))
    for row in rows.values():
        for note in row["notes"]:
            print(f"- {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
