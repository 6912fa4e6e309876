"""``gradsurrogate diffnet``: the reference's sin(x) / cos(x)·sin(y) experiments.

Trains (resumably) every requested activation × loss variant, then writes ``table.md``
(reference format, next to the reference's numbers) and one PNG per problem × activation
into ``--out``. Defaults are the reference's setting; ``--recipe tuned`` swaps its AMSGrad
at constant lr for plain Adam with a cosine-annealed lr; ``--quick`` is a CI-sized run.

    gradsurrogate diffnet --problem all --out runs/diffnet
    gradsurrogate diffnet --problem all --recipe tuned --out runs/diffnet_tuned
    gradsurrogate diffnet --problem sin1d --activations relu tanh --quick
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import torch

from gradsurrogate.activations import ACTIVATIONS
from gradsurrogate.diffnet.config import HIDDEN_LRS, LOSSES, RECIPES, SCHEDULES, ExperimentConfig
from gradsurrogate.diffnet.experiment import run_experiment
from gradsurrogate.diffnet.problems import PROBLEMS
from gradsurrogate.tracking import Tracker

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    defaults = ExperimentConfig()
    p = argparse.ArgumentParser(prog="gradsurrogate diffnet", description=__doc__.splitlines()[0])
    p.add_argument("--problem", choices=[*PROBLEMS, "all"], default="all")
    p.add_argument("--activations", nargs="+", choices=sorted(ACTIVATIONS),
                   default=list(defaults.activations))
    p.add_argument("--losses", nargs="+", choices=LOSSES, default=list(defaults.losses))
    p.add_argument("--out", default="runs/diffnet", help="results / table / figures directory")
    p.add_argument("--quick", action="store_true", help="CI-sized run (width 32, 3 epochs)")
    p.add_argument("--epochs", type=int, default=None, help=f"default {defaults.epochs}")
    p.add_argument("--width", type=int, default=None, help=f"default {defaults.width}")
    p.add_argument("--n-train", type=int, default=None, help=f"default {defaults.n_train}")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--inits", type=int, default=None,
                   help="independently initialised members per loss, trained on the same "
                        "batches; the report adds their median [min, max] (default 1)")
    p.add_argument("--recipe", choices=RECIPES, default="reference",
                   help="optimiser settings: the reference's (AMSGrad, constant lr 1e-3) or "
                        "tuned (Adam, lr 3e-3 cosine-annealed to 3e-6); flags below override")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate")
    p.add_argument("--no-amsgrad", dest="amsgrad", action="store_const", const=False,
                   default=None, help="plain Adam instead of AMSGrad")
    p.add_argument("--schedule", choices=SCHEDULES, default=None, help="learning-rate schedule")
    p.add_argument("--lr-final", type=float, default=None,
                   help="cosine schedule: final lr as a fraction of the initial one")
    p.add_argument("--hidden-lr", choices=HIDDEN_LRS, default=None,
                   help="fan_in: hidden-to-hidden matrices learn at lr / fan-in (μP's Adam rule); "
                        "freq: hidden layers of a periodic activation cos(ωa) at lr / ω (no effect "
                        "for other activations)")
    p.add_argument("--gain-hidden", type=float, default=None,
                   help="xavier gain of the hidden layers (default √2, or √2/ω if periodic)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="record the test MSEs every N epochs (learning-curve figure; training "
                        "is unchanged, but a stored result without curves is retrained); "
                        "default off")
    p.add_argument("--dtype", choices=["float32", "float64"], default=defaults.dtype)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild table.md and figures from stored results")
    p.add_argument("--include-unfinished", action="store_true",
                   help="also report unfinished runs from their checkpoints (marked)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--wandb", choices=["disabled", "offline", "online"], default=None,
                   help="default: offline unless a W&B API key is configured")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    problems = list(PROBLEMS) if args.problem == "all" else [args.problem]
    out = Path(args.out)
    results = {}
    if not args.report_only:
        for name in problems:
            cfg = ExperimentConfig(problem=name, activations=tuple(args.activations),
                                   losses=tuple(args.losses), seed=args.seed,
                                   dtype=args.dtype).with_recipe(args.recipe)
            cfg = cfg.quick() if args.quick else cfg
            overrides = {k: getattr(args, k) for k in ("epochs", "width", "n_train", "lr", "inits",
                                                       "amsgrad", "schedule", "lr_final",
                                                       "gain_hidden", "eval_every", "hidden_lr")
                         if getattr(args, k) is not None}
            cfg = replace(cfg, **overrides)
            tracker = Tracker(args.wandb, "gradsurrogate-diffnet", {"problem": name, **vars(args)},
                              name=f"diffnet-{name}")
            try:
                results[name] = run_experiment(cfg, out, tracker.log)
            finally:
                tracker.finish()
    from gradsurrogate.diffnet.report import write_report

    command = "gradsurrogate diffnet " + shlex.join(sys.argv[1:] if argv is None else argv)
    table = write_report(out, problems, figures=not args.no_figures, command=command.strip(),
                         include_checkpoints=args.include_unfinished)
    print(table)
    return 0
