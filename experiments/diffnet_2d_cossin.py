"""Deep differential network on the reference's 2-d problem f(x, y) = cos(x)·sin(y).

Thin wrapper over :mod:`gradsurrogate.diffnet` (defaults = the reference's setting: width
128, 2 hidden layers, 25,600 noisy samples on [-π, π]², 500 epochs, batch 256, Adam amsgrad
1e-3, weight decay 1e-6, seed 42; test on a 50×50 grid) for ReLU, SoftPlus, Tanh and
cos(2πx), Type 1 / Type 2 / Hessian-supervised losses. Writes table.md and PNGs into --out.
``--recipe tuned`` swaps the optimiser for plain Adam, lr 3e-3 cosine-annealed to 3e-6.

    .venv/bin/python experiments/diffnet_2d_cossin.py [--quick] [--activations relu tanh]
"""

from __future__ import annotations

import sys

from gradsurrogate.diffnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["--problem", "cossin2d", *sys.argv[1:]]))
