"""The destroy-the-Jacobian experiment on Gaussian XOR (the README's main job).

Runs the default grid — every backward target alone and all four together, ``sign`` and
``flip`` with p in {0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.8, 1.0}, depths 2 and 4, seeds
0-2, plus exact baselines (336 runs) — vectorised and resumable, then writes the report.
Extra flags go to ``gradsurrogate xor-grid`` (e.g. ``--steps 1000``, ``--wandb disabled``).

    .venv/bin/python experiments/xor_destroy.py --out runs/xor
"""

from __future__ import annotations

import sys

from gradsurrogate.xor.cli import grid_main


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args = ["--out", "runs/xor", *args]
    return grid_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
