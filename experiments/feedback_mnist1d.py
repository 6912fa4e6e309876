"""Backprop vs the feedback-alignment family and DFA on MNIST-1D (an MLP 40-H-H-10).

Each run is a :class:`FeedbackRun` (mode, seed, sizes, Adam settings): ``mode`` is ``exact``
(backprop), a ``weight`` mode of the family (``fa``, ``usf``, ``frsf``, ``brsf``, ``random``,
with ``:xavier`` where it applies) or a DFA spec (``dfa``, ``dfa:xavier``...). One record per
run in ``OUT/results.jsonl`` (finished runs are skipped, so the script resumes); ``OUT/table.md``
gives the final test accuracy over seeds (mean ± sd, 95% interval) and, for the layer-wise
modes, the angle between each hidden layer's feedback matrix ``B`` and its weight ``W``.

    .venv/bin/python experiments/feedback_mnist1d.py --out runs/feedback_mnist1d
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import torch
from torch import nn

import gradsurrogate as gs
from gradsurrogate.cli import set_threads
from gradsurrogate.dfa import DFASpec, apply_model_spec, is_dfa
from gradsurrogate.io import write_text_atomic
from gradsurrogate.registry import check_int, check_number
from gradsurrogate.runs import RunStore, run_id
from gradsurrogate.stats import cell_stats

MODES = ["exact", "fa", "usf", "frsf", "brsf", "fa:xavier", "dfa"]


@dataclasses.dataclass(frozen=True)
class FeedbackRun:
    mode: str = "exact"
    seed: int = 0
    hidden: int = 100
    epochs: int = 40
    batch: int = 100
    lr: float = 1e-3

    def __post_init__(self) -> None:
        text = str(DFASpec.parse(self.mode)) if is_dfa(self.mode) else \
            str(gs.BackwardSpec(weight=self.mode).weight)
        object.__setattr__(self, "mode", text)
        check_int(self.seed, "seed")
        check_int(self.hidden, "hidden", low=1)
        check_int(self.epochs, "epochs", low=1)
        check_int(self.batch, "batch", low=1)
        check_number(self.lr, "lr")


def angle(b: torch.Tensor, w: torch.Tensor) -> float:
    """Degrees between ``B`` and ``W`` as flattened vectors (0: backprop's direction)."""
    cos = torch.nn.functional.cosine_similarity(b.flatten().double(), w.flatten().double(), 0)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos.item()))))


def train(cfg: FeedbackRun, data: dict) -> dict:
    torch.manual_seed(cfg.seed)
    model = nn.Sequential(nn.Linear(40, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden),
                          nn.ReLU(), nn.Linear(cfg.hidden, 10))
    spec = cfg.mode if is_dfa(cfg.mode) else gs.BackwardSpec(weight=cfg.mode)
    model, _ = apply_model_spec(model, spec, generator=cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x, y = torch.as_tensor(data["x"]).float(), torch.as_tensor(data["y"]).long()
    gen = torch.Generator().manual_seed(cfg.seed)
    step, loss = 0, torch.tensor(0.0)
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(x), generator=gen).split(cfg.batch):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            if not torch.isfinite(loss):
                return {"diverged": True, "diverged_step": step, "test_acc": None}
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        xt, yt = torch.as_tensor(data["x_test"]).float(), torch.as_tensor(data["y_test"]).long()
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    angles = {}
    for name in ("2", "4"):  # the layers whose feedback reaches a hidden layer
        layer = model[int(name)]
        mode = layer.spec.weight
        if isinstance(mode, gs.backward.FeedbackMode) and mode.name != "brsf":
            angles[name] = angle(mode.matrix(layer.weight, layer.feedback), layer.weight)
    return {"diverged": False, "diverged_step": None, "test_acc": acc,
            "train_loss": loss.item(), "angles": angles}


def report(records: dict[str, dict], configs: list[FeedbackRun]) -> str:
    lines = ["| mode | test accuracy (mean ± sd) | 95% interval | n | angle(B, W) layers 2 / 3 |",
             "|---|---|---|---|---|"]
    for mode in dict.fromkeys(c.mode for c in configs):
        recs = [records[run_id(c)] for c in configs if c.mode == mode and run_id(c) in records]
        st = cell_stats(r["test_acc"] for r in recs)
        ang = [[r["angles"][k] for r in recs if k in r.get("angles", {})] for k in ("2", "4")]
        ang_text = " / ".join(f"{sum(a) / len(a):.0f}°" for a in ang if a) or "–"
        diverged = sum(r["diverged"] for r in recs)
        lines.append(f"| {mode} | {st.mean:.3f} ± {st.std:.3f} | [{st.low:.3f}, {st.high:.3f}] "
                     f"| {st.n}{f' ({diverged} diverged)' if diverged else ''} | {ang_text} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--out", default="runs/feedback_mnist1d")
    parser.add_argument("--modes", nargs="+", default=MODES)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=FeedbackRun.epochs)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    configs = [FeedbackRun(mode=m, seed=s, epochs=args.epochs)
               for m in args.modes for s in range(args.seeds)]
    from mnist1d.data import get_dataset_args, make_dataset
    with RunStore(args.out) as store:
        done = store.records()
        todo = [c for c in configs if run_id(c) not in done]
        data = make_dataset(get_dataset_args()) if todo else {}
        for cfg in todo:
            rec = {"run_id": run_id(cfg), "config": dataclasses.asdict(cfg), **train(cfg, data)}
            store.append([rec])
            print(cfg.mode, cfg.seed, rec["test_acc"], flush=True)
        text = report(store.records(), configs)
    write_text_atomic(f"{args.out}/table.md", text)
    print(text)


if __name__ == "__main__":
    main()
