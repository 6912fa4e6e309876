"""How fast can a vectorised MNIST-1D MLP grid be on this CPU? Our paths against plain torch.

Per member and training step (process CPU time), on the shapes and cadence of the default
MNIST-1D MLP grid (40 → 100 → 100 → 10, ReLU, batch 100, Adam lr 1e-2, ``grad_input=flip:p``
with p spread over [0, 1], one noise generator per run, loss and accuracy on all 5,000
examples at step 0 and every 250 steps):

* ``ours, one by one``: :func:`gradsurrogate.xor.run_xor` per config (what ``run_grid
  --sequential`` runs, and the baseline of the issue's ≥ 8× target);
* ``ours, vectorised``: :func:`gradsurrogate.xor.vectorised.run_ensemble` on the ``--members``
  configs (one ensemble, as ``run_grid`` forms them);
* ``plain torch, one by one``: ``nn.Sequential`` of ``nn.Linear``/``nn.ReLU`` with a minimal
  flip ``autograd.Function`` after each hidden layer and ``torch.optim.Adam``: the loop a user
  writes without this library;
* ``plain torch, vectorised by hand``: the same model as ``torch.bmm`` on stacked weights
  (e, o, i), the flip Function drawing each member's noise from its own generator, one
  ``torch.optim.Adam(foreach=True)``: what an expert writes to vectorise by hand.

The last row bounds any vectorisation on this machine: ``one by one / vectorised by hand`` is
the speed-up a perfect implementation of our vectorised path could show. Repeats are
interleaved; the table shows medians and the range over repeats, in process CPU time (robust
on a shared machine) and wall time (what ``--threads 2`` on 2 cores buys).

    .venv/bin/python benchmarks/ensemble_floor.py [--members 50] [--steps 500] [--repeats 3]
        [--sample 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsurrogate.xor import XorConfig, run_xor
from gradsurrogate.xor.vectorised import run_ensemble

SIZES = [(40, 100), (100, 100), (100, 10)]
EVAL_EVERY = 250  #: the default grid's evaluation interval (over train + test: 5,000 examples)


class _Flip(torch.autograd.Function):
    """Identity forward; backward flips each element of the gradient with probability p,
    drawing u ~ U[0, 1) per member from that member's generator (as our flip mode does)."""

    @staticmethod
    def forward(h: Tensor, p: Tensor, gens: list[torch.Generator]) -> Tensor:
        return h.view_as(h)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.p, ctx.gens = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx, g: Tensor):
        u = torch.empty_like(g)
        if len(ctx.gens) == 1:
            u.uniform_(generator=ctx.gens[0])
        else:
            for k, gen in enumerate(ctx.gens):
                u[k].uniform_(generator=gen)
        return torch.where(u < ctx.p, -g, g), None, None


