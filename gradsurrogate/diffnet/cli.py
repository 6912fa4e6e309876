"""``gradsurrogate diffnet``: the reference's sin(x) / cos(x)·sin(y) experiments.

Trains (resumably, into ``--out`` through :class:`gradsurrogate.runs.RunStore`) every
requested activation × loss variant, then writes ``table.md`` (reference format, next to the
reference's numbers) and one PNG per problem × activation. Defaults are the reference's
setting; ``--recipe tuned`` swaps its AMSGrad at constant lr for plain Adam with a
cosine-annealed lr; ``--quick`` is a CI-sized run; single flags override both. A run whose
loss stops being finite is stopped and reported as ``diverged@EPOCH`` (exit status 0).
Bad values exit 2 with ``gradsurrogate diffnet: error: ...``.

    gradsurrogate diffnet --problem all --out runs/diffnet
    gradsurrogate diffnet --problem all --recipe tuned --out runs/diffnet_tuned
    gradsurrogate diffnet --problem sin1d --activations relu tanh --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from typing import Any

from gradsurrogate.cli import (
    add_common_flags,
    config_flags,
    config_from_args,
    flag_names,
    parse_bool,
    run_command,
    set_threads,
)
from gradsurrogate.diffnet.config import RECIPES, ExperimentConfig
from gradsurrogate.diffnet.problems import DIFFNET_PROBLEMS
from gradsurrogate.diffnet.store import run_experiment
from gradsurrogate.registry import check_choice
from gradsurrogate.runs import RunStore, check_writable
from gradsurrogate.tracking import Tracker

__all__ = ["build_parser", "configs_from_args", "main", "run_sweep"]

_SWITCHES = {
    "quick": "CI-sized run (width 32, 1,024 samples, 3 epochs); single flags override it",
    "restart": "discard the stored results and checkpoints of the selected runs and train "
               "them again (e.g. after a damaged file)",
    "report_only": "only rebuild table.md and figures from the stored runs",
    "include_unfinished": "also report unfinished runs from their checkpoints (marked)",
    "no_figures": "write table.md only",
}


class _LineParser(argparse.ArgumentParser):
    """A parser whose errors are ``ValueError`` (for sweep lines)."""

    def error(self, message: str) -> Any:
        raise ValueError(message)


def build_parser(cls: type[argparse.ArgumentParser] = argparse.ArgumentParser
                 ) -> argparse.ArgumentParser:
    p = cls(prog="gradsurrogate diffnet", allow_abbrev=False,
            description=__doc__.splitlines()[0])
    p.add_argument("--problem", default="all",
                   help=f"{', '.join(DIFFNET_PROBLEMS)} or all (default: all)")
    p.add_argument("--recipe", default="reference",
                   help="optimiser settings: the reference's (AMSGrad, constant lr 1e-3) or "
                        "tuned (Adam, lr 3e-3 cosine-annealed to 3e-6); single flags override "
                        f"(accepted: {', '.join(RECIPES)}; default: reference)")
    for name, text in _SWITCHES.items():
        p.add_argument(*flag_names(name), dest=name, nargs="?", const=True, default=False,
                       type=parse_bool, metavar="BOOL", help=text)
    config_flags(p, ExperimentConfig, skip=("problem",))
    p.add_argument(*flag_names("no_amsgrad"), dest="amsgrad", action="store_const", const=False,
                   help="plain Adam instead of AMSGrad (= --amsgrad false)")
    add_common_flags(p, "runs/diffnet", "gradsurrogate-diffnet")
    return p


def _problems(args: argparse.Namespace) -> list[str]:
    check_choice(args.problem, [*DIFFNET_PROBLEMS, "all"], "problem")
    return list(DIFFNET_PROBLEMS) if args.problem == "all" else [args.problem]


def configs_from_args(args: argparse.Namespace) -> list[ExperimentConfig]:
    """One config per problem: defaults, then ``--recipe``, then ``--quick``, then the
    single flags given (validated once, by :class:`ExperimentConfig`)."""
    out = []
    for problem in _problems(args):
        base = ExperimentConfig(problem=problem).with_recipe(args.recipe)
        base = base.quick() if args.quick else base
        filled = argparse.Namespace(**{
            f.name: getattr(base, f.name) if getattr(args, f.name, None) is None
            else getattr(args, f.name) for f in dataclasses.fields(ExperimentConfig)})
        out.append(config_from_args(ExperimentConfig, filled, problem=problem))
    return out


def _train(cfgs: list[ExperimentConfig], store: RunStore, args: argparse.Namespace,
           common: argparse.Namespace) -> list[dict]:
    """Train (resumably) every config; one W&B run per config, given the resolved config."""
    records = []
    for cfg in cfgs:
        tracker = Tracker(common.wandb, common.wandb_project, dataclasses.asdict(cfg),
                          name=f"diffnet-{cfg.problem}")
        try:
            done = run_experiment(cfg, store, tracker.log, restart=args.restart)
            tracker.summary({f"{a}/{loss}/test_{k}": v for a, r in done.items()
                             for loss, mse in r["mse"].items() for k, v in mse.items()}
                            | {f"{a}/diverged": r["diverged"] for a, r in done.items()})
        finally:
            tracker.finish()
        records += done.values()
    return records


def _report(out: str, problems: list[str], args: argparse.Namespace, command: str,
            records: list[dict]) -> None:
    from gradsurrogate.diffnet.report import write_report

    print(write_report(out, problems, figures=not args.no_figures, command=command,
                       include_checkpoints=args.include_unfinished))
    bad = [f"{r['problem']}/{r['activation']} " + ", ".join(
        f"{loss}@{e}" for loss, e in r["diverged_losses"].items()) for r in records
        if r["diverged"]]
    if bad:
        print(f"{len(bad)} run(s) diverged (loss not finite; stopped, recorded in "
              f"{out}/results.jsonl, no arrays stored): {'; '.join(bad)}")


def _body(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    problems, command = _problems(args), "gradsurrogate diffnet " + shlex.join(argv)
    if args.report_only:  # no lock: reports a folder (and its subfolders) while runs write
        check_writable(args.out)
        _report(args.out, problems, args, command, [])
        return 0
    cfgs = configs_from_args(args)
    set_threads(args.threads)
    with RunStore(args.out) as store:  # --out writable and ours before any training
        _report(args.out, problems, args, command, _train(cfgs, store, args, args))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0, or 2 for a bad value)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command("diffnet", lambda: _body(argv))


def run_sweep(argvs: list[list[str]], out: str, common: argparse.Namespace) -> int:
    """Run the lines of a sweep (each the ``--name=value`` flags of ``gradsurrogate diffnet``)
    into ``out``, resumably and one after another, then write the report. Every line is
    parsed first: a bad one is a ``ValueError`` naming it, before any training."""
    plans = []
    for i, line in enumerate(argvs, 1):
        try:
            args = build_parser(_LineParser).parse_args(line)
            if args.report_only:
                raise ValueError("--report-only is not a sweep parameter")
            plans.append((args, configs_from_args(args)))
        except ValueError as err:
            raise ValueError(f"sweep line {i} ({shlex.join(line)}): {err}") from None
    set_threads(common.threads)
    problems = list(dict.fromkeys(c.problem for _, cfgs in plans for c in cfgs))
    with RunStore(out) as store:
        records = [r for args, cfgs in plans for r in _train(cfgs, store, args, common)]
        opts = argparse.Namespace(no_figures=any(a.no_figures for a, _ in plans),
                                  include_unfinished=False)
        _report(out, problems, opts, f"gradsurrogate sweep ({len(argvs)} lines)", records)
    return 0
