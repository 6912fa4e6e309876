"""Gaussian XOR data: four blobs at (±1, ±1), label = XOR of the blob's two signs.

A point is ``x = c + sigma·z`` with ``c`` drawn uniformly from the four centres
``(±1, ±1)`` and ``z ~ N(0, I₂)``; its clean label is ``y = [c₁ c₂ < 0]`` (1 on the
``(+,-)`` and ``(-,+)`` blobs). A fraction ``label_noise`` of labels is then flipped at random
(each label independently with that probability).

Bayes-optimal accuracy: the class densities are ``∝ cosh((x₁ ± x₂)/σ²)``, so the optimal rule is
``ŷ = [x₁ x₂ < 0]`` for every ``sigma`` (and every ``label_noise < 1/2``). With
``q = Φ(1/σ)`` (the chance that a coordinate stays on its centre's side) the rule is right on clean
labels with probability ``a = q² + (1-q)²``, and with label noise ``η`` the accuracy is
``(1-η)·a + η·(1-a)``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import Tensor

from ..registry import check_choice, check_int, check_number

__all__ = ["XorData", "bayes_accuracy", "derive_seed", "make_xor", "make_xor_split"]

#: Named random streams derived from one seed (see :func:`derive_seed`).
STREAMS: dict[str, int] = {"train": 0, "test": 1, "batches": 2, "init": 3, "noise": 4}


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named stream of ``seed`` (independent streams per name)."""
    check_choice(stream, STREAMS, "random stream")
    if isinstance(seed, np.integer):
        seed = int(seed)
    check_int(seed, "seed", 0)
    state = np.random.SeedSequence([int(seed), STREAMS[stream]]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def generator(seed: int, stream: str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded for ``stream`` of ``seed``."""
    return torch.Generator().manual_seed(derive_seed(seed, stream))


def bayes_accuracy(sigma: float, label_noise: float = 0.0) -> float:
    """Accuracy of the optimal rule ``[x₁ x₂ < 0]``: ``(1-η)a + η(1-a)``, ``a = q² + (1-q)²``."""
    check_data_params(sigma, label_noise)
    q = 0.5 * (1.0 + math.erf(1.0 / (sigma * math.sqrt(2.0))))  # Φ(1/σ)
    a = q * q + (1.0 - q) * (1.0 - q)
    return (1.0 - label_noise) * a + label_noise * (1.0 - a)


def check_data_params(sigma: float, label_noise: float) -> None:
    """``ValueError`` unless ``sigma`` is finite and positive and ``label_noise`` in [0, 0.5)."""
    check_number(sigma, "sigma")
    check_number(label_noise, "label_noise", low=0.0, high=0.5, low_open=False, high_open=True)


@dataclasses.dataclass(frozen=True)
class XorData:
    """Points ``x`` (n, 2), labels ``y`` (n,) int64, and the clean labels ``y_clean`` (n,)."""

    x: Tensor
    y: Tensor
    y_clean: Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


def make_xor(n: int, sigma: float, label_noise: float, gen: torch.Generator,
             dtype: torch.dtype | None = None, device: torch.device | str | None = None
             ) -> XorData:
    """Draw ``n`` points from ``gen`` (on CPU, so every device gets the same numbers)."""
    check_data_params(sigma, label_noise)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of points must be a positive integer; got {n!r}")
    dtype = dtype or torch.get_default_dtype()
    blob = torch.randint(0, 4, (n,), generator=gen)
    centres = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=dtype)
    x = centres[blob] + sigma * torch.randn(n, 2, generator=gen, dtype=dtype)
    y_clean = ((blob == 1) | (blob == 2)).long()
    flip = torch.rand(n, generator=gen, dtype=torch.float64) < label_noise
    y = torch.where(flip, 1 - y_clean, y_clean)
    return XorData(x.to(device), y.to(device), y_clean.to(device))


def make_xor_split(n_train: int, n_test: int, sigma: float, label_noise: float, seed: int,
                   dtype: torch.dtype | None = None, device: torch.device | str | None = None
                   ) -> tuple[XorData, XorData]:
    """Train and test sets from independent streams of ``seed`` (changing ``n_train`` leaves the
    test set unchanged)."""
    train = make_xor(n_train, sigma, label_noise, generator(seed, "train"), dtype, device)
    test = make_xor(n_test, sigma, label_noise, generator(seed, "test"), dtype, device)
    return train, test
