"""Command-line entry points: ``gradsurrogate xor``, ``xor-grid``, ``report`` and the sweep hook.

Flags accept ``--flag value`` and ``--flag=value`` (the form ``wandb agent`` passes), with
hyphens or underscores (``--batch-size`` / ``--batch_size``). Sweep parameter names are these
flag names. Each entry point returns an exit code: 0 on success, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..backward import TARGETS, BackwardSpec, make_mode
from ..cli import (
    RaisingParser,
    add_common_flags,
    config_flags,
    config_from_args,
    flag_names,
    run_command,
    set_threads,
)
from ..registry import check_choice, check_int
from ..runs import RunStore, check_writable
from ..tasks import TASKS
from ..tracking import default_wandb_mode
from .config import OPTIMIZERS, SUB_SEEDS, XorConfig
from .grid import MAX_GROUP
from .results import finished_ids

__all__ = ["build_parser", "grid_main", "grid_parser", "parse_xor_args", "report_main",
           "run_main", "run_sweep", "task_grid_main", "task_run_main", "xor_config"]

PROJECT = "gradsurrogate-xor"

_TASK_DEFAULT = " (None: the task's default)"
_HELPS: dict[str, str] = {
    "task": f"task (data set and model): {', '.join(TASKS)}",
    "depth": "hidden layers (MLP; CNN: conv layers; Transformer: encoder layers)" + _TASK_DEFAULT,
    "width": "units per hidden layer (CNN: channels; Transformer: model width)" + _TASK_DEFAULT,
    "steps": "optimizer steps" + _TASK_DEFAULT,
    "lr": "learning rate (finite, > 0)" + _TASK_DEFAULT,
    "optimizer": f"optimizer: {', '.join(OPTIMIZERS)}",
    "batch_size": "minibatch size (0 or >= n-train: full batch)" + _TASK_DEFAULT,
    "n_train": "training examples" + _TASK_DEFAULT,
    "n_test": "test examples" + _TASK_DEFAULT,
    "sigma": "std of each blob (xor only)",
    "label_noise": "fraction of labels flipped at random, in [0, 0.5) (xor only)",
    "seed": "master seed (data, init and noise seeds default to it)",
    "data_seed": "seed of the data sets and minibatch order (None: --seed)",
    "init_seed": "seed of the weight init (None: --seed)",
    "noise_seed": "seed of the backward noise (None: --seed)",
    "eval_every": "evaluate train/test metrics every N steps" + _TASK_DEFAULT,
    "diag_every": "record gradient diagnostics every N steps (0: never)" + _TASK_DEFAULT,
}


def add_config_flags(parser: argparse.ArgumentParser, spec_flags: bool = True,
                     skip: Sequence[str] = ()) -> None:
    """Training flags (generated from :class:`XorConfig`: its defaults, one flag per field,
    except ``skip``) and, optionally, the backward-mode flags."""
    config_flags(parser, XorConfig, skip=("spec", *skip), helps=_HELPS)
    if not spec_flags:
        return
    modes = parser.add_argument_group(
        "backward modes", "MODE: exact, flip, sign, sign:rescale, blend, none, random (weight); "
        "P: flip probability or blend amount (also accepted inline: flip:0.3)")
    for target in TARGETS:
        modes.add_argument(*flag_names(target), dest=target, metavar="MODE", default=None)
        modes.add_argument(*flag_names(f"{target}_p"), dest=f"{target}_p", metavar="P",
                           type=float, default=None)
    modes.add_argument("--perturb", default=None, metavar="T[,T..]",
                       help="shorthand: apply --mode/--p to these targets ('all' = every one)")
    modes.add_argument("--mode", default=None, help="mode for --perturb targets")
    modes.add_argument("--p", type=float, default=None, help="parameter for --mode")
    modes.add_argument("--spec", default=None, metavar="SPEC",
                       help="the whole spec instead of the flags above: 'target=mode,...', "
                            "'weight=fa', or 'dfa[:INIT][:SCALE]' (direct feedback alignment)")


def spec_from_args(args: argparse.Namespace) -> BackwardSpec:
    """The backward spec of the per-target flags and the ``--perturb/--mode/--p`` shorthand."""
    modes: dict[str, Any] = {}
    for target in TARGETS:
        mode, p = getattr(args, target), getattr(args, f"{target}_p")
        if mode is None and p is not None:
            raise ValueError(f"--{target.replace('_', '-')}-p {p} needs a mode: pass "
                             f"--{target.replace('_', '-')} flip (or blend)")
        if mode is not None:
            modes[target] = make_mode(mode, p, target)
    if args.perturb is not None or args.mode is not None or args.p is not None:
        if args.perturb is None or args.mode is None:
            raise ValueError("--perturb T and --mode MODE go together (and --p P optionally)")
        names = [t.strip() for t in args.perturb.split(",") if t.strip()]
        if not names:
            raise ValueError(f"--perturb {args.perturb!r} names no target; accepted: "
                             f"{', '.join(TARGETS)}, all")
        if len(set(names)) != len(names):
            raise ValueError(f"--perturb {args.perturb!r} names a target twice")
        targets = list(TARGETS) if names == ["all"] else names
        for target in targets:
            check_choice(target, [*TARGETS, "all"], "--perturb target")
            if target in modes:
                raise ValueError(f"{target} is set both by --{target.replace('_', '-')} and by "
                                 "--perturb")
            modes[target] = make_mode(args.mode, args.p, target)
    return BackwardSpec(**modes)


def xor_config(args: argparse.Namespace, spec: BackwardSpec | None = None) -> XorConfig:
    """The :class:`XorConfig` of parsed flags (``spec`` replaces the per-target flags)."""
    whole = getattr(args, "spec", None)
    if spec is None and whole is not None:
        given = [t for t in (*TARGETS, *(f"{t}_p" for t in TARGETS), "perturb", "mode", "p")
                 if getattr(args, t, None) is not None]
        if given:
            raise ValueError(f"--spec {whole!r} gives the whole spec; leave out "
                             + ", ".join("--" + g.replace("_", "-") for g in given))
        return config_from_args(XorConfig, args, spec=whole)
    spec_text = str(spec_from_args(args) if spec is None else spec)
    return config_from_args(XorConfig, args, spec=spec_text)


def build_parser(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
                 prog: str = "gradsurrogate xor") -> argparse.ArgumentParser:
    parser = parser_class(
        prog=prog, allow_abbrev=False,
        description="Train one model of a task (default: the XOR MLP) under a backward spec "
                    "(--spec dfa: direct feedback alignment); append the record to "
                    "OUT/results.jsonl and the curves to OUT/curves.jsonl.")
    add_config_flags(parser)
    add_common_flags(parser, "runs/xor", PROJECT)
    return parser


def parse_xor_args(argv: Sequence[str], raising: bool = False, prog: str = "gradsurrogate xor"
                   ) -> tuple[argparse.Namespace, XorConfig]:
    """Parse ``gradsurrogate xor`` / ``run`` flags; raises ``ValueError`` on bad values
    (argparse's own errors exit with status 2, or raise ``ValueError`` too with
    ``raising``)."""
    args = build_parser(RaisingParser if raising else argparse.ArgumentParser, prog
                        ).parse_args(list(argv))
    return args, xor_config(args)


def _resolve_common(args: argparse.Namespace) -> None:
    """Threads, and the W&B mode resolved now (a bad ``WANDB_MODE`` fails before work)."""
    set_threads(args.threads)
    if args.wandb is None:
        args.wandb = default_wandb_mode()


def task_run_main(argv: Sequence[str]) -> int:
    """``gradsurrogate run --task NAME ...``: one run of any task."""
    return run_main(argv, "run")


def run_main(argv: Sequence[str], command: str = "xor") -> int:
    """``gradsurrogate xor``: one run (sequential), logged to W&B as one run."""

    def body() -> int:
        args, config = parse_xor_args(argv, prog=f"gradsurrogate {command}")
        _resolve_common(args)
        from ..tracking import Tracker
        from .results import write_run
        from .train import run_xor

        with RunStore(args.out, part="xor") as store:
            if config.run_id in finished_ids(store.out):
                print(f"run {config.run_id} ({config.spec}) already in "
                      f"{store.out / 'results.jsonl'}; skipping")
                return 0
            tracker = Tracker(args.wandb, args.wandb_project, config.to_dict(),
                              name=config.run_id, job_type=config.task)
            record, curves = run_xor(config, progress=None)
            write_run(store, [(record, curves)])
        for k, step in enumerate(curves["step"]):
            tracker.log({key: curves[key][k] for key in
                         ("train_loss", "train_acc", "test_loss", "test_acc")}, step=step)
        tracker.summary({k: v for k, v in record.items()
                         if k not in ("config", "grad_diagnostics") and v is not None})
        tracker.finish()
        diverged = f"diverged at step {record['diverged_step']}" if record["diverged"] \
            else "not diverged"
        bayes = "" if record["bayes_acc"] is None else f" (Bayes {record['bayes_acc']:.4f})"
        print(f"{config.task} {config.spec}: test acc {record['final_test_acc']:.4f}{bayes}, "
              f"test loss {record['final_test_loss']}, {diverged} "
              f"-> {Path(args.out) / 'results.jsonl'}")
        return 0

    return run_command(command, body)


_GRID_HELPS = {
    "targets": "backward targets perturbed one at a time, or all (every target at once)",
    "modes": "backward modes (flip and blend get one run per p)",
    "ps": "flip probabilities / blend amounts",
    "depths": "hidden layers (default: the task's; xor: 2,4)",
    "seeds": "seeds (the sub-seeds follow each, unless given explicitly)",
    "include_exact": "also run the exact baselines",
    "feedback": "whole specs run once per depth and seed: weight modes of the feedback-"
                "alignment family (random, fa, usf, frsf, brsf; = weight=MODE) or dfa "
                "(default: the task's; xor: none, others: the family and dfa)",
}


def grid_parser(prog: str = "gradsurrogate xor-grid") -> argparse.ArgumentParser:
    """Run settings from :class:`XorConfig`, grid axes from :class:`GridSpec`, run options."""
    from .grid import GridSpec

    parser = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Run targets x modes x p x depths x seeds (+ the feedback family) of a "
                    "task (--task; default xor), vectorised where the task allows (MLP "
                    "tasks and the MNIST-1D CNN); re-running skips "
                    "finished runs; writes OUT/report.md and figures at the end. Sub-seeds "
                    "given with --data-seed/--init-seed/--noise-seed stay fixed in every run; "
                    "the others follow each of --seeds.")
    add_config_flags(parser, spec_flags=False, skip=("depth", "seed"))  # the grid's axes
    add_common_flags(parser, "runs/xor", PROJECT)
    config_flags(parser, GridSpec, helps=_GRID_HELPS, title="grid (lists: a b or a,b)")
    run = parser.add_argument_group("running")
    run.add_argument(*flag_names("no_exact"), dest="include_exact", action="store_const",
                     const=False, help="leave out the exact baselines")
    run.add_argument(*flag_names("max_group"), dest="max_group", type=int, default=MAX_GROUP,
                     help=f"most runs per vectorised ensemble (default: {MAX_GROUP})")
    run.add_argument("--sequential", action="store_true",
                     help="one run at a time instead of vectorised ensembles")
    run.add_argument(*flag_names("no_report"), dest="no_report", action="store_true")
    return parser


def task_grid_main(argv: Sequence[str]) -> int:
    """``gradsurrogate grid --task NAME ...``: the destroy grid of any task."""
    return grid_main(argv, "grid")


def grid_main(argv: Sequence[str], command: str = "xor-grid") -> int:
    """``gradsurrogate xor-grid``: the default destroy grid (or a custom one), resumable."""

    def body() -> int:
        from .grid import GridSpec, run_grid

        args = grid_parser(f"gradsurrogate {command}").parse_args(list(argv))
        _resolve_common(args)
        if not args.no_report:
            check_writable(Path(args.out) / "figures")
        check_int(args.max_group, "--max-group", 1)
        base = xor_config(args, BackwardSpec())
        # sub-seeds given on the command line stay fixed over --seeds
        fixed = [name for name in SUB_SEEDS if getattr(args, name) is not None]
        configs = config_from_args(GridSpec, args).configs(base, fixed)
        with RunStore(args.out, part="xor") as store:  # writable + locked before training
            records = run_grid(configs, store, args.max_group, not args.sequential,
                               args.wandb, args.wandb_project)
            n_div = sum(bool(r["diverged"]) for r in records)
            print(f"{len(records)} runs in {args.out}/results.jsonl ({n_div} diverged)")
            if not args.no_report:
                _print_summary(Path(args.out))
        return 0

    return run_command(command, body)


def _print_summary(out: Path) -> None:
    """Write the report; echo its per-depth accuracy tables and its paths."""
    from .report import FIGURES, report_tables, write_report

    report = write_report(out)
    print("\n" + report_tables(out) + "\n")
    print(f"report: {report}")
    figures = [out / "figures" / name for name in FIGURES if (out / "figures" / name).exists()]
    if figures:
        print("figures: " + ", ".join(str(f) for f in figures))


def run_sweep(argvs: list[list[str]], out: str, common: argparse.Namespace) -> int:
    """Sweep hook: every ``gradsurrogate xor`` flag line a W&B agent would pass, parsed
    first (a bad line is a ``ValueError`` naming it), then run vectorised and resumably in
    ``out``, then reported."""
    from .grid import run_grid

    configs = []
    for line in argvs:
        try:
            configs.append(parse_xor_args(line, raising=True)[1])
        except ValueError as err:
            raise ValueError(f"sweep parameters give bad xor flags {' '.join(line)!r}: {err}"
                             ) from None
    _resolve_common(common)
    check_writable(Path(out) / "figures")
    with RunStore(out, part="xor") as store:
        records = run_grid(configs, store, MAX_GROUP, True, common.wandb,
                           getattr(common, "wandb_project", None) or PROJECT)
        print(f"{len(records)} runs in {out}/results.jsonl")
        _print_summary(Path(out))
    return 0


def report_main(argv: Sequence[str]) -> int:
    """``gradsurrogate report DIR`` for an XOR folder: Markdown summary and PNG figures."""

    def body() -> int:
        from .report import write_report

        parser = argparse.ArgumentParser(prog="gradsurrogate report", allow_abbrev=False,
                                         description="Write DIR/report.md and DIR/figures/*.png")
        parser.add_argument("dir", type=Path)
        parser.add_argument("--figures", type=Path, default=None,
                            help="folder for the PNGs (default: DIR/figures)")
        args = parser.parse_args(list(argv))
        if not (args.dir / "results.jsonl").exists():
            raise ValueError(f"no XOR results in {str(args.dir)!r}: run `gradsurrogate xor` or "
                             "`xor-grid` with --out pointing there first")
        with RunStore(args.dir, part="xor"):  # no writer meanwhile; stale temp files cleaned
            print(write_report(args.dir, args.figures))
        return 0

    return run_command("report", body)