def _data(e: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """5,000 examples per member: the first 4,000 train, all 5,000 evaluated."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(e, 5000, 40, generator=g), torch.randint(0, 10, (e, 5000), generator=g)


@torch.no_grad()
def _evaluate(forward: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> None:
    """Loss and accuracy over all examples, in blocks of 1,000 rows (as our runs report)."""
    for k in range(0, x.shape[-2], 1000):
        logits = forward(x[..., k:k + 1000, :])
        F.cross_entropy(logits.reshape(-1, 10), y[..., k:k + 1000].reshape(-1)).item()
        (logits.argmax(-1) == y[..., k:k + 1000]).float().mean().item()


def _sequential_forward(lin: list[nn.Linear], p: Tensor, gens: list[torch.Generator],
                        h: Tensor) -> Tensor:
    for j, m in enumerate(lin):
        h = m(h)
        if j < len(lin) - 1:
            h = _Flip.apply(torch.relu(h), p, gens)
    return h


def plain_one_by_one(ps: list[float], steps: int) -> tuple[float, float]:
    """(CPU, wall) seconds per run and step of a plain nn.Sequential loop, run after run."""
    x_all, y_all = _data(1)
    cpu, wall = time.process_time(), time.perf_counter()
    for k, p in enumerate(ps):
        torch.manual_seed(k)
        gens = [torch.Generator().manual_seed(k)]
        lin = [nn.Linear(i, o) for i, o in SIZES]
        pt = torch.tensor(p)
        opt = torch.optim.Adam([q for m in lin for q in m.parameters()], lr=1e-2)
        forward = functools.partial(_sequential_forward, lin, pt, gens)

        for step in range(steps):
            if step % EVAL_EVERY == 0:
                _evaluate(forward, x_all[0], y_all[0])
            idx = torch.randint(0, 4000, (100,))
            loss = F.cross_entropy(forward(x_all[0, idx]), y_all[0, idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        _evaluate(forward, x_all[0], y_all[0])
    n = len(ps) * steps
    return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n


def plain_vectorised(ps: list[float], steps: int) -> tuple[float, float]:
    """(CPU, wall) seconds per member and step of the same runs as one hand-written bmm
    ensemble."""
    e = len(ps)
    x_all, y_all = _data(e)
    gens = [torch.Generator().manual_seed(k) for k in range(e)]
    ws = [nn.Parameter(torch.randn(e, o, i) / i ** 0.5) for i, o in SIZES]
    bs = [nn.Parameter(torch.zeros(e, 1, o)) for _, o in SIZES]
    pt = torch.tensor(ps).reshape(e, 1, 1)
    opt = torch.optim.Adam(ws + bs, lr=1e-2, foreach=True)

    def forward(h: Tensor) -> Tensor:
        for j, (w, b) in enumerate(zip(ws, bs)):
            h = torch.baddbmm(b, h, w.transpose(1, 2))
            if j < len(ws) - 1:
                h = _Flip.apply(torch.relu(h), pt, gens)
        return h

    cpu, wall = time.process_time(), time.perf_counter()
    for step in range(steps):
        if step % EVAL_EVERY == 0:
            _evaluate(forward, x_all, y_all)
        idx = torch.randint(0, 4000, (e, 100))
        h = forward(torch.gather(x_all, 1, idx.unsqueeze(-1).expand(-1, -1, 40)))
        loss = F.cross_entropy(h.reshape(-1, 10), torch.gather(y_all, 1, idx).reshape(-1),
                               reduction="none").reshape(e, 100).mean(-1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    _evaluate(forward, x_all, y_all)
    n = e * steps
    return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n


def _configs(ps: list[float], steps: int) -> list[XorConfig]:
    base = XorConfig(task="mnist1d-mlp", steps=steps, eval_every=EVAL_EVERY, diag_every=0)
    return [base.replace(spec=f"grad_input=flip:{p:g}", seed=k) for k, p in enumerate(ps)]


def ours_one_by_one(ps: list[float], steps: int) -> tuple[float, float]:
    configs = _configs(ps, steps)
    cpu, wall = time.process_time(), time.perf_counter()
    for c in configs:
        run_xor(c)
    n = len(ps) * steps
    return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n


def ours_vectorised(ps: list[float], steps: int) -> tuple[float, float]:
    configs = _configs(ps, steps)
    cpu, wall = time.process_time(), time.perf_counter()
    run_ensemble(configs, progress=False)
    n = len(ps) * steps
    return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample", type=int, default=5,
                        help="runs timed one by one per repeat (their mean per step is used)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ps = [k / (args.members - 1) for k in range(args.members)] if args.members > 1 else [0.3]
    sample = ps[:: max(1, len(ps) // args.sample)][: args.sample]
    paths: dict[str, tuple[Callable[[list[float], int], tuple[float, float]], list[float]]] = {
        "ours, one by one": (ours_one_by_one, sample),
        "ours, vectorised": (ours_vectorised, ps),
        "plain torch, one by one": (plain_one_by_one, sample),
        "plain torch, vectorised by hand": (plain_vectorised, ps),
    }
    for fn, runs in paths.values():  # warm-up: data, imports, kernels
        fn(runs[:2], 5)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):  # interleaved
        for name, (fn, runs) in paths.items():
            times[name].append(fn(runs, args.steps))
        load.append(os.getloadavg()[0])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); MNIST-1D MLP "
          f"shapes, grad_input=flip, {args.members} members, {args.steps} steps, "
          f"{args.repeats} interleaved repeats (medians, range); one-by-one rows time "
          f"{len(sample)} runs; 1-min load {min(load):.1f}-{max(load):.1f} on "
          f"{os.cpu_count()} cores\n")
    print("| path | CPU ms per member and step | wall ms per member and step | "
          "ours one by one ÷ this (CPU / wall) |")
    print("|---|---|---|---|")
    med = {k: [statistics.median(t[i] for t in v) for i in range(2)] for k, v in times.items()}
    base = med["ours, one by one"]
    for name, v in times.items():
        cells = [f"{med[name][i] * 1e3:.3f} [{min(t[i] for t in v) * 1e3:.3f}, "
                 f"{max(t[i] for t in v) * 1e3:.3f}]" for i in range(2)]
        print(f"| {name} | {cells[0]} | {cells[1]} | {base[0] / med[name][0]:.2f}× / "
              f"{base[1] / med[name][1]:.2f}× |")
    plain = [med["plain torch, one by one"][i] / med["plain torch, vectorised by hand"][i]
             for i in range(2)]
    ours = [med["ours, vectorised"][i] / med["plain torch, vectorised by hand"][i]
            for i in range(2)]
    print(f"\nceiling of any vectorisation here (plain one by one ÷ plain vectorised): "
          f"{plain[0]:.2f}× CPU, {plain[1]:.2f}× wall; ours vectorised ÷ plain vectorised: "
          f"{ours[0]:.2f}× CPU, {ours[1]:.2f}× wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
