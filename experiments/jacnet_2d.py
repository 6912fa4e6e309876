"""JacNet experiment '2d' (defaults = the paper's setting); thin wrapper over
`gradsurrogate.jacnet.cli`. Example: `python experiments/jacnet_2d.py --method dopri5`."""

from __future__ import annotations

import sys

from gradsurrogate.jacnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["2d", *sys.argv[1:]]))
