"""The ``gradsurrogate`` console script: ``gradsurrogate <command> [flags]``.

Each command lives with the module that implements it; this file only maps names to
``module:function`` entry points (imported lazily, so ``--help`` stays fast). Every entry
point takes the remaining ``argv`` list and returns an exit code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("gradsurrogate.demo:main", "short tour of the backward modes on one layer"),
    "xor": ("gradsurrogate.xor.cli:run_main", "train one XOR MLP under a backward spec"),
    "xor-grid": ("gradsurrogate.xor.cli:grid_main", "run the destroy-Jacobian grid (resumable)"),
    "sweep": ("gradsurrogate.xor.cli:sweep_main", "expand a W&B sweep YAML and run it locally"),
    "report": ("gradsurrogate.xor.cli:report_main", "Markdown + PNG report of a results dir"),
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
        print(
            f"gradsurrogate: unknown command {name!r}; accepted: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
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


if __name__ == "__main__":
    raise SystemExit(main())
