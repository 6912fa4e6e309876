"""``gradsurrogate sweep FILE.yaml``: a W&B sweep YAML expanded and run locally, for any part.

The expansion (grid and random, W&B's semantics, tested against W&B's engine) and validation
live in :mod:`gradsurrogate.sweep_space` and are re-exported here.

Dispatch: the YAML's ``command`` list (e.g. ``[${env}, ${interpreter}, ${program}, restore,
--wandb=online, ${args}]``) names the part: the first literal token that is a
``gradsurrogate.cli.COMMANDS`` name. That command's cli module's ``run_sweep(argvs, out,
common)`` runs the expanded lines (one ``--name=value`` flag list per run). The other literal
tokens after the name go into every line, before or after the parameters as around
``${args}``, except the common flags ``--wandb``, ``--wandb-project``, ``--threads`` and
``--out``: those set ``common`` / ``out`` unless this command's own flags give them
(``$WANDB_MODE`` also beats the YAML's ``--wandb``); the YAML's ``project:`` is the default
W&B project, else ``gradsurrogate-CMD``; ``out`` defaults to ``runs/sweep-<YAML stem>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import cli
from .registry import check_choice, check_int
from .sweep_space import (
    DEFAULT_RANDOM_COUNT,
    DISTRIBUTIONS,
    METHODS,
    expand_sweep,
    load_sweep,
    parameter_spec,
    sample_parameter,
    sweep_schema,
    to_argv,
    validate_sweep,
)

__all__ = ["DISTRIBUTIONS", "METHODS", "SweepCommand", "build_parser", "expand_sweep",
           "load_sweep", "main", "parameter_spec", "sample_parameter", "sweep_command",
           "sweep_runner", "sweep_schema", "to_argv", "validate_sweep"]

_ARGS_MACROS = ("${args}", "${args_no_boolean_flags}")
_COMMON = {"--wandb": "wandb", "--wandb-project": "wandb_project",
           "--wandb_project": "wandb_project", "--threads": "threads", "--out": "out"}


@dataclasses.dataclass(frozen=True)
class SweepCommand:
    """A sweep YAML's command: part ``name``, literal flags around ``${args}``, common flags."""

    name: str
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    macro: str = "${args}"
    common: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def argv(self, params: Mapping[str, Any]) -> list[str]:
        return [*self.before, *to_argv(params, self.macro), *self.after]


def _part_names() -> list[str]:
    return [name for name in cli.COMMANDS if name != "sweep"]


def sweep_command(config: Mapping[str, Any]) -> SweepCommand:
    """Parse the YAML's ``command`` list (see the module docstring)."""
    command = config.get("command")
    example = "[${env}, ${interpreter}, ${program}, CMD, ${args}]"
    if not isinstance(command, list):
        raise ValueError(f"the sweep needs a command list such as {example} naming its "
                         f"gradsurrogate command; accepted: {', '.join(_part_names())}")
    tokens = [re.sub(r"\$\{envvar:([A-Z0-9_]*)\}", lambda m: os.environ.get(m[1], m[1]),
                     str(t)) for t in command]
    names = [i for i, t in enumerate(tokens) if t in _part_names()]
    if not names:
        raise ValueError(f"the sweep's command {tokens} names no gradsurrogate command; "
                         f"accepted: {', '.join(_part_names())}")
    rest = tokens[names[0] + 1:]
    macros = [t for t in rest if t.startswith("${args")]
    if len(macros) != 1 or macros[0] not in _ARGS_MACROS:
        raise ValueError(f"the sweep's command must pass the parameters once, as "
                         f"{' or '.join(_ARGS_MACROS)}; got {macros or 'none'}")
    common: dict[str, str] = {}
    parts: list[list[str]] = [[], []]
    side, i = 0, 0
    while i < len(rest):
        token = rest[i]
        flag, eq, value = token.partition("=")
        if token in _ARGS_MACROS:
            side = 1
        elif flag in _COMMON:
            if not eq:
                if i + 1 >= len(rest):
                    raise ValueError(f"{flag} in the sweep's command has no value")
                value, i = rest[i + 1], i + 1
            common[_COMMON[flag]] = value
        elif not (token.startswith("${") and token.endswith("}")):  # ${env}, ${program}, ...
            parts[side].append(token)
        i += 1
    if "wandb" in common:
        from .tracking import WANDB_MODES

        check_choice(common["wandb"], WANDB_MODES, "--wandb mode in the sweep's command")
    return SweepCommand(tokens[names[0]], tuple(parts[0]), tuple(parts[1]), macros[0], common)


