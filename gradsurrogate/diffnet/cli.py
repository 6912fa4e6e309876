"""``gradsurrogate diffnet``: the reference's sin(x) / cos(x)·sin(y) experiments.

Trains (resumably) every requested activation × loss variant, then writes ``table.md``
(reference format, next to the reference's numbers) and one PNG per problem × activation
into ``--out``. Defaults are the reference's setting; ``--quick`` is a CI-sized run.

    gradsurrogate diffnet --problem all --out runs/diffnet
    gradsurrogate diffnet --problem sin1d --activations relu tanh --quick
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from gradsurrogate.activations import ACTIVATIONS
from gradsurrogate.diffnet.experiment import LOSSES, PROBLEMS, ExperimentConfig, run_experiment

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
    p.add_argument("--dtype", choices=["float32", "float64"], default=defaults.dtype)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild table.md and figures from stored results")
    p.add_argument("--include-unfinished", action="store_true",
                   help="also report unfinished runs from their checkpoints (marked)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--wandb", choices=["disabled", "offline", "online"], default=None,
                   help="default: offline if wandb is installed and no API key, else disabled")
    return p


def _wandb_logger(mode: str | None, config: dict) -> tuple[Callable[[dict], None] | None, object]:
    """A logging callback that never raises (W&B failures must not fail a run)."""
    try:
        import wandb
    except ImportError:
        return None, None
    if mode is None:
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    if mode == "disabled":
        return None, None
    try:
        run = wandb.init(project="gradsurrogate-diffnet", mode=mode, config=config)
    except Exception as err:
        print(f"wandb disabled ({err})")
        return None, None

    def log(metrics: dict) -> None:
        try:
            run.log(metrics)
        except Exception:
            pass

    return log, run


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
                                   losses=tuple(args.losses), seed=args.seed, dtype=args.dtype)
            cfg = cfg.quick() if args.quick else cfg
            overrides = {k: v for k, v in (("epochs", args.epochs), ("width", args.width),
                                           ("n_train", args.n_train)) if v is not None}
            cfg = replace(cfg, **overrides)
            log, run = _wandb_logger(args.wandb, {"problem": name, **vars(args)})
            try:
                results[name] = run_experiment(cfg, out, log)
            finally:
                if run is not None:
                    try:
                        run.finish()
                    except Exception:
                        pass
    from gradsurrogate.diffnet.report import write_report

    command = "gradsurrogate diffnet " + shlex.join(sys.argv[1:] if argv is None else argv)
    table = write_report(out, problems, figures=not args.no_figures, command=command.strip(),
                         include_checkpoints=args.include_unfinished)
    print(table)
    return 0
