"""Speed of DifferentialMLP's analytic Jacobians / Hessians against torch.func, one run.

Setting of issue 7: batch 1024, 3 hidden layers of 128 (softplus), float32, 2 threads,
(n, m) in {(2, 1), (2, 2), (16, 1), (16, 16)}. Every time is also given as a multiple of the
plain forward pass of the same row, and the speed-up of this package over the best
torch.func method. Prints a Markdown table.

    .venv/bin/python benchmarks/diffnet.py [--repeats 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.func import hessian, jacfwd, jacrev, vmap

from gradsurrogate.diffnet import DifferentialMLP

SHAPES = ((2, 1), (2, 2), (16, 1), (16, 16))


def timeit(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time (s) of ``fn`` over ``repeats`` runs after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_row(n: int, m: int, batch: int, repeats: int) -> dict[str, float]:
    """Times (ms) for one (n, m) row; Hessian entries only when m == 1."""
    gen = torch.Generator().manual_seed(0)
    net = DifferentialMLP(n, m, width=128, depth=3, activation="softplus", generator=gen)
    x = torch.randn(batch, n, generator=gen)
    f = net.value
    t: dict[str, float] = {}
    with torch.no_grad():
        t["forward"] = timeit(lambda: f(x), repeats)
        t["J ours"] = timeit(lambda: net(x), repeats)
        t["J jacrev"] = timeit(lambda: vmap(jacrev(f))(x), repeats)
        t["J jacfwd"] = timeit(lambda: vmap(jacfwd(f))(x), repeats)
        if m == 1:
            t["H ours"] = timeit(lambda: net(x, hessian=True), repeats)
            t["H hessian"] = timeit(lambda: vmap(hessian(f))(x), repeats)

    def train_ours() -> None:
        net.zero_grad(set_to_none=True)
        y, jac = net(x)
        (y.square().mean() + jac.square().mean()).backward()

    def train_func(jac_fn: Callable) -> Callable[[], None]:
        def step() -> None:
            net.zero_grad(set_to_none=True)
            jac = vmap(jac_fn(f))(x)
            (f(x).square().mean() + jac.square().mean()).backward()

        return step

    t["train ours"] = timeit(train_ours, repeats)
    t["train jacrev"] = timeit(train_func(jacrev), repeats)
    t["train jacfwd"] = timeit(train_func(jacfwd), repeats)
    return {k: 1e3 * v for k, v in t.items()}


def to_markdown(rows: dict[tuple[int, int], dict[str, float]]) -> str:
    """Markdown table: ms and ×forward per method, plus speed-ups over torch.func."""

    def cell(r: dict[str, float], key: str) -> str:
        if key not in r:
            return "–"
        return f"{r[key]:.2f} ({r[key] / r['forward']:.1f}×)"

    cols = ["forward", "J ours", "J jacrev", "J jacfwd", "H ours", "H hessian",
            "train ours", "train jacrev", "train jacfwd"]
    head = ["(n, m)", *cols, "J speed-up", "H speed-up", "train speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (n, m), r in rows.items():
        j_up = min(r["J jacrev"], r["J jacfwd"]) / r["J ours"]
        h_up = f"{r['H hessian'] / r['H ours']:.2f}×" if "H ours" in r else "–"
        tr_up = min(r["train jacrev"], r["train jacfwd"]) / r["train ours"]
        cells = [f"({n}, {m})", *(cell(r, c) for c in cols), f"{j_up:.2f}×", h_up,
                 f"{tr_up:.2f}×"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = {(n, m): bench_row(n, m, args.batch, args.repeats) for n, m in SHAPES}
    print(f"batch {args.batch}, 3×128 softplus, float32, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; times in ms (multiple of the forward pass); "
          "speed-up = best torch.func time / this package's time\n")
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
