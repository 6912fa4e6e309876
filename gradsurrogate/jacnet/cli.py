"""``gradsurrogate jacnet {exp,abs,2d,all}``: the JacNet experiments (resumable).

1-d runs train on seeds 0..N-1 (the table: mean ± std and the worst-case guarantee check) and
on ``--figure-seed`` (the figure). Each seed is one record of ``OUT/results.jsonl``; rerunning
skips finished runs; the report is rebuilt from the records into ``OUT/report.md`` (figures in
``OUT/figures/``) and printed. The experiment is the positional argument or ``--experiment``
(the form a W&B sweep passes). ``--method``, ``--lr``, ``--hidden`` and ``--activation`` apply
to the 2-d run too (its own defaults otherwise: tanh units, ``--steps-2d`` steps); the other
run settings are 1-d only. Bad values exit with status 2 and ``gradsurrogate jacnet: error:``.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from gradsurrogate.cli import (
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
from .experiment import CHOICES, Plan, run_plans
from .plane import Config2D
from .report import write_report

__all__ = ["build_parser", "main", "plan_from_args", "run_sweep"]

#: 1-d flags that also set the 2-d run when given
SHARED_2D = ("method", "lr", "hidden", "activation")
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
}


class _RaisingParser(argparse.ArgumentParser):
    """Raises ``ValueError`` instead of printing usage and exiting (sweep lines)."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def build_parser(raising: bool = False) -> argparse.ArgumentParser:
    cls = _RaisingParser if raising else argparse.ArgumentParser
    p = cls(prog="gradsurrogate jacnet", allow_abbrev=False, description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="?", choices=CHOICES, help="which experiment to run")
    p.add_argument("--experiment", dest="experiment_flag", metavar="{exp,abs,2d,all}",
                   help="the experiment as a flag (same as the positional)")
    d = Plan()
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


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        plan = plan_from_args(args)
        set_threads(args.threads)
        with RunStore(args.out) as store:  # --out checked writable and locked before training
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
    parser = build_parser(raising=True)
    plans = []
    for i, argv in enumerate(argvs, 1):
        try:
            plans.append(plan_from_args(parser.parse_args(list(argv))))
        except ValueError as err:
            raise ValueError(f"sweep line {i} ({' '.join(argv)}): {err}") from None
    wandb = getattr(common, "wandb", None)
    if wandb is not None:
        check_choice(wandb, WANDB_MODES, "W&B mode")
    threads = getattr(common, "threads", None)
    set_threads(1 if threads is None else threads)
    with RunStore(out) as store:
        records = run_plans(plans, store, wandb,
                            getattr(common, "wandb_project", None) or "gradsurrogate-jacnet")
        text = write_report(store.out, plans, records)
    print(text, flush=True)
    return 0
