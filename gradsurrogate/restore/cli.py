"""``gradsurrogate restore``: restore a Jacobian from directional derivatives.

Example::

    gradsurrogate restore --dim-in 32 --dim-out 32 --dim-sample 8 --loss mixed \\
        --surrogate structured --target jvp --epochs auto --out runs/restore

The flags are generated from :class:`~.config.RestoreConfig` (its defaults are the only ones;
``--dim-in`` and ``--dim_in`` both work). Stores through :func:`~.run.run_restore`: one record
per run in ``OUT/results.jsonl``, the per-epoch history in ``OUT/history/RUN_ID.json``, and
``OUT/report.md``; a recorded run is skipped (resume) unless ``--force``. A bad value exits
with status 2 and ``gradsurrogate restore: error: ...``; a run whose loss became non-finite is
recorded as diverged and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cli import add_common_flags, config_flags, config_from_args, run_command, set_threads
from ..runs import RESULTS, RunStore
from .config import RestoreConfig
from .report import REPORT, write_report
from .run import PART, PROJECT, run_restore, run_restores

__all__ = ["build_parser", "main", "parse_config", "report_main", "run_sweep"]

_EPOCHS_HELP = ("number of epochs, or 'auto' = ceil(epoch-scale*dim-in*dim-out/dim-sample), "
                "stored resolved (default: auto)")


def _config_flags(parser: argparse.ArgumentParser) -> None:
    config_flags(parser, RestoreConfig)
    for action in parser._actions:  # the generated help shows the resolved default epochs
        if action.dest == "epochs":
            action.help = _EPOCHS_HELP


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradsurrogate restore", allow_abbrev=False,
                                     description=__doc__.split("\n")[0])
    _config_flags(parser)
    add_common_flags(parser, "runs/restore", PROJECT)
    group = parser.add_argument_group("output")
    group.add_argument("--figures", action="store_true",
                       help="also write Jacobian heatmaps and metric curves under OUT/figures")
    group.add_argument("--force", action="store_true",
                       help="rerun even if the run id is already recorded")
    return parser


def _body(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(RestoreConfig, args)
    set_threads(args.threads)
    with RunStore(args.out, part=PART) as store:  # --out writable, before any work
        record = run_restore(cfg, store, force=args.force, wandb=args.wandb,
                             project=args.wandb_project, figures=args.figures)
        write_report(store)
    if record.get("diverged"):
        print(f"gradsurrogate restore: run {record['run_id']} diverged: non-finite loss at "
              f"step {record.get('diverged_step')}; recorded as diverged in "
              f"{store.out / RESULTS} (lower --lr or --initial-messup)", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 (done), 1 (the run diverged) or 2 (bad value)."""
    return run_command("restore", lambda: _body(list(sys.argv[1:] if argv is None else argv)))


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(message)


def parse_config(argv: Sequence[str]) -> RestoreConfig:
    """The config of ``--name=value`` flags (the restore flag names); ``ValueError`` for an
    unknown flag or a bad value."""
    parser = _RaisingParser(prog="gradsurrogate restore", allow_abbrev=False, add_help=False)
    _config_flags(parser)
    return config_from_args(RestoreConfig, parser.parse_args(list(argv)))


def run_sweep(argvs: list[list[str]], out: str, common: argparse.Namespace) -> int:
    """Run the configs of a sweep (each item: the ``--name=value`` flags ``wandb agent`` would
    pass) resumably in ``out`` and write ``OUT/report.md``. Every line is parsed before any
    run; a bad line is a ``ValueError`` naming it. ``common``: ``wandb``, ``wandb_project``,
    ``threads``."""
    configs = []
    for number, argv in enumerate(argvs, 1):
        try:
            configs.append(parse_config(argv))
        except ValueError as err:
            raise ValueError(f"sweep run {number} ({' '.join(argv)}): {err}") from None
    set_threads(getattr(common, "threads", 1))
    with RunStore(out, part=PART) as store:
        records = run_restores(configs, store, wandb=getattr(common, "wandb", None),
                               project=getattr(common, "wandb_project", None) or PROJECT,
                               progress=False)
        write_report(store)
    diverged = sum(bool(r.get("diverged")) for r in records)
    print(f"{len(records)} restore run(s) in {store.out / RESULTS} ({diverged} diverged); "
          f"report: {store.out / REPORT}")
    return 0


def report_main(argv: Sequence[str]) -> int:
    """``gradsurrogate report DIR`` for a restore folder: rewrites and prints DIR/report.md."""

    def body() -> int:
        parser = argparse.ArgumentParser(prog="gradsurrogate report", allow_abbrev=False,
                                         description="Write DIR/report.md from "
                                                     "DIR/results.jsonl (restore runs)")
        parser.add_argument("dir", type=Path)
        args = parser.parse_args(list(argv))
        if not (args.dir / RESULTS).is_file():
            raise ValueError(f"no restore results in {str(args.dir)!r} (no {RESULTS})")
        print(write_report(args.dir), end="")
        return 0

    return run_command("report", body)
