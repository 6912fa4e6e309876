"""The ``gradsurrogate`` console script: ``gradsurrogate <command> [flags]``.

Each command lives with the module that implements it; this file maps names to
``module:function`` entry points (imported lazily, so ``--help`` stays fast) and holds the
helpers every part's CLI is built from: flags generated from the part's config dataclass
(:func:`config_flags` / :func:`config_from_args`), the common flags (:func:`add_common_flags`:
``--out``, ``--wandb``, ``--wandb-project``, ``--threads`` defaulting to 1) and
:func:`run_command`, which turns any bad value into ``gradsurrogate CMD: error: ...`` with exit
status 2. Every entry point takes the remaining ``argv`` list and returns an exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

__all__ = [
    "COMMANDS",
    "RaisingParser",
    "add_common_flags",
    "config_flags",
    "config_from_args",
    "flag_names",
    "main",
    "parse_bool",
    "report_main",
    "run_command",
    "set_threads",
]

C = TypeVar("C")

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("gradsurrogate.demo:main", "short tour of the backward modes on one layer"),
    "xor": ("gradsurrogate.xor.cli:run_main", "train one XOR MLP under a backward spec"),
    "xor-grid": ("gradsurrogate.xor.cli:grid_main", "run the destroy-Jacobian grid (resumable)"),
    "run": ("gradsurrogate.xor.cli:task_run_main",
            "train one model of a benchmark task (--task xor, mnist1d-mlp, ...)"),
    "grid": ("gradsurrogate.xor.cli:task_grid_main",
             "the destroy-Jacobian grid of any task (--task; resumable)"),
    "sweep": ("gradsurrogate.sweep:main", "run any part's W&B sweep YAML locally, no server"),
    "report": ("gradsurrogate.cli:report_main", "rebuild the report of any results folder"),
    "compare": ("gradsurrogate.xor.compare:main",
                "compare two benchmark tables by overlap of their 95% intervals"),
    "restore": ("gradsurrogate.restore.cli:main", "restore Jacobians from directional derivatives"),
    "jacnet": ("gradsurrogate.jacnet.cli:main", "JacNet experiments (exp, abs, 2-d)"),
    "diffnet": ("gradsurrogate.diffnet.cli:main", "deep differential network experiments"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: gradsurrogate <command> [flags]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `gradsurrogate <command> --help` for the flags of one command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"gradsurrogate: error: unknown command {name!r}; accepted: "
              f"{', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:  # a command whose module has not landed yet
        if err.name and module_name.startswith(err.name):
            print(f"gradsurrogate: command {name!r} is not available ({err})", file=sys.stderr)
            return 2
        raise
    return int(getattr(module, func_name)(rest) or 0)


def report_main(argv: Sequence[str]) -> int:
    """``gradsurrogate report DIR [flags]``: the report of whichever part wrote ``DIR`` (its
    ``.gradsurrogate-part`` marker; unmarked folders with XOR's ``curves.jsonl`` are XOR's), by
    that part's ``report_main``."""
    from gradsurrogate.runs import read_part

    args = list(argv)
    positional = [a for a in args if not a.startswith("-")]
    folder = next((a for a in positional if Path(a).is_dir()), positional[0] if positional
                  else None)
    if folder is None:
        if any(a in ("-h", "--help") for a in args):
            print("usage: gradsurrogate report DIR [flags of that part's report]")
            return 0
        print("gradsurrogate report: error: give the results folder: gradsurrogate report DIR",
              file=sys.stderr)
        return 2
    part = read_part(folder)
    if part is None and (Path(folder) / "curves.jsonl").exists():
        part = "xor"  # XOR folders written before the part marker existed
    if part is None:
        print(f"gradsurrogate report: error: {folder!r} holds no gradsurrogate results (no "
              "part marker); run a command with --out pointing there first", file=sys.stderr)
        return 2
    target = COMMANDS.get(part, ("",))[0].split(":")[0]
    module = importlib.import_module(target) if target else None
    if module is None or not hasattr(module, "report_main"):
        print(f"gradsurrogate report: error: {folder!r} was written by {part!r}, which has no "
              "report command", file=sys.stderr)
        return 2
    return int(module.report_main(args) or 0)


# ---------------------------------------------------------------------------------------------
# Shared CLI helpers: every part's `cli.py` builds its flags from its config dataclass, adds the
# common flags, and runs its body through `run_command` (errors -> "gradsurrogate CMD: error:").
# ---------------------------------------------------------------------------------------------

def flag_names(name: str) -> list[str]:
    """``--batch-size`` and its alias ``--batch_size`` (the form ``wandb agent`` passes)."""
    dashed = "--" + name.replace("_", "-")
    return [dashed] if "_" not in name else [dashed, "--" + name]


