"""``gradsurrogate jacnet {exp,abs,2d,100d,all}``: the JacNet experiments (resumable).

1-d runs train on seeds 0..N-1 (the table: median, mean ± std and the worst-case guarantee
check) and on ``--figure-seed`` (the figure), on the reference's protocol by default
(``--points even``: linspace training points; ``--points random`` draws them). Each seed is
one record of ``OUT/results.jsonl``, its per-step losses lines of ``OUT/history.jsonl``;
rerunning skips finished runs; the report is rebuilt from the records into ``OUT/report.md``
(figures in ``OUT/figures/``) and printed. ``all`` runs exp, abs and 2d. The experiment is the
positional argument or ``--experiment`` (the form a W&B sweep passes). ``--method``, ``--lr``,
``--hidden`` and ``--activation`` apply to the 2-d run too (its own defaults otherwise: tanh
units, ``--steps-2d`` steps). ``gradsurrogate jacnet 100d --help`` lists the 100-d flags
(minibatches, epochs, per-epoch logs and checkpoints: an interrupted run resumes after its last
epoch). Bad values exit with status 2 and ``gradsurrogate jacnet: error:``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradsurrogate.cli import (
    RaisingParser,
    add_common_flags,
    config_flags,
    config_from_args,
    flag_names,
    run_command,
    set_threads,
)
from gradsurrogate.registry import check_choice, check_int
from gradsurrogate.runs import RunStore
from gradsurrogate.tracking import WANDB_MODES

from .exp1d import Config1D
from .experiment import CHOICES, Plan, record_key, run_plans
from .highdim import Config100D
from .plane import Config2D
from .report import write_report

PART = "jacnet"  # the part marker of the folders this command writes

__all__ = ["build_parser", "main", "parse_plan", "plan_from_args", "report_main", "run_sweep"]

#: 1-d flags that also set the 2-d run when given
SHARED_2D = ("method", "lr", "hidden", "activation", "anneal")
_HELPS = {
    "method": "training integrator: gauss-legendre or dopri5 (the reference's); also 2-d",
    "lr": "Adam learning rate (also 2-d)",
    "hidden": "hidden units (also 2-d)",
    "activation": "hidden activation (also 2-d; 2-d default tanh)",
    "steps": "1-d training steps (full batch)",
    "n_train": "1-d training points", "n_test": "1-d test points",
    "train_range": "1-d training interval lo,hi", "test_range": "1-d test interval lo,hi",
    "dtype": "1-d dtype: float32 or float64",
    "grid": "1-d points of the guarantee check on the test interval",
    "inverse_tol": "dopri5 rtol = atol of the learned inverse (1-d)",
    "points": "1-d training points: even (linspace, the reference) or random (uniform draws)",
    "eps": "ε of the invertible structure (1-d exp)",
    "anneal": "annealing threshold scale: sum (batch sum of |y|, the reference) or mean; "
              "also 2-d",
}
_HELPS_100D = {
    "dim": "input = output dimension", "box": "inputs uniform in [-box, box]^dim",
    "epochs": "passes over the training set", "batch_size": "minibatch size (0: full batch)",
    "eps": "ε of the invertible structure", "models": "structures trained side by side",
    "n_inverse": "test points inverted (round trip)",
    "refine": "quasi-Newton steps after the inverse ODE",
    "n_train": "training points", "n_test": "test points", "hidden": "hidden units",
    "activation": "hidden activation", "lr": "Adam learning rate",
    "method": "training integrator: gauss-legendre or dopri5",
    "anneal": "annealing threshold scale: sum (batch sum of |y|, the reference) or mean",
    "inverse_tol": "dopri5 rtol = atol of the inverse ODE",
    "max_nodes": "cap of the Gauss-Legendre training node schedule (4..64)",
}


def _experiment_of(argv: list[str]) -> str | None:
    """``100d`` when ``argv`` names it (positional, ``--experiment 100d`` or
    ``--experiment=100d``): it picks the 100-d flag set; else ``None`` (the 1-d/2-d flags)."""
    return "100d" if any(a in ("100d", "--experiment=100d") for a in argv) else None


def build_parser(raising: bool = False, experiment: str | None = None) -> argparse.ArgumentParser:
    """The flags of ``experiment`` (``100d``: its own; otherwise the 1-d/2-d ones)."""
    cls = RaisingParser if raising else argparse.ArgumentParser
    p = cls(prog="gradsurrogate jacnet", allow_abbrev=False, description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="?", choices=CHOICES, help="which experiment to run")
    p.add_argument("--experiment", dest="experiment_flag", metavar="{" + ",".join(CHOICES) + "}",
                   help="the experiment as a flag (same as the positional)")
    d = Plan()
    if experiment == "100d":
        p.add_argument(*flag_names("seeds"), dest="seeds", type=int, metavar="N",
                       help=f"seeds 0..N-1 (default: {d.seeds_100d})")
        config_flags(p, Config100D, skip=("seed",), helps=_HELPS_100D)
    else:
        p.add_argument(*flag_names("seeds"), dest="seeds", type=int, metavar="N",
                       help=f"1-d: seeds 0..N-1 in the table (default: {d.seeds})")
        p.add_argument(*flag_names("figure_seed"), dest="figure_seed", type=int, metavar="SEED",
                       help=f"1-d: seed drawn in the figure (default: {d.figure_seed})")
        p.add_argument(*flag_names("steps_2d"), dest="steps_2d", type=int, metavar="STEPS",
                       help=f"2-d training steps (default: {d.config_2d.steps})")
        config_flags(p, Config1D, skip=("target", "seed"), helps=_HELPS)
    add_common_flags(p, "runs/jacnet", "gradsurrogate-jacnet")
    return p


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The validated :class:`Plan` of parsed flags (``ValueError`` naming a bad value)."""
    pos, flag = args.experiment, args.experiment_flag
    if flag is not None:
        check_choice(flag, CHOICES, "experiment")
    if pos is not None and flag is not None and pos != flag:
        raise ValueError(f"two experiments given: {pos!r} and --experiment {flag!r}")
    experiment = pos or flag
    if experiment is None:
        raise ValueError(f"no experiment given; pass one of {', '.join(CHOICES)} "
                         "(positional or --experiment)")
    if experiment == "100d":
        if not hasattr(args, "epochs"):
            raise ValueError("100d flags were parsed with the 1-d parser; use parse_plan")
        kw100: dict[str, Any] = {"config_100d": config_from_args(Config100D, args)}
        if args.seeds is not None:
            kw100["seeds_100d"] = check_int(args.seeds, "--seeds", 1)
        return Plan.for_experiment(experiment, **kw100)
    base = config_from_args(Config1D, args)
    kw_2d: dict[str, Any] = {k: getattr(args, k) for k in SHARED_2D
                             if getattr(args, k) is not None}
    if args.steps_2d is not None:
        kw_2d["steps"] = check_int(args.steps_2d, "--steps-2d", 1)
    kw: dict[str, Any] = {"base_1d": base, "config_2d": Config2D(**kw_2d)}
    for name in ("seeds", "figure_seed"):
        value = getattr(args, name)
        if value is not None:
            kw[name] = check_int(value, f"--{name.replace('_', '-')}", 1 if name == "seeds" else 0)
    return Plan.for_experiment(experiment, **kw)


