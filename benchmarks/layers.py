"""Forward+backward cost of SurrogateLinear vs nn.Linear, per backward mode.

Setting of issue 3: batch 512, 1024 -> 1024, float32, 2 threads. Each row is the median over
interleaved repeats of (surrogate time / nn.Linear time) measured in the same run, and the bytes
the layer saves for backward beyond what nn.Linear saves. Targets: exact <= 1.10x,
sign/flip/blend <= 1.5x, exact saves nothing extra.

    python benchmarks/layers.py [--repeats 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import gradsurrogate as gs
from gradsurrogate.functional import LinearOp, Plan, SurrogateFunction


def saved_bytes(fn) -> int:
    """Bytes of distinct tensor storages autograd saves while running ``fn``."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def time_step(layer_fn, x, go) -> float:
    t0 = time.perf_counter()
    y = layer_fn(x)
    y.backward(go)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--features", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, d = args.batch, args.features
    ref = nn.Linear(d, d)
    x = torch.randn(n, d, requires_grad=True)
    go = torch.randn(n, d)

    rows: list[tuple[str, str]] = [("all", "exact")]
    for target in gs.TARGETS:
        for mode in ("sign", "flip:0.3", "blend:0.5"):
            rows.append((target, mode))
    rows += [("weight", "random"), ("grad_weight", "none"), ("grad_input", "none")]

    def make(target: str, mode: str):
        spec = gs.BackwardSpec() if target == "all" else gs.BackwardSpec(**{target: mode})
        layer = gs.SurrogateLinear(d, d, spec=spec, generator=0)
        layer.load_state_dict(ref.state_dict())
        return layer

    layers = {r: make(*r) for r in rows}
    plan = Plan(LinearOp(), gs.BackwardSpec())
    forced = lambda x: SurrogateFunction.apply(x, ref.weight, ref.bias, None, plan)
    candidates = {("all", "exact (Function path)"): forced, **layers}

    ref_bytes = saved_bytes(lambda: ref(x))
    results: dict[tuple[str, str], list[float]] = {k: [] for k in candidates}
    for fn in [ref, *candidates.values()]:  # warm-up
        time_step(fn, x, go)
    for _ in range(args.repeats):
        for key, fn in candidates.items():
            t_ref = time_step(ref, x, go)
            t = time_step(fn, x, go)
            results[key].append(t / t_ref)
        x.grad = None
        for p in [*ref.parameters(), *(q for f in layers.values() for q in f.parameters())]:
            p.grad = None

    t_ref_ms = 1e3 * statistics.median(time_step(ref, x, go) for _ in range(10))
    print(f"nn.Linear forward+backward: {t_ref_ms:.2f} ms "
          f"(batch {n}, {d}->{d}, float32, {args.threads} threads)\n")
    print("| target | mode | time / nn.Linear | extra saved for backward | target |")
    print("|---|---|---|---|---|")
    for (target, mode), ratios in results.items():
        fn = candidates[(target, mode)]
        extra = saved_bytes(lambda fn=fn: fn(x)) - ref_bytes
        goal = "≤ 1.10×" if mode.startswith("exact") else (
            "≤ 1.5×" if mode.split(":")[0] in ("sign", "flip", "blend") else "—")
        print(f"| {target} | {mode} | {statistics.median(ratios):.2f}× | {extra} B | {goal} |")


if __name__ == "__main__":
    main()
