"""JacNet experiment '100d' (the documented reduced setting by default; see docs/jacnet.md):
minibatch training, per-epoch logs and checkpoints (an interrupted run resumes after its last
epoch); thin wrapper over `gradsurrogate.jacnet.cli`.
Example: `python experiments/jacnet_100d.py --epochs 20 --n-train 2000`."""

from __future__ import annotations

import sys

from gradsurrogate.jacnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["100d", *sys.argv[1:]]))
