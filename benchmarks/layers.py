"""Forward+backward cost of surrogate layers vs the unconverted torch model, per backward mode.

``--model resnet18`` / ``--model transformer`` (issue 13): a whole training step (forward,
cross-entropy, backward) of a zoo model converted with each spec, against the unconverted model
(same weights) in the same run, plus "biotorch-style FA": the autograd Function per layer a user
would otherwise write for feedback alignment (backward ``grad_output @ B``) on the same
``nn.Linear``/``nn.Conv2d`` layers. Feedback-alignment modes are discovered from
``gradsurrogate.backward.MODES`` at run time. Targets: exact <= 1.05x, sign/random/FA family
<= 1.3x, flip <= 1.5x, FA not slower than biotorch-style FA.

``--model linear`` (default), setting of issue 3: batch 512, 1024 -> 1024, float32, 2 threads.
Each row is the median over interleaved repeats of (surrogate time / nn.Linear time)
measured in the same run, and the bytes the layer saves for backward beyond what nn.Linear
saves. Targets: exact <= 1.10x, sign/flip/blend <= 1.5x, exact saves nothing extra.

``--ensemble E`` times ``EnsembleSurrogateLinear`` (E members, the XOR grid's small layers by
default: batch 64, 16 -> 16) against the plain batched ``baddbmm`` autograd layer instead.

    python benchmarks/layers.py [--repeats 30] [--threads 2] [--ensemble 32 --features 16]
    python benchmarks/layers.py --model resnet18 [--batch 16 --size 64] [--repeats 15]
    python benchmarks/layers.py --model transformer [--batch 16 --seq 64] [--repeats 15]

On a shared, oversubscribed machine pass ``--threads 1``: with 2 threads OpenMP's spin-waits
made one unconverted ResNet step 10x slower and the ratios meaningless.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import gradsurrogate as gs
from gradsurrogate import zoo
from gradsurrogate.backward import MODES, FeedbackMode
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


class BiotorchFA(torch.autograd.Function):
    """The baseline: what a user writes for FA without this package (biotorch's layers).

    Forward ``F.linear``/``F.conv2d``; backward ``grad_input = grad_output @ B`` (linear) or the
    transposed convolution with ``B`` (conv), exact weight and bias gradients.
    """

    @staticmethod
    def forward(ctx, x, w, b, fb, conv):
        ctx.save_for_backward(x, w, fb)
        ctx.conv, ctx.has_bias = conv, b is not None
        return F.linear(x, w, b) if conv is None else F.conv2d(x, w, b, **conv)

    @staticmethod
    def backward(ctx, g):
        x, w, fb = ctx.saved_tensors
        gi = gw = gb = None
        if ctx.conv is None:
            g2 = g.reshape(-1, g.shape[-1])
            if ctx.needs_input_grad[0]:
                gi = g @ fb
            if ctx.needs_input_grad[1]:
                gw = g2.T @ x.reshape(-1, x.shape[-1])
            if ctx.has_bias and ctx.needs_input_grad[2]:
                gb = g2.sum(0)
        else:
            if ctx.needs_input_grad[0]:
                gi = torch.nn.grad.conv2d_input(x.shape, fb, g, **ctx.conv)
            if ctx.needs_input_grad[1]:
                gw = torch.nn.grad.conv2d_weight(x, w.shape, g, **ctx.conv)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                gb = g.sum((0, 2, 3))
        return gi, gw, gb, None, None


class BiotorchLayer(nn.Module):
    """Wraps one ``nn.Linear``/``nn.Conv2d`` (sharing its parameters) with a fixed ``B``."""

    def __init__(self, layer: nn.Module, fb: torch.Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("fb", fb.detach().clone())
        self.conv = None if isinstance(layer, nn.Linear) else dict(
            stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
            groups=layer.groups)

    def forward(self, x):
        return BiotorchFA.apply(x, self.layer.weight, self.layer.bias, self.fb, self.conv)


def biotorch_convert(model: nn.Module, fa_model: nn.Module) -> nn.Module:
    """Replace every exact ``nn.Linear``/``nn.Conv2d`` by a :class:`BiotorchLayer` whose ``B``
    is the feedback matrix ``fa_model`` (converted with ``weight=fa``) holds at that name."""
    fbs = {n: m.feedback for n, m in fa_model.named_modules() if getattr(m, "feedback", None)
           is not None}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) in (nn.Linear, nn.Conv2d) and full in fbs:
                setattr(module, child_name, BiotorchLayer(child, fbs[full]))
    return model


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"{names[0]} ({len(names)} cores visible)"
    except (OSError, IndexError):
        return "unknown CPU"


def model_specs() -> dict[str, str]:
    """Row label -> spec: the grad_input perturbations and every feedback mode in MODES."""
    specs = {"exact": "exact", "sign": "grad_input=sign", "flip:0.1": "grad_input=flip:0.1",
             "blend:0.5": "grad_input=blend:0.5"}
    for name, cls in MODES.items():
        if isinstance(cls, type) and issubclass(cls, FeedbackMode):
            specs[name] = f"weight={name}"
    return specs


def _goal(label: str) -> str:
    if label == "exact":
        return "≤ 1.05×"
    if label.startswith("flip"):
        return "≤ 1.5×"
    if label.startswith("blend"):
        return "—"
    return "≤ 1.3×"


def model_main(args: argparse.Namespace) -> None:
    """Training-step time of every converted zoo model / the unconverted one (interleaved)."""
    torch.manual_seed(0)
    n = args.batch or 16
    if args.model == "resnet18":
        base = zoo.resnet18_like(num_classes=10)
        data = (torch.randn(n, 3, args.size, args.size),)
        what = f"resnet18_like (width 64, 11.2M params), batch {n}, {args.size}x{args.size}"
    else:
        base = zoo.transformer_encoder(vocab=1000, d_model=128, nhead=4, num_layers=4,
                                       dim_feedforward=512, num_classes=10, max_len=args.seq)
        data = (torch.randint(0, 1000, (n, args.seq)),)
        what = (f"transformer_encoder (4 layers, d_model 128, 4 heads, ff 512), batch {n}, "
                f"{args.seq} tokens")
    base.train()
    target = torch.randint(0, 10, (n,))
    candidates: dict[str, nn.Module] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, spec in model_specs().items():
            candidates[label] = gs.convert(copy.deepcopy(base), spec, generator=0)
        if "fa" in candidates:
            # the same layers biotorch converts (exact nn.Linear / nn.Conv2d), same B
            same = lambda name, m: "weight=fa" if type(m) in (nn.Linear, nn.Conv2d) else None
            fa_lc = gs.convert(copy.deepcopy(base), same, generator=0)
            if sum(isinstance(m, gs.SurrogateMixin) for m in fa_lc.modules()) != \
                    sum(isinstance(m, gs.SurrogateMixin) for m in candidates["fa"].modules()):
                candidates["fa (Linear/Conv2d only)"] = fa_lc
            candidates["biotorch-style FA"] = biotorch_convert(copy.deepcopy(base), fa_lc)

    def step(model: nn.Module):
        return lambda _x: F.cross_entropy(model(*data), target)

    if args.only:
        keep = {k.strip() for k in args.only.split(",")}
        candidates = {k: m for k, m in candidates.items() if k in keep}
    load0 = os.getloadavg()[0]
    fns = {k: step(m) for k, m in candidates.items()}
    ref = step(base)
    params = [p for m in [base, *candidates.values()] for p in m.parameters()]
    dummy = torch.zeros(())
    results = ratios(fns, ref, dummy, None, args.repeats, params)
    t_ref = statistics.median(time_step(ref, dummy, None) for _ in range(5))
    print(f"{what}; unconverted forward+backward {1e3 * t_ref:.0f} ms; float32, train mode, "
          f"{args.threads} threads, torch {torch.__version__}, {cpu_name()}, "
          f"{args.repeats} interleaved repeats (median, [p25, p75]); load average "
          f"{load0:.1f} at start, {os.getloadavg()[0]:.1f} at end\n")
    print("| spec | time / unconverted | target |")
    print("|---|---|---|")
    for label, rs in results.items():
        q = statistics.quantiles(rs, n=4) if len(rs) > 1 else [rs[0]] * 3
        spec = model_specs().get(label, "")
        name = f"{label} (`{spec}`)" if spec and spec != label else label
        print(f"| {name} | {statistics.median(rs):.2f}× [{q[0]:.2f}, {q[2]:.2f}] | "
              f"{_goal(label) if 'biotorch' not in label else 'baseline'} |")
    bio = results.get("biotorch-style FA")
    for label in ("fa", "fa (Linear/Conv2d only)"):
        if bio and label in results:
            quot = [a / b for a, b in zip(results[label], bio)]
            print(f"\n{label} / biotorch-style FA: {statistics.median(quot):.2f}× (median over "
                  f"repeats; target ≤ 1.00×)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("linear", "resnet18", "transformer"), default="linear")
    ap.add_argument("--size", type=int, default=64, help="resnet18 input side (default 64)")
    ap.add_argument("--seq", type=int, default=64, help="transformer sequence length")
    ap.add_argument("--only", default=None,
                    help="comma-separated row labels to time (e.g. 'fa,biotorch-style FA')")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None,
                    help="default 512 (64 with --ensemble, 16 with --model)")
    ap.add_argument("--features", type=int, default=None,
                    help="default 1024 (16 with --ensemble)")
    ap.add_argument("--ensemble", type=int, default=0, help="members; 0: single layers")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model != "linear":
        return model_main(args)
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
