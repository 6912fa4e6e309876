"""Command-line entry points: ``gradsurrogate xor``, ``xor-grid``, ``sweep`` and ``report``.

Flags accept ``--flag value`` and ``--flag=value`` (the form ``wandb agent`` passes), with
hyphens or underscores (``--batch-size`` / ``--batch_size``). Sweep parameter names are these
flag names. Each entry point returns an exit code: 0 on success, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..backward import TARGETS, BackwardSpec, make_mode
from ..tracking import WANDB_MODES
from .config import OPTIMIZERS, SUB_SEEDS, XorConfig

__all__ = ["build_parser", "config_from_args", "grid_main", "parse_xor_args", "report_main",
           "run_main", "sweep_main"]

_FIELDS: list[tuple[str, type, str]] = [
    ("depth", int, "hidden Linear+GELU layers"),
    ("width", int, "units per hidden layer"),
    ("steps", int, "optimizer steps"),
    ("lr", float, "learning rate"),
    ("batch_size", int, "minibatch size (0 or >= n-train: full batch)"),
    ("n_train", int, "training points"),
    ("n_test", int, "test points"),
    ("sigma", float, "std of each blob"),
    ("label_noise", float, "fraction of labels flipped at random, in [0, 0.5)"),
    ("seed", int, "master seed (data, init and noise seeds default to it)"),
    ("data_seed", int, "seed of the data sets and minibatch order"),
    ("init_seed", int, "seed of the weight init"),
    ("noise_seed", int, "seed of the backward noise"),
    ("eval_every", int, "evaluate train/test metrics every N steps"),
    ("diag_every", int, "record gradient diagnostics every N steps (0: never)"),
]


def _flags(name: str) -> list[str]:
    """``--batch-size`` and its alias ``--batch_size``."""
    dashed = "--" + name.replace("_", "-")
    return [dashed] if "_" not in name else [dashed, "--" + name]


def add_config_flags(parser: argparse.ArgumentParser, spec_flags: bool = True) -> None:
    """Training flags (defaults: :class:`XorConfig`) and, optionally, the backward-mode flags."""
    defaults = XorConfig()
    group = parser.add_argument_group("run settings")
    for name, typ, help_ in _FIELDS:
        default = None if name in SUB_SEEDS else getattr(defaults, name)
        group.add_argument(*_flags(name), dest=name, type=typ, default=default,
                           help=f"{help_} (default: {default})")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    if not spec_flags:
        return
    modes = parser.add_argument_group(
        "backward modes", "MODE: exact, flip, sign, sign:rescale, blend, none, random (weight); "
        "P: flip probability or blend amount (also accepted inline: flip:0.3)")
    for target in TARGETS:
        modes.add_argument(*_flags(target), dest=target, metavar="MODE", default=None)
        modes.add_argument(*_flags(f"{target}_p"), dest=f"{target}_p", metavar="P", type=float,
                           default=None)
    modes.add_argument("--perturb", default=None, metavar="T[,T..]",
                       help="shorthand: apply --mode/--p to these targets ('all' = every one)")
    modes.add_argument("--mode", default=None, help="mode for --perturb targets")
    modes.add_argument("--p", type=float, default=None, help="parameter for --mode")


def add_common_flags(parser: argparse.ArgumentParser, out_default: str) -> None:
    parser.add_argument("--out", default=out_default, help=f"results directory "
                        f"(default: {out_default})")
    parser.add_argument("--wandb", choices=WANDB_MODES, default=None,
                        help="W&B mode (default: offline unless an API key is configured)")
    parser.add_argument("--wandb-project", "--wandb_project", dest="wandb_project",
                        default="gradsurrogate-xor")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the batched ops are small and extra "
                             "threads oversubscribe shared CPUs; 0: torch's default)")


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
        targets = list(TARGETS) if names == ["all"] else names
        for target in targets:
            if target not in TARGETS:
                raise ValueError(f"--perturb: unknown target {target!r}; accepted: "
                                 f"{', '.join(TARGETS)}, all")
            if target in modes:
                raise ValueError(f"{target} is set both by --{target.replace('_', '-')} and by "
                                 "--perturb")
            modes[target] = make_mode(args.mode, args.p, target)
    return BackwardSpec(**modes)


def config_from_args(args: argparse.Namespace, spec: BackwardSpec | None = None) -> XorConfig:
    kwargs = {name: getattr(args, name) for name, _, _ in _FIELDS}
    kwargs["optimizer"] = args.optimizer
    kwargs["spec"] = str(spec_from_args(args) if spec is None else spec)
    return XorConfig(**kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradsurrogate xor", allow_abbrev=False,
        description="Train one XOR MLP under a backward spec; append the record to "
                    "OUT/results.jsonl and the curves to OUT/curves.jsonl.")
    add_config_flags(parser)
    add_common_flags(parser, "runs/xor")
    return parser


def parse_xor_args(argv: Sequence[str]) -> tuple[argparse.Namespace, XorConfig]:
    """Parse ``gradsurrogate xor`` flags; raises ``ValueError`` on bad values."""
    args = build_parser().parse_args(list(argv))
    return args, config_from_args(args)


def _set_threads(n: int) -> None:
    import torch

    if n < 0:
        raise ValueError(f"--threads must be >= 0; got {n}")
    if n:
        torch.set_num_threads(n)


def _fail(prog: str, err: Exception) -> int:
    print(f"gradsurrogate {prog}: error: {err}", file=sys.stderr)
    return 2


def run_main(argv: Sequence[str]) -> int:
    """``gradsurrogate xor``: one run (sequential), logged to W&B as one run."""
    try:
        args, config = parse_xor_args(argv)
        _set_threads(args.threads)
    except ValueError as err:
        return _fail("xor", err)
    from ..tracking import Tracker
    from .results import write_run
    from .train import run_xor

    tracker = Tracker(args.wandb, args.wandb_project, config.to_dict(), name=config.run_id,
                      job_type="xor")
    record, curves = run_xor(config, progress=None)
    write_run(args.out, [(record, curves)])
    for k, step in enumerate(curves["step"]):
        tracker.log({key: curves[key][k] for key in
                     ("train_loss", "train_acc", "test_loss", "test_acc")}, step=step)
    tracker.summary({k: v for k, v in record.items()
                     if k not in ("config", "grad_diagnostics") and v is not None})
    tracker.finish()
    print(f"{config.spec}: test acc {record['final_test_acc']:.4f} (Bayes "
          f"{record['bayes_acc']:.4f}), test loss {record['final_test_loss']}, diverged "
          f"{record['diverged']} -> {Path(args.out) / 'results.jsonl'}")
    return 0


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _strs(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def grid_main(argv: Sequence[str]) -> int:
    """``gradsurrogate xor-grid``: the default destroy grid (or a custom one), resumable."""
    from .grid import (
        DEFAULT_DEPTHS,
        DEFAULT_MODES,
        DEFAULT_PS,
        DEFAULT_SEEDS,
        DEFAULT_TARGETS,
        grid_configs,
        run_grid,
    )

    parser = argparse.ArgumentParser(
        prog="gradsurrogate xor-grid", allow_abbrev=False,
        description="Run targets x modes x p x depths x seeds vectorised; re-running skips "
                    "finished runs; writes OUT/report.md and figures at the end. Sub-seeds "
                    "given with --data-seed/--init-seed/--noise-seed stay fixed in every run; "
                    "the others follow each of --seeds.")
    add_config_flags(parser, spec_flags=False)
    add_common_flags(parser, "runs/xor")
    parser.add_argument("--targets", type=_strs, default=list(DEFAULT_TARGETS))
    parser.add_argument("--modes", type=_strs, default=list(DEFAULT_MODES))
    parser.add_argument("--ps", type=_floats, default=list(DEFAULT_PS))
    parser.add_argument("--depths", type=_ints, default=list(DEFAULT_DEPTHS))
    parser.add_argument("--seeds", type=_ints, default=list(DEFAULT_SEEDS))
    parser.add_argument("--no-exact", "--no_exact", dest="no_exact", action="store_true",
                        help="leave out the exact baselines")
    parser.add_argument("--max-group", "--max_group", dest="max_group", type=int, default=256)
    parser.add_argument("--sequential", action="store_true",
                        help="one run at a time instead of vectorised ensembles")
    parser.add_argument("--no-report", "--no_report", dest="no_report", action="store_true")
    args = parser.parse_args(list(argv))
    try:
        _set_threads(args.threads)
        base = config_from_args(args, BackwardSpec())
        # sub-seeds given on the command line stay fixed over --seeds
        fixed = [name for name in SUB_SEEDS if getattr(args, name) is not None]
        configs = grid_configs(base, args.targets, args.modes, args.ps, args.depths,
                               args.seeds, include_exact=not args.no_exact, fixed_seeds=fixed)
        records = run_grid(configs, args.out, args.max_group, not args.sequential,
                           args.wandb, args.wandb_project)
    except ValueError as err:
        return _fail("xor-grid", err)
    n_div = sum(bool(r["diverged"]) for r in records)
    print(f"{len(records)} runs in {args.out}/results.jsonl ({n_div} diverged)")
    if not args.no_report:
        from .report import write_report

        report = write_report(args.out)
        _print_summary(report)
    return 0


def _print_summary(report: Path) -> None:
    """Echo the report's per-depth accuracy tables (up to the full listing) and its path."""
    text = report.read_text()
    print("\n" + text.split("## All configurations")[0].strip() + "\n")
    figures = sorted((report.parent / "figures").glob("*.png"))
    print(f"report: {report}")
    if figures:
        print("figures: " + ", ".join(str(f) for f in figures))


