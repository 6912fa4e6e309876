"""``gradsurrogate diffnet``: the reference's sin(x) / cos(x)·sin(y) experiments.

Trains (resumably, into ``--out`` through :class:`gradsurrogate.runs.RunStore`) every
requested activation × loss variant, then writes ``table.md`` (reference format, next to the
reference's numbers) and one PNG per problem × activation. Defaults are the reference's
setting; ``--recipe tuned`` swaps its AMSGrad at constant lr for plain Adam with a
cosine-annealed lr; ``--quick`` is a CI-sized run; single flags override both. A run whose
loss stops being finite is stopped and reported as ``diverged@EPOCH`` (exit status 0).
Bad values exit 2 with ``gradsurrogate diffnet: error: ...``. ``--restart`` retrains stored
runs. ``gradsurrogate report DIR`` = ``gradsurrogate diffnet --report-only --out DIR``
(:func:`report_main`).

Locks: training and reports hold ``--out``'s folder lock (a busy folder exits 2), except
``--report-only --include-unfinished``, which is for watching runs that are training right
now (in ``--out`` or its subfolders): it takes no lock, reads their checkpoints and replaces
``table.md`` and the figures atomically. Parallel runs should each write their own subfolder
of ``--out``; the report of the parent merges them.

    gradsurrogate diffnet --problem all --out runs/diffnet
    gradsurrogate diffnet --problem all --recipe tuned --out runs/diffnet_tuned
    gradsurrogate diffnet --problem sin1d --activations relu tanh --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from gradsurrogate.cli import (
    RaisingParser,
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
from gradsurrogate.diffnet.store import PART, run_experiment
from gradsurrogate.registry import check_choice
from gradsurrogate.runs import RESULTS, RunStore, check_writable, read_part
from gradsurrogate.tracking import Tracker

__all__ = ["build_parser", "configs_from_args", "main", "report_main", "run_sweep"]

_SWITCHES = {
    "quick": "CI-sized run (width 32, 1,024 samples, 3 epochs); single flags override it",
    "restart": "discard the stored results and checkpoints of the selected runs and train "
               "them again (e.g. after a damaged file)",
    "report_only": "only rebuild table.md and figures from the stored runs",
    "include_unfinished": "also report unfinished runs from their checkpoints (marked)",
    "no_figures": "write table.md only",
}


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
    bad = [f"{r['problem']}/{r['activation']} " + ", ".join(  # e: 0-based diverged_step
        f"{loss} after {e} epoch(s)" for loss, e in r["diverged_losses"].items())
        for r in records if r["diverged"]]
    if bad:
        print(f"{len(bad)} run(s) diverged (loss not finite; stopped, recorded in "
              f"{out}/results.jsonl, no arrays stored): {'; '.join(bad)}")


def _has_results(out: Path, problems: list[str], checkpoints: bool) -> bool:
    """Whether ``out`` or a direct subfolder holds diffnet results of ``problems``
    (``results.jsonl``, stored ``.npz`` files, with ``checkpoints`` also ``.ckpt.pt``)."""
    if not out.is_dir():
        return False
    patterns = [f"{p}_*.npz" for p in problems]
    patterns += [f"{p}_*.ckpt.pt" for p in problems] if checkpoints else []
    for folder in [out, *(p for p in out.iterdir() if p.is_dir())]:
        if read_part(folder) not in (None, PART):
            continue
        if (folder / RESULTS).is_file() or any(next(folder.glob(g), None) for g in patterns):
            return True
    return False


def _report_only(out: str, problems: list[str], args: argparse.Namespace,
                 command: str) -> int:
    """Rebuild ``table.md`` and the figures of ``out`` from its stored runs (see the module
    docstring for the lock); ``ValueError`` for a folder without diffnet results."""
    part = read_part(out)
    if part not in (None, PART) or not _has_results(Path(out), problems,
                                                    args.include_unfinished):
        raise ValueError(f"no diffnet results in {out!r} ("
                         + (f"written by {part!r})" if part not in (None, PART) else
                            f"no {RESULTS}, stored .npz or checkpoint of "
                            f"{', '.join(problems)}); train there first: gradsurrogate "
                            f"diffnet --out {out}"))
    if args.include_unfinished:  # no lock: meant to run while training writes the folder
        check_writable(out)
        _report(out, problems, args, command, [])
        return 0
    with RunStore(out, part=PART):  # busy (a run is writing it): StoreBusyError, exit 2
        _report(out, problems, args, command, [])
    return 0


def _body(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    problems, command = _problems(args), "gradsurrogate diffnet " + shlex.join(argv)
    if args.report_only:
        return _report_only(args.out, problems, args, command)
    cfgs = configs_from_args(args)
    set_threads(args.threads)
    with RunStore(args.out, part=PART) as store:  # --out writable and ours before training
        _report(args.out, problems, args, command, _train(cfgs, store, args, args))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0, also when a run diverged: recorded and
    reported; 2 for a bad value or a busy / unwritable ``--out``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command("diffnet", lambda: _body(argv))


def report_main(argv: Sequence[str]) -> int:
    """``gradsurrogate report DIR [--problem P] [--include-unfinished] [--no-figures]``:
    rebuild DIR's ``table.md`` and figures, as ``gradsurrogate diffnet --report-only --out
    DIR``; exit 2 for a folder without diffnet results or a busy one."""

    def body() -> int:
        parser = argparse.ArgumentParser(
            prog="gradsurrogate report", allow_abbrev=False,
            description="Rebuild DIR/table.md and figures from DIR's stored diffnet runs "
                        "(= gradsurrogate diffnet --report-only --out DIR)")
        parser.add_argument("dir", help="a folder written by gradsurrogate diffnet")
        parser.add_argument("--problem", default="all",
                            help=f"{', '.join(DIFFNET_PROBLEMS)} or all (default: all)")
        for name in ("include_unfinished", "no_figures"):
            parser.add_argument(*flag_names(name), dest=name, nargs="?", const=True,
                                default=False, type=parse_bool, metavar="BOOL",
                                help=_SWITCHES[name])
        args = parser.parse_args(list(argv))
        return _report_only(args.dir, _problems(args), args,
                            "gradsurrogate report " + shlex.join(argv))

    return run_command("report", body)


def run_sweep(argvs: list[list[str]], out: str, common: argparse.Namespace) -> int:
    """Run the lines of a sweep (each the ``--name=value`` flags of ``gradsurrogate diffnet``)
    into ``out``, resumably and one after another, then write the report. Every line is
    parsed first: a bad one is a ``ValueError`` naming it, before any training."""
    plans = []
    for i, line in enumerate(argvs, 1):
        try:
            args = build_parser(RaisingParser).parse_args(line)
            if args.report_only:
                raise ValueError("--report-only is not a sweep parameter")
            plans.append((args, configs_from_args(args)))
        except ValueError as err:
            raise ValueError(f"sweep line {i} ({shlex.join(line)}): {err}") from None
    set_threads(common.threads)
    problems = list(dict.fromkeys(c.problem for _, cfgs in plans for c in cfgs))
    with RunStore(out, part=PART) as store:
        records = [r for args, cfgs in plans for r in _train(cfgs, store, args, common)]
        opts = argparse.Namespace(no_figures=any(a.no_figures for a, _ in plans),
                                  include_unfinished=False)
        _report(out, problems, opts, f"gradsurrogate sweep ({len(argvs)} lines)", records)
    return 0