def _run_sweep_of(name: str) -> Callable[..., Any] | None:
    """The ``run_sweep`` of the module behind command ``name`` if ``name`` is that module's
    one-run command (``main``/``run_main``; e.g. not ``xor-grid``, whose lines differ)."""
    module_name, func = cli.COMMANDS[name][0].split(":")
    if func not in ("main", "run_main"):
        return None
    module = importlib.import_module(module_name)
    runner = getattr(module, "run_sweep", None)
    return runner if callable(runner) else None


def sweep_runner(name: str) -> Callable[[list[list[str]], str, argparse.Namespace], int]:
    """The ``run_sweep`` of command ``name``'s cli module (imported now); ``ValueError`` if
    the command has none, naming the commands that have one."""
    try:
        runner = _run_sweep_of(name)
    except ModuleNotFoundError as err:
        raise ValueError(f"command {name!r} is not available ({err})") from None
    if runner is None:
        able = []
        for other in _part_names():
            try:
                if _run_sweep_of(other) is not None:
                    able.append(other)
            except ImportError:
                continue
        raise ValueError(f"command {name!r} does not support sweeps (its module has no "
                         f"run_sweep); commands with sweeps: {', '.join(able) or 'none'}")
    return runner


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradsurrogate sweep", allow_abbrev=False,
        description="Expand a W&B sweep YAML (grid or random, W&B's semantics) without the W&B "
                    "server and run it with the command its `command:` list names (xor, "
                    "restore, ...), resumably. The YAML command's own --wandb, "
                    "--wandb-project, --threads and --out apply unless given here.")
    parser.add_argument("yaml", type=Path, metavar="FILE.yaml")
    parser.add_argument("--count", type=int, default=None,
                        help="runs to draw (random) or the cap (grid); default: run_cap, else "
                             f"the whole grid / {DEFAULT_RANDOM_COUNT} draws")
    parser.add_argument("--sweep-seed", "--sweep_seed", dest="sweep_seed", type=int, default=0,
                        help="seed of the random draws (default 0)")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                        help="print the `gradsurrogate CMD ...` lines and stop")
    parser.add_argument("--out", default=None,
                        help="results folder (default: --out in the YAML's command, else "
                             "runs/sweep-<YAML stem>); rerunning resumes")
    add_project = "the YAML's project:, else gradsurrogate-CMD"
    cli.add_common_flags(parser, None, add_project)
    parser.set_defaults(wandb_project=None, threads=None)  # None: not given here
    return parser


def _resolve(args: argparse.Namespace, config: Mapping[str, Any], command: SweepCommand
             ) -> tuple[str, argparse.Namespace]:
    """``out`` and ``common``: this command's flags, else the YAML's, else the defaults."""
    lit = command.common
    wandb = args.wandb or (None if os.environ.get("WANDB_MODE") else lit.get("wandb"))
    project = (args.wandb_project or lit.get("wandb_project") or config.get("project")
               or f"gradsurrogate-{command.name}")
    threads = args.threads
    if threads is None:
        try:
            threads = int(lit.get("threads", 1))
        except ValueError:
            raise ValueError(f"--threads in the sweep's command must be an integer; got "
                             f"{lit['threads']!r}") from None
    check_int(threads, "--threads", 0)
    out = args.out or lit.get("out") or f"runs/sweep-{args.yaml.stem}"
    return out, argparse.Namespace(wandb=wandb, wandb_project=str(project), threads=threads)


def _body(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.count is not None:
        check_int(args.count, "--count", 1)
    config = load_sweep(args.yaml)
    command = sweep_command(config)
    try:
        argvs = [command.argv(p) for p in expand_sweep(config, args.count, args.sweep_seed)]
    except ValueError as err:
        raise ValueError(f"{args.yaml}: {err}") from None
    out, common = _resolve(args, config, command)
    runner = sweep_runner(command.name)
    if args.dry_run:
        for line in argvs:
            print(" ".join(["gradsurrogate", command.name, *line]))
        return 0
    print(f"sweep {config.get('name', args.yaml.stem)}: {len(argvs)} runs of gradsurrogate "
          f"{command.name} -> {out}")
    cli.set_threads(common.threads)
    return int(runner(argvs, out, common) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """``gradsurrogate sweep FILE.yaml [--count N] [--sweep-seed S] [--dry-run] [--out DIR]
    [--wandb MODE] [--wandb-project P] [--threads N]``; bad input: exit 2 with a message."""
    return cli.run_command("sweep", lambda: _body(list(sys.argv[1:] if argv is None else argv)))
