"""``gradsurrogate restore``: restore a Jacobian from directional derivatives.

Example::

    gradsurrogate restore --dim-in 64 --dim-out 64 --out runs/restore

restores f(x) = A x (64x64) from 2x the information limit (128 directional evaluations, 16 held
out), replaying the probe bank offline with SGD at the learning rate estimated from the probes,
and prints the least-squares baseline on the same probes beside it. ``--method least-squares``
runs the baseline alone; ``--probes fresh --budget 50`` draws new probes every step.
``--problem tanh_bias`` (any problem but ``linear``) gets the ``gradnet`` surrogate (the vjp of
a learned network, linear in the cotangent) fitted on 50x the limit with Adam and a cosine
schedule, and records its held-out cosine at cotangent scales 1e-2..1e2.

The flags are generated from :class:`~.config.RestoreConfig` (its defaults are the only ones;
``--dim-in`` and ``--dim_in`` both work). Stores through :func:`~.run.run_restore`: one record
per run in ``OUT/results.jsonl``, the per-epoch history in ``OUT/history/RUN_ID.json``, and
``OUT/report.md``; a recorded run is skipped (resume) unless ``--restart`` (``--force`` is
a hidden alias). A bad value exits with status 2 and ``gradsurrogate restore: error: ...``; a
run whose loss became non-finite is recorded as diverged (a message on stderr names its step)
and exits with status 0, as in every part. ``gradsurrogate report DIR`` rewrites
``DIR/report.md`` (:func:`report_main`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cli import (
    RaisingParser,
    add_common_flags,
    config_flags,
    config_from_args,
    run_command,
    set_threads,
)
from ..runs import RESULTS, RunStore, read_part
from .config import RestoreConfig
from .problems import load_function
from .report import REPORT, write_report
from .run import PART, PROJECT, run_restore, run_restores

__all__ = ["build_parser", "main", "parse_config", "report_main", "run_sweep"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradsurrogate restore", allow_abbrev=False,
                                     description=__doc__.split("\n")[0])
    config_flags(parser, RestoreConfig)
    add_common_flags(parser, "runs/restore", PROJECT)
    group = parser.add_argument_group("output")
    group.add_argument("--figures", action="store_true",
                       help="also write Jacobian heatmaps and metric curves under OUT/figures")
    group.add_argument("--restart", action="store_true",
                       help="run again even if the run id is already recorded (the new record "
                            "replaces the old one)")
    group.add_argument("--force", dest="restart", action="store_true",
                       help=argparse.SUPPRESS)  # the earlier name of --restart
    return parser


def _body(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(RestoreConfig, args)
    if ":" in cfg.problem:  # a user's module:function must import before any work
        load_function(cfg.problem)
    set_threads(args.threads)
    with RunStore(args.out, part=PART) as store:  # --out writable, before any work
        record = run_restore(cfg, store, restart=args.restart, wandb=args.wandb,
                             project=args.wandb_project, figures=args.figures)
        write_report(store)
    if record.get("diverged"):
        step = record.get("diverged_step")
        print(f"gradsurrogate restore: run {record['run_id']} diverged: non-finite loss or "
              f"parameters at step {step} (0-based: after {step} update(s)); recorded in "
              f"{store.out / RESULTS} (lower --lr or --initial-messup)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 (done, or the run diverged: recorded, named on stderr) or 2
    (bad value, busy or unwritable ``--out``)."""
    return run_command("restore", lambda: _body(list(sys.argv[1:] if argv is None else argv)))


def parse_config(argv: Sequence[str]) -> RestoreConfig:
    """The config of ``--name=value`` flags (the restore flag names); ``ValueError`` for an
    unknown flag or a bad value."""
    parser = RaisingParser(prog="gradsurrogate restore", allow_abbrev=False, add_help=False)
    config_flags(parser, RestoreConfig)
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
    """``gradsurrogate report DIR`` for a restore folder: rewrites and prints DIR/report.md,
    holding the folder lock while it writes (a folder a run is writing is busy: exit 2).
    Exit 2 for a folder without restore results."""

    def body() -> int:
        parser = argparse.ArgumentParser(prog="gradsurrogate report", allow_abbrev=False,
                                         description="Write DIR/report.md from "
                                                     "DIR/results.jsonl (restore runs)")
        parser.add_argument("dir", type=Path)
        args = parser.parse_args(list(argv))
        part = read_part(args.dir)
        if part not in (None, PART) or not (args.dir / RESULTS).is_file():
            raise ValueError(f"no restore results in {str(args.dir)!r} ("
                             + (f"written by {part!r})" if part not in (None, PART)
                                else f"no {RESULTS})"))
        with RunStore(args.dir, part=PART) as store:
            text = write_report(store)
        print(text, end="")
        return 0

    return run_command("report", body)
