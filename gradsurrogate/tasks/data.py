"""Data sets of the tasks, built in-process (no download) and cached per process.

* MNIST-1D: ``mnist1d.data.make_dataset(get_dataset_args())`` — the authors' default data set
  (4,000 train + 1,000 test sequences of length 40, 10 classes, their seed); ``n_train`` /
  ``n_test`` take the first examples.
* digits: sklearn's ``load_digits`` (1,797 8×8 images, pixels / 16), split 1,437 / 360 by a
  fixed permutation (``numpy`` seed 0).
* sort: ``L = 8`` tokens uniform in ``{0..9}``; the target of position ``i`` is the ``i``-th
  smallest token (per-token labels, y (n, 8)); drawn from the config's data seed.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..io import atomic_path
from ..xor.data import XorData, generator

if TYPE_CHECKING:
    from ..xor.config import XorConfig

__all__ = ["SORT_LENGTH", "SORT_VOCAB", "cache_dir", "digits_split", "make_sort", "mnist1d_arrays",
           "mnist1d_split", "sort_split"]

SORT_LENGTH, SORT_VOCAB = 8, 10


def cache_dir() -> Path:
    """``$GRADSURROGATE_CACHE``, else ``~/.cache/gradsurrogate`` (built data sets)."""
    return Path(os.environ.get("GRADSURROGATE_CACHE") or
                Path.home() / ".cache" / "gradsurrogate")


@functools.lru_cache(maxsize=1)
def mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x (4000, 40), y (4000,), x_test (1000, 40), y_test (1000,)) of the authors' default.

    Building takes seconds; the arrays are kept in :func:`cache_dir` (``mnist1d-default.npz``,
    rebuilt if unreadable; not kept if the folder is not writable)."""
    keys = ("x", "y", "x_test", "y_test")
    path = cache_dir() / "mnist1d-default.npz"
    try:
        with np.load(path) as stored:
            return tuple(stored[k] for k in keys)  # type: ignore[return-value]
    except (OSError, KeyError, ValueError):
        pass
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ValueError("the MNIST-1D tasks need the mnist1d package: pip install mnist1d"
                         ) from None
    d = make_dataset(get_dataset_args())
    arrays = tuple(np.asarray(d[k]) for k in keys)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **dict(zip(keys, arrays)))
    except OSError:
        pass
    return arrays  # type: ignore[return-value]


def _split(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, n_train: int,
           n_test: int, dtype: torch.dtype, device: torch.device) -> tuple[XorData, XorData]:
    def make(a: np.ndarray, b: np.ndarray, n: int) -> XorData:
        xs = torch.as_tensor(a[:n]).to(dtype=dtype, device=device)
        ys = torch.as_tensor(b[:n]).long().to(device)
        return XorData(xs, ys, ys)

    return make(x, y, n_train), make(xt, yt, n_test)


def mnist1d_split(config: XorConfig, dtype: torch.dtype, device: torch.device
                  ) -> tuple[XorData, XorData]:
    """MNIST-1D train/test: x (n, 40), y (n,) in ``0..9``."""
    return _split(*mnist1d_arrays(), config.n_train, config.n_test, dtype, device)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError("the digits-mlp task needs scikit-learn: pip install scikit-learn"
                         ) from None
    data = load_digits()
    perm = np.random.RandomState(0).permutation(len(data.target))
    x, y = data.data[perm] / 16.0, data.target[perm]
    return x[:1437], y[:1437], x[1437:], y[1437:]


def digits_split(config: XorConfig, dtype: torch.dtype, device: torch.device
                 ) -> tuple[XorData, XorData]:
    """sklearn digits train/test: x (n, 64) in [0, 1], y (n,) in ``0..9``."""
    return _split(*_digits(), config.n_train, config.n_test, dtype, device)


def make_sort(n: int, gen: torch.Generator, device: torch.device) -> XorData:
    """``n`` sequences x (n, 8) of tokens in ``0..9`` (int64) and y = sorted x (n, 8)."""
    x = torch.randint(0, SORT_VOCAB, (n, SORT_LENGTH), generator=gen)
    y = torch.sort(x, dim=-1).values
    return XorData(x.to(device), y.to(device), y.to(device))


def sort_split(config: XorConfig, dtype: torch.dtype, device: torch.device
               ) -> tuple[XorData, XorData]:
    """Train/test sequences from independent streams of the data seed."""
    del dtype  # tokens are integers
    return (make_sort(config.n_train, generator(config.data_seed, "train"), device),
            make_sort(config.n_test, generator(config.data_seed, "test"), device))