def parse_plan(argv: list[str], raising: bool = False) -> tuple[Plan, argparse.Namespace]:
    """``(plan, args)`` of a command line: the experiment picks the flag set."""
    args = build_parser(raising, _experiment_of(list(argv))).parse_args(list(argv))
    return plan_from_args(args), args


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        import sys

        plan, args = parse_plan(sys.argv[1:] if argv is None else list(argv))
        set_threads(args.threads)
        with RunStore(args.out, part=PART) as store:  # writable + locked before training
            records = run_plans([plan], store, args.wandb, args.wandb_project)
            text = write_report(store.out, [plan], records)
        print(text, flush=True)
        return 0

    return run_command("jacnet", body)


def run_sweep(argvs: list[list[str]], out: str, common: argparse.Namespace) -> int:
    """Run every sweep line (the ``--name=value`` flags of ``gradsurrogate jacnet``, the
    experiment as ``--experiment=X`` or positional) resumably in ``out``; write one report.

    Every line is parsed and validated first: a bad line is a ``ValueError`` naming it, raised
    before any run. ``common`` carries ``wandb``, ``wandb_project`` and ``threads``; the same
    flags inside a line are ignored. Runs shared by several lines train once.
    """
    plans = []
    for i, argv in enumerate(argvs, 1):
        try:
            plans.append(parse_plan(list(argv), raising=True)[0])
        except ValueError as err:
            raise ValueError(f"sweep line {i} ({' '.join(argv)}): {err}") from None
    wandb = getattr(common, "wandb", None)
    if wandb is not None:
        check_choice(wandb, WANDB_MODES, "W&B mode")
    threads = getattr(common, "threads", None)
    set_threads(1 if threads is None else threads)
    with RunStore(out, part=PART) as store:
        records = run_plans(plans, store, wandb,
                            getattr(common, "wandb_project", None) or "gradsurrogate-jacnet")
        text = write_report(store.out, plans, records)
    print(text, flush=True)
    return 0


def report_main(argv: Sequence[str]) -> int:
    """``gradsurrogate report DIR [EXPERIMENT] [jacnet flags]``: rebuild ``DIR/report.md`` and
    its figures for the runs those flags describe (default: every experiment at its default
    settings) from the stored records. Trains nothing: a run missing from ``DIR`` is an error
    naming the command that finishes it."""

    def body() -> int:
        args = list(argv)
        folder = next((a for a in args if not a.startswith("-") and Path(a).is_dir()), None)
        if folder is None:
            raise ValueError("give the results folder: gradsurrogate report DIR [jacnet flags]")
        rest = [a for a in args if a != folder]
        if not any(a in CHOICES or a.startswith("--experiment") for a in rest):
            rest = ["all", *rest]
        plan, _ = parse_plan(rest, raising=True)
        with RunStore(folder, part=PART) as store:
            stored = store.records()
            keys = {record_key(cfg) for cfg in plan.configs()}
            missing = sorted(keys - set(stored))
            if missing:
                raise ValueError(f"{folder!r} lacks {len(missing)} of the {len(keys)} runs of "
                                 f"this report (e.g. {missing[0]}); run `gradsurrogate jacnet "
                                 f"{' '.join(rest)} --out {folder}` to finish them")
            text = write_report(store.out, [plan], {k: stored[k] for k in keys})
        print(text, flush=True)
        return 0

    return run_command("report", body)
