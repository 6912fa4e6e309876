"""Forward+backward cost of SurrogateLinear vs nn.Linear, per backward mode.

Setting of issue 3: batch 512, 1024 -> 1024, float32, 2 threads. Each row is the median over
interleaved repeats of (surrogate time / nn.Linear time) measured in the same run, and the bytes
the layer saves for backward beyond what nn.Linear saves. Targets: exact <= 1.10x,
sign/flip/blend <= 1.5x, exact saves nothing extra.

``--ensemble E`` times ``EnsembleSurrogateLinear`` (E members, the XOR grid's small layers by
default: batch 64, 16 -> 16) against the plain batched ``baddbmm`` autograd layer instead.

    python benchmarks/layers.py [--repeats 30] [--threads 2] [--ensemble 32 --features 16]
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


def ratios(candidates: dict, ref, x, go, repeats: int, params: list) -> dict[str, list[float]]:
    """Per candidate: (its time / the reference's), interleaved, after one warm-up each."""
    results: dict[str, list[float]] = {k: [] for k in candidates}
    for fn in [ref, *candidates.values()]:
        time_step(fn, x, go)
    for _ in range(repeats):
        for key, fn in candidates.items():
            t_ref = time_step(ref, x, go)
            results[key].append(time_step(fn, x, go) / t_ref)
        for p in [x, *params]:
            p.grad = None
    return results


def ensemble_main(args: argparse.Namespace) -> None:
    """Ensemble layer vs ``baddbmm`` with plain autograd (same parameters)."""
    e, n, d = args.ensemble, args.batch, args.features
    layers = {mode: gs.EnsembleSurrogateLinear(e, d, d, spec=mode, generator=0)
              for mode in ("exact", "grad_input=sign", "grad_input=flip:0.3",
                           "grad_weight=blend:0.5")}
    w, b = (p.detach().clone().requires_grad_() for p in layers["exact"].parameters())
    for layer in layers.values():
        layer.load_state_dict(layers["exact"].state_dict())
    ref = lambda x: torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
    x = torch.randn(e, n, d, requires_grad=True)
    go = torch.randn(e, n, d)
    params = [w, b, *(p for m in layers.values() for p in m.parameters())]
    results = ratios(layers, ref, x, go, args.repeats, params)
    t_ref_ms = 1e3 * statistics.median(time_step(ref, x, go) for _ in range(10))
    print(f"baddbmm forward+backward: {t_ref_ms:.3f} ms (ensemble {e}, batch {n}, {d}->{d}, "
          f"float32, {args.threads} threads)\n")
    print("| spec | time / baddbmm |")
    print("|---|---|")
    for spec, r in results.items():
        print(f"| {spec} | {statistics.median(r):.2f}× |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="default 512 (64 with --ensemble)")
    ap.add_argument("--features", type=int, default=None,
                    help="default 1024 (16 with --ensemble)")
    ap.add_argument("--ensemble", type=int, default=0, help="members; 0: single layers")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.ensemble:
        args.batch, args.features = args.batch or 64, args.features or 16
        return ensemble_main(args)
    args.batch, args.features = args.batch or 512, args.features or 1024
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
    params = [*ref.parameters(), *(q for f in layers.values() for q in f.parameters())]
    results = ratios(candidates, ref, x, go, args.repeats, params)

    t_ref_ms = 1e3 * statistics.median(time_step(ref, x, go) for _ in range(10))
    print(f"nn.Linear forward+backward: {t_ref_ms:.2f} ms "
          f"(batch {n}, {d}->{d}, float32, {args.threads} threads)\n")
    print("| target | mode | time / nn.Linear | extra saved for backward | target |")
    print("|---|---|---|---|---|")
    for (target, mode), rs in results.items():
        fn = candidates[(target, mode)]
        extra = saved_bytes(lambda fn=fn: fn(x)) - ref_bytes
        goal = "≤ 1.10×" if mode.startswith("exact") else (
            "≤ 1.5×" if mode.split(":")[0] in ("sign", "flip", "blend") else "—")
        print(f"| {target} | {mode} | {statistics.median(rs):.2f}× | {extra} B | {goal} |")


if __name__ == "__main__":
    main()
