"""The target functions of the reference's experiments and their data.

A :class:`DiffnetProblem` is a function with its exact derivatives, x (B, n) -> f (B, 1),
J (B, 1, n), H (B, 1, n, n); :func:`make_data` draws the noisy training set (uniform on
[-π, π]^n, Gaussian noise on x, f, J, H) and the noise-free test grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DIFFNET_PROBLEMS", "DiffnetProblem", "make_data"]


@dataclass(frozen=True)
class DiffnetProblem:
    """A target function with its exact derivatives: x (B, n) -> f (B, 1), J (B, 1, n),
    H (B, 1, n, n)."""

    name: str
    n_in: int
    depth: int  # hidden layers in the reference's setting
    truth: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]
    n_test_side: int  # test points per axis (evenly spaced, endpoints included)


def _sin1d(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return torch.sin(x), torch.cos(x)[:, :, None], -torch.sin(x)[:, :, None, None]


def _cossin2d(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    cx, sx, cy, sy = x[:, 0].cos(), x[:, 0].sin(), x[:, 1].cos(), x[:, 1].sin()
    f = (cx * sy)[:, None]
    jac = torch.stack([-sx * sy, cx * cy], dim=-1)[:, None, :]
    off = -sx * cy
    hes = torch.stack([torch.stack([-cx * sy, off], -1), torch.stack([off, -cx * sy], -1)], -2)
    return f, jac, hes[:, None]


DIFFNET_PROBLEMS: dict[str, DiffnetProblem] = {
    "sin1d": DiffnetProblem("sin1d", 1, 1, _sin1d, 100),
    "cossin2d": DiffnetProblem("cossin2d", 2, 2, _cossin2d, 50),
}


def make_data(
    problem: DiffnetProblem, n_train: int, noise: float, gen: torch.Generator, dtype: torch.dtype
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Noisy training set (uniform on [-π, π]^n) and noise-free test grid.

    Targets are computed at the clean inputs; Gaussian noise of std ``noise`` is then added
    to x, f, J and H, as in the reference.
    """
    x = (torch.rand(n_train, problem.n_in, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    f, jac, hes = problem.truth(x)
    train = {"x": x, "f": f, "J": jac, "H": hes}
    train = {k: v + noise * torch.randn(v.shape, generator=gen, dtype=v.dtype)
             for k, v in train.items()}
    axis = torch.linspace(-math.pi, math.pi, problem.n_test_side, dtype=torch.float64)
    grid = torch.cartesian_prod(*[axis] * problem.n_in).reshape(-1, problem.n_in)
    f, jac, hes = problem.truth(grid)
    test = {"x": grid, "f": f, "J": jac, "H": hes}
    cast = lambda d: {k: v.to(dtype) for k, v in d.items()}
    return cast(train), test