def sweep_main(argv: Sequence[str]) -> int:
    """``gradsurrogate sweep FILE.yaml``: expand a W&B sweep locally and run it vectorised."""
    from .grid import run_grid
    from .sweep import expand_sweep, load_sweep, to_argv

    parser = argparse.ArgumentParser(
        prog="gradsurrogate sweep", allow_abbrev=False,
        description="Expand a W&B sweep YAML (grid or random) without the W&B server and run "
                    "its configs vectorised (resumable).")
    parser.add_argument("yaml", type=Path)
    parser.add_argument("--count", type=int, default=None,
                        help="configs to draw (random) or cap (grid); default: run_cap")
    parser.add_argument("--sweep-seed", "--sweep_seed", dest="sweep_seed", type=int, default=0)
    parser.add_argument("--max-group", "--max_group", dest="max_group", type=int, default=256)
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                        help="print the expanded argv lines and stop")
    add_common_flags(parser, "")
    args = parser.parse_args(list(argv))
    try:
        _set_threads(args.threads)
        sweep = load_sweep(args.yaml)
        argvs = [to_argv(p) for p in expand_sweep(sweep, args.count, args.sweep_seed)]
        configs = []
        for line in argvs:
            try:
                configs.append(parse_xor_args(line)[1])
            except SystemExit:
                raise ValueError(f"sweep parameters give bad xor flags: {' '.join(line)}") \
                    from None
    except ValueError as err:
        return _fail("sweep", err)
    if args.dry_run:
        for line in argvs:
            print("gradsurrogate xor " + " ".join(line))
        return 0
    out = args.out or f"runs/sweep-{args.yaml.stem}"
    records = run_grid(configs, out, args.max_group, True, args.wandb, args.wandb_project)
    print(f"{len(records)} runs in {out}/results.jsonl")
    from .report import write_report

    print(f"report: {write_report(out)}")
    return 0


def report_main(argv: Sequence[str]) -> int:
    """``gradsurrogate report DIR``: Markdown summary and PNG figures of a results directory."""
    from .report import write_report

    parser = argparse.ArgumentParser(prog="gradsurrogate report", allow_abbrev=False,
                                     description="Write DIR/report.md and DIR/figures/*.png")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--figures", type=Path, default=None,
                        help="folder for the PNGs (default: DIR/figures)")
    args = parser.parse_args(list(argv))
    try:
        print(write_report(args.dir, args.figures))
    except ValueError as err:
        return _fail("report", err)
    return 0
