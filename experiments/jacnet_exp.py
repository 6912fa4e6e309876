"""JacNet experiment 'exp' (defaults = the paper's setting); thin wrapper over
`gradsurrogate.jacnet.cli`. Example: `python experiments/jacnet_exp.py --method dopri5`."""

from __future__ import annotations

import sys

from gradsurrogate.jacnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["exp", *sys.argv[1:]]))