def parse_bool(text: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case) -> bool."""
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false); got {text!r}")


def _split_list(text: str) -> list[str]:
    return [v.strip() for v in str(text).strip("[]").replace("'", "").split(",") if v.strip()]


_SCALARS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str,
                                             "bool": parse_bool}


def _field_kind(annotation: Any) -> tuple[str, Callable[[str], Any]]:
    """("scalar" | "list", converter) of a dataclass field's (string) annotation."""
    if isinstance(annotation, str):
        text = annotation
    else:  # a real type (module without postponed annotations): int, tuple[str, ...], int | None
        text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    text = text.replace("None", "").replace("|", "").replace("Optional[", "").strip(" ]")
    if text.startswith(("tuple[", "list[")):
        inner = text.split("[", 1)[1].split(",")[0].strip(" ]")
        return "list", _SCALARS.get(inner, str)
    return "scalar", _SCALARS.get(text, str)


def config_flags(parser: argparse.ArgumentParser, cls: type, *, skip: Sequence[str] = (),
                 helps: dict[str, str] | None = None, title: str = "run settings") -> None:
    """One flag per field of dataclass ``cls`` (``--a-b`` and ``--a_b``), typed from its
    annotation, defaulting to "not given" (``None``) so the dataclass stays the only source of
    defaults (its declared defaults are shown in ``--help``). Help text: ``helps[name]`` or
    the field's ``metadata["help"]``. Tuple fields take values separated by spaces or
    commas."""
    group = parser.add_argument_group(title)
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        kind, conv = _field_kind(field.type)
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory() if field.default_factory is not dataclasses.MISSING  # type: ignore[misc]
            else None)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = (helps or {}).get(field.name) or field.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": field.name, "default": None,
                                  "help": f"{text} (default: {shown})".strip()}
        if kind == "list":
            kwargs.update(nargs="+", type=str, metavar="V")
        elif conv is parse_bool:
            kwargs.update(nargs="?", const=True, type=parse_bool, metavar="BOOL")
        else:
            kwargs.update(type=conv, metavar=field.name.upper())
        group.add_argument(*flag_names(field.name), **kwargs)


def config_from_args(cls: type[C], args: argparse.Namespace, **fixed: Any) -> C:
    """``cls(**given flags, **fixed)``: flags left out keep the dataclass defaults; list
    flags accept ``a b`` and ``a,b``. Validation is the config's own (``ValueError``)."""
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = getattr(args, field.name, None)
        if value is None or field.name in fixed:
            continue
        kind, conv = _field_kind(field.type)
        if kind == "list":
            try:
                value = tuple(conv(v) for item in value for v in _split_list(item))
            except ValueError:
                raise ValueError(f"--{field.name.replace('_', '-')}: bad value(s) "
                                 f"{' '.join(value)!r}") from None
        kwargs[field.name] = value
    return cls(**{**kwargs, **fixed})


def add_common_flags(parser: argparse.ArgumentParser, out_default: str | None,
                     project: str) -> None:
    """``--out``, ``--wandb``, ``--wandb-project``, ``--threads``: one meaning everywhere."""
    from gradsurrogate.tracking import WANDB_MODES

    group = parser.add_argument_group("common")
    if out_default is not None:
        group.add_argument("--out", default=out_default, type=_out_folder,
                           help=f"results folder (default: {out_default}); checked writable "
                                "before any work; rerunning resumes")
    group.add_argument("--wandb", choices=WANDB_MODES, default=None,
                       help="W&B mode (default: $WANDB_MODE, else online with an API key, "
                            "else offline)")
    group.add_argument(*flag_names("wandb_project"), dest="wandb_project", default=project,
                       help=f"W&B project (default: {project})")
    group.add_argument("--threads", type=int, default=1,
                       help="torch CPU threads (default 1, so default results are the same on "
                            "every machine; 0: torch's default)")


def _out_folder(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty --out would write into the current folder; "
                                         "name a results folder")
    return text


def set_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` (``0``: leave torch's default); ``ValueError`` if < 0."""
    from gradsurrogate.registry import check_int

    check_int(n, "--threads", 0, 4096)
    if n:
        import torch

        torch.set_num_threads(n)


class RaisingParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise ``ValueError`` instead of printing and exiting
    (for flag lines that are data, e.g. the lines of a sweep)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command body; a ``ValueError`` (bad value), a busy output folder, a file-system
    error (``OSError``: a path under a file, a full disk, ...), running out of memory or an
    argparse error becomes
    ``gradsurrogate PROG: error: ...`` on stderr and exit status 2."""
    from gradsurrogate.runs import StoreBusyError

    try:
        return int(body() or 0)
    except (ValueError, StoreBusyError) as err:
        print(f"gradsurrogate {prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        print(f"gradsurrogate {prog}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"gradsurrogate {prog}: error: out of memory (a size too large for this "
              "machine?)", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # argparse has printed its own "PROG: error: ..." line
        return exit_.code if isinstance(exit_.code, int) else 2


if __name__ == "__main__":
    raise SystemExit(main())
