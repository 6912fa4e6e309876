"""Online restoration on deep MLPs and a CNN: learned feedback vs exact backprop, random (fa) and
sign feedback, with the END-TO-END gradient fidelity per layer.

Every ``nn.Linear`` and ``nn.Conv1d`` of the model gets a learned feedback matrix ``B``
(``grad_input = grad_output @ B``, ``W`` never read in the backward) restored from directional
probes of the layer's forward after every optimizer step
(:class:`~gradsurrogate.restore.online.OnlineRestorer`).
``learned`` is the default (``method="lsq"``: least squares on ``fan_in`` fresh probes at the
current weights, 1× the information limit per layer and step); ``learned-sgd`` is the earlier
scheme (one Adam step of the mse restoration loss on ``fan_in/4`` probes per training step).
A convolution is restored from ``⌈2 fan_in / P⌉`` probes of one input sample each (``P``
output positions: each probe gives ``P`` equations; :class:`~gradsurrogate.restore.online.
ConvRestorer`). ``--task mnist1d-cnn`` trains the MNIST-1D authors' CNN
(:class:`gradsurrogate.tasks.models.Mnist1dCNN`, 3 Conv1d × 25 channels + Linear) at the
task's settings (Adam lr 1e-2, batch 100, 2,000 steps); ``fa`` and ``random`` are the same law.
Every ``--eval-every`` steps, :func:`gradsurrogate.diagnostics.end_to_end_fidelity` compares
each weight's applied gradient with exact backprop's (cosine), and the restored ``B`` with ``W``
(cosine, the local metric the earlier experiment reported).

    .venv/bin/python benchmarks/restore_online.py --task xor --depth 6 --width 64 --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/restore_online.py --task mnist1d --depth 4 --width 128
    .venv/bin/python benchmarks/restore_online.py --task mnist1d-cnn --methods exact learned fa sign
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics

import torch
from torch import nn

import gradsurrogate as gs
from gradsurrogate.diagnostics import end_to_end_fidelity
from gradsurrogate.restore.online import OnlineRestorer

METHODS = ("exact", "random", "fa", "sign", "learned", "learned-sgd")
SPECS = {"exact": "exact", "random": "weight=random", "fa": "weight=fa", "sign": "weight=sign"}
#: per task: (steps, batch) when not given (mnist1d-cnn: the task's own settings)
TASK_DEFAULTS = {"xor": (1500, 64), "mnist1d": (1500, 64), "mnist1d-cnn": (2000, 100)}


def make_mlp(d_in: int, depth: int, width: int, d_out: int, seed: int) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise([d_in] + [width] * depth):
        layers += [nn.Linear(a, b), nn.GELU()]
    layers.append(nn.Linear(width, d_out))
    for m in layers:
        if isinstance(m, nn.Linear):
            bound = 1 / math.sqrt(m.in_features)
            with torch.no_grad():
                m.weight.copy_((2 * torch.rand(m.weight.shape, generator=g) - 1) * bound)
                m.bias.copy_((2 * torch.rand(m.bias.shape, generator=g) - 1) * bound)
    return nn.Sequential(*layers)


def make_cnn(depth: int, width: int, seed: int) -> nn.Module:
    """The MNIST-1D authors' CNN (``depth`` Conv1d of ``width`` channels), torch's init under
    ``seed`` (the global RNG is left as it was)."""
    from gradsurrogate.tasks.models import Mnist1dCNN

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Mnist1dCNN(depth, width)


def data(task: str, seed: int):
    if task == "xor":
        from gradsurrogate.xor.data import make_xor_split

        tr, te = make_xor_split(512, 2048, 0.5, 0.05, seed)
        return tr.x, tr.y, te.x, te.y
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = 42  # one fixed dataset; seeds vary the model and the batches
    d = make_dataset(args)
    f = lambda a: torch.as_tensor(a, dtype=torch.float32)
    return f(d["x"]), torch.as_tensor(d["y"]).long(), f(d["x_test"]), \
        torch.as_tensor(d["y_test"]).long()


def run(method: str, seed: int, args: argparse.Namespace) -> dict:
    xtr, ytr, xte, yte = data(args.task, seed)
    n_cls = int(ytr.max()) + 1
    if args.task == "mnist1d-cnn":
        model = make_cnn(args.depth, args.width, seed)
    else:
        model = make_mlp(xtr.shape[1], args.depth, args.width, n_cls, seed)
    restorer = None
    if method.startswith("learned"):
        sgd = method == "learned-sgd"
        restorer = OnlineRestorer(model, dim_sample=0.25 if sgd else 1.0, points=1,
                                  lr=2e-2, seed=seed, method="sgd" if sgd else "lsq")
        restorer.warmup(xtr[:args.batch], model)
        restorer.step()
    else:
        gs.convert(model, SPECS[method], generator=seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(seed + 10_000)
    e2e: dict[str, list[float]] = {}
    worst = 1.0
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(ytr), (args.batch,), generator=g)
        x, y = xtr[idx], ytr[idx]
        if step % args.eval_every == 0:
            fid = end_to_end_fidelity(
                model, lambda x=x, y=y: nn.functional.cross_entropy(model(x), y))
            for name, m in fid.items():
                if name.endswith("weight"):
                    e2e.setdefault(name, []).append(m["cosine"])
                    worst = min(worst, m["cosine"])
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if restorer is not None:
            restorer.step()
    with torch.no_grad():
        acc = (model(xte).argmax(-1) == yte).float().mean().item()
    out = {"method": method, "seed": seed, "acc": acc,
           "e2e": {k: statistics.mean(v) for k, v in e2e.items()}, "worst_e2e": worst}
    if restorer is not None:
        out["B_cos"] = min(m["cosine"] for m in restorer.metrics().values())
        out["B_rel"] = max(m["rel_error"] for m in restorer.metrics().values())
        out["probes_per_step"] = restorer.jvp_evals / (args.steps + 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=list(TASK_DEFAULTS), default="xor")
    ap.add_argument("--depth", type=int, default=None, help="default 6 (MLP), 3 (CNN)")
    ap.add_argument("--width", type=int, default=None, help="default 64 (MLP), 25 (CNN)")
    ap.add_argument("--steps", type=int, default=None, help="default 1500 (2000 mnist1d-cnn)")
    ap.add_argument("--batch", type=int, default=None, help="default 64 (100 mnist1d-cnn)")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    cnn = args.task == "mnist1d-cnn"
    args.depth = args.depth or (3 if cnn else 6)
    args.width = args.width or (25 if cnn else 64)
    steps, batch = TASK_DEFAULTS[args.task]
    args.steps, args.batch = args.steps or steps, args.batch or batch
    torch.set_num_threads(args.threads)
    print(f"{args.task}, depth {args.depth}, width {args.width}, {args.steps} Adam steps "
          f"(lr {args.lr}, batch {args.batch}), seeds {args.seeds}\n")
    print("| method | test acc mean ± sd (min) | mean end-to-end cosine per weight (layer 0..L) "
          "| worst end-to-end cosine | min cos(B, W) | max rel. error of B | probes / step |")
    print("|---|---|---|---|---|---|---|")
    per_seed: dict[str, list[float]] = {}
    for method in args.methods:
        rs = [run(method, s, args) for s in args.seeds]
        accs = [r["acc"] for r in rs]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        names = list(rs[0]["e2e"])
        per = " ".join(f"{statistics.mean(r['e2e'][n] for r in rs):.3f}" for n in names)
        b = f"{min(r['B_cos'] for r in rs):.4f}" if "B_cos" in rs[0] else "–"
        br = f"{max(r['B_rel'] for r in rs):.1e}" if "B_rel" in rs[0] else "–"
        pp = f"{rs[0]['probes_per_step']:.0f}" if "probes_per_step" in rs[0] else "–"
        print(f"| {method} | {statistics.mean(accs):.3f} ± {sd:.3f} ({min(accs):.3f}) | {per} | "
              f"{min(r['worst_e2e'] for r in rs):.3f} | {b} | {br} | {pp} |", flush=True)
        per_seed[method] = accs
    for method, accs in per_seed.items():
        print(f"{method} per seed {args.seeds}: {' '.join(f'{a:.3f}' for a in accs)}")


if __name__ == "__main__":
    main()
