"""Compare two benchmark tables by overlap of 95% confidence intervals (not digits).

    .venv/bin/python scripts/compare_tables.py README.md runs/xor          # README vs fresh run
    .venv/bin/python scripts/compare_tables.py old/summary.json runs/xor
    .venv/bin/python scripts/compare_tables.py README.md runs/xor --old-std 3  # '± std' tables

Exit status 0 when every old cell has a new cell whose interval overlaps it, 1 otherwise,
2 on a bad argument. See ``gradsurrogate.xor.compare``.
"""

import sys

from gradsurrogate.xor.compare import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
