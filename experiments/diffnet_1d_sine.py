"""Deep differential network on the reference's 1-d problem f(x) = sin(x).

Thin wrapper over :mod:`gradsurrogate.diffnet` (defaults = the reference's setting: width
128, 1 hidden layer, 25,600 noisy samples, 500 epochs, batch 256, Adam amsgrad 1e-3,
weight decay 1e-6, seed 42) for ReLU, SoftPlus, Tanh and cos(2πx), Type 1 / Type 2 /
Hessian-supervised losses. Writes table.md and PNGs into --out (default runs/diffnet).
``--recipe tuned`` swaps the optimiser for plain Adam, lr 3e-3 cosine-annealed to 3e-6.

    .venv/bin/python experiments/diffnet_1d_sine.py [--quick] [--activations relu tanh]
"""

from __future__ import annotations

import sys

from gradsurrogate.diffnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["--problem", "sin1d", *sys.argv[1:]]))
