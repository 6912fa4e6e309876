"""Online Jacobian restoration on the XOR MLP.

Every linear layer's backward uses a ``learned`` feedback matrix ``B`` restored on the fly from
directional probes of that layer's forward (``grad_input = grad_output @ B``; ``W`` is never read
in the backward). Compared on the same seeds with exact backprop, fixed random feedback
(``weight=random``) and sign feedback (``weight=sign``). Reports test accuracy and, per layer,
the cosine between the ``grad_input`` used and the true one over training (and ``cos(B, W)``).

    .venv/bin/python experiments/restore_online_xor.py --out runs/restore_online_xor
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import gradsurrogate as gs
from gradsurrogate.io import write_json_atomic, write_text_atomic
from gradsurrogate.restore.online import OnlineRestorer

try:  # the shared XOR data generator (gradsurrogate.xor)
    from gradsurrogate.xor.data import make_xor_split
except ImportError:  # pragma: no cover - minimal local stand-in with the same distribution
    def make_xor_split(n_train, n_test, sigma, label_noise, seed, dtype=None, device=None):
        g = torch.Generator().manual_seed(seed)
        out = []
        for n in (n_train, n_test):
            blob = torch.randint(0, 4, (n,), generator=g)
            c = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
            x = c[blob] + sigma * torch.randn(n, 2, generator=g)
            y = ((blob == 1) | (blob == 2)).long()
            y = torch.where(torch.rand(n, generator=g) < label_noise, 1 - y, y)
            out.append(type("D", (), {"x": x, "y": y})())
        return tuple(out)

METHODS = ("exact", "random", "sign", "learned")


def make_mlp(depth: int, width: int, seed: int) -> nn.Sequential:
    """``depth`` hidden Linear+GELU layers of ``width`` and a Linear(width, 2) output."""
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    sizes = [2] + [width] * depth
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.GELU()]
    layers.append(nn.Linear(width, 2))
    for m in layers:
        if isinstance(m, nn.Linear):
            bound = 1 / math.sqrt(m.in_features)
            with torch.no_grad():
                m.weight.copy_((2 * torch.rand(m.weight.shape, generator=g) - 1) * bound)
                m.bias.copy_((2 * torch.rand(m.bias.shape, generator=g) - 1) * bound)
    return nn.Sequential(*layers)


def run(method: str, seed: int, args: argparse.Namespace) -> dict:
    train, test = make_xor_split(args.n_train, args.n_test, args.sigma, args.label_noise, seed)
    model = make_mlp(args.depth, args.width, seed)
    restorer = None
    if method == "learned":
        restorer = OnlineRestorer(model, loss=args.loss, dim_sample=args.dim_sample_frac,
                                  points=args.points, lr=args.restore_lr,
                                  steps=args.restore_steps, seed=seed,
                                  warmup_steps=args.warmup, cotangents=args.cotangents)
        restorer.warmup(train.x[: args.batch], model)
    else:
        spec = {"exact": "exact", "random": "weight=random", "sign": "weight=sign"}[method]
        gs.convert(model, spec, generator=seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(seed + 10_000)
    curve = []
    for step in tqdm(range(1, args.steps + 1), desc=f"{method}/{seed}", disable=None,
                     leave=False):
        idx = torch.randint(0, len(train.y), (args.batch,), generator=g)
        x, y = train.x[idx], train.y[idx]
        record = step % args.eval_every == 0 or step == 1
        if record:
            with gs.record_gradients(model) as rec:
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
        else:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
        opt.step()
        if restorer is not None:
            restorer.step()
        if record:
            with torch.no_grad():
                acc = (model(test.x).argmax(-1) == test.y).float().mean().item()
            cos = {key.rsplit("/", 1)[0]: m["cosine"] for key, m in rec.summary().items()
                   if key.endswith("/grad_input")}
            entry = {"step": step, "loss": loss.item(), "test_acc": acc, "grad_input_cos": cos}
            if restorer is not None:
                entry["B_cos"] = {k: v["cosine"] for k, v in restorer.metrics().items()}
                entry["jvp_evals"] = restorer.jvp_evals
            curve.append(entry)
    return {"method": method, "seed": seed, "final_test_acc": curve[-1]["test_acc"],
            "curve": curve}


def summarise(results: list[dict]) -> str:
    lines = ["| method | final test acc (mean ± sd) | per-layer grad_input cosine: final "
             "| mean over training | probes/step |", "|---|---|---|---|---|"]
    for method in METHODS:
        rs = [r for r in results if r["method"] == method]
        if not rs:
            continue
        accs = [r["final_test_acc"] for r in rs]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        layers = sorted(rs[0]["curve"][-1]["grad_input_cos"])
        fin = ", ".join(
            f"{k}: {statistics.mean(r['curve'][-1]['grad_input_cos'][k] for r in rs):.3f}"
            for k in layers)
        avg = ", ".join(
            f"{k}: {statistics.mean(c['grad_input_cos'][k] for r in rs for c in r['curve']):.3f}"
            for k in layers)
        last = rs[0]["curve"][-1]
        probes = (f"{last['jvp_evals'] / last['step']:.0f}" if "jvp_evals" in last else "–")
        lines.append(f"| {method} | {statistics.mean(accs):.3f} ± {sd:.3f} | {fin} | {avg} | "
                     f"{probes} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    from gradsurrogate.io import save_figure

    layers = sorted(results[0]["curve"][-1]["grad_input_cos"])
    fig = Figure(figsize=(3.4 * (1 + len(layers)), 3.0))
    axes = fig.subplots(1, 1 + len(layers))
    colors = dict(zip(METHODS, ("k", "tab:orange", "tab:green", "tab:blue")))
    for r in results:
        steps = [c["step"] for c in r["curve"]]
        lab = r["method"] if r["seed"] == results[0]["seed"] else None
        axes[0].plot(steps, [c["test_acc"] for c in r["curve"]], color=colors[r["method"]],
                     lw=1, label=lab)
        for ax, layer in zip(axes[1:], layers):
            ax.plot(steps, [c["grad_input_cos"][layer] for c in r["curve"]],
                    color=colors[r["method"]], lw=1)
            ax.set_title(f"grad_input cosine, layer {layer}", fontsize=9)
            ax.set_ylim(-0.2, 1.02)
    axes[0].set_title("test accuracy", fontsize=9)
    axes[0].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = ap.add_argument
    a("--seeds", type=int, nargs="*", default=[0, 1, 2])
    a("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    a("--depth", type=int, default=2)
    a("--width", type=int, default=32)
    a("--steps", type=int, default=1500)
    a("--batch", type=int, default=64)
    a("--lr", type=float, default=1e-2)
    a("--n-train", type=int, default=512)
    a("--n-test", type=int, default=2048)
    a("--sigma", type=float, default=0.5)
    a("--label-noise", type=float, default=0.05)
    a("--loss", default="mse", help="restoration loss")
    a("--dim-sample-frac", type=float, default=0.25, help="dim_sample as a fraction of fan-in")
    a("--points", type=int, default=1, help="probe points per restoration step")
    a("--restore-lr", type=float, default=2e-2)
    a("--restore-steps", type=int, default=1, help="restoration updates per training step")
    a("--warmup", type=int, default=0, help="restoration rounds before training")
    a("--cotangents", choices=["gaussian", "real"], default="gaussian")
    a("--eval-every", type=int, default=50)
    a("--threads", type=int, default=1)
    a("--out", default="runs/restore_online_xor")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [run(m, s, args) for m in args.methods for s in args.seeds]
    table = summarise(results)
    write_json_atomic(out / "results.json", {"args": vars(args), "results": results})
    write_text_atomic(out / "table.md", table + "\n")
    plot(results, out / "online_xor.png")
    print(table)


if __name__ == "__main__":
    main()
