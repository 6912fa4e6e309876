"""Figures of restoration runs: ``matplotlib.figure.Figure`` objects (no global backend, no
pyplot state), saved atomically as PNG by the ``plot_*`` functions.

* :func:`plot_loss_fields`: for each loss, the field ``-∇_x loss(x, y)`` over a 2-d grid of
  predictions ``x`` with a fixed target ``y`` (a quiver plot per loss; colour = loss value);
* :func:`plot_jacobians`: true vs restored Jacobian heatmaps on one colour scale, plus their
  difference;
* :func:`plot_curves`: metric curves (cosine, relative error, sign agreement, loss) against
  directional evaluations, one line per run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..io import save_figure
from .losses import get_loss

__all__ = ["curves_figure", "jacobians_figure", "loss_field", "loss_fields_figure", "plot_curves",
           "plot_jacobians", "plot_loss_fields"]


def loss_field(loss: str, target: Sequence[float] = (1.0, 0.5), extent: float = 2.0,
               grid: int = 17) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Grid ``X, Y`` (grid, grid), the descent field ``-∇_x loss(x, y)`` (grid, grid, 2) and the
    loss values (grid, grid), in float64, for 2-d predictions ``x`` and the fixed ``target``."""
    fn = get_loss(loss)
    ax = torch.linspace(-extent, extent, grid, dtype=torch.float64)
    gx, gy = torch.meshgrid(ax, ax, indexing="xy")
    pts = torch.stack([gx, gy], -1).reshape(-1, 1, 2).requires_grad_(True)
    y = torch.tensor(target, dtype=torch.float64).expand(pts.shape[0], 1, 2)
    values = torch.stack([fn(p, t) for p, t in zip(pts, y)])
    (grad,) = torch.autograd.grad(values.sum(), pts)
    return gx, gy, -grad.reshape(grid, grid, 2), values.detach().reshape(grid, grid)


def loss_fields_figure(losses: Sequence[str], target: Sequence[float] = (1.0, 0.5),
                       extent: float = 2.0, grid: int = 17) -> Figure:
    """One quiver panel per loss: arrows ``-∇_x loss`` with length ``tanh(|∇| / median |∇|)``
    (saturating, so both vanishing and exploding gradients stay visible), colour = loss."""
    cols = min(4, len(losses))
    rows = math.ceil(len(losses) / cols)
    fig = Figure(figsize=(3.0 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, losses):
        gx, gy, field, val = loss_field(name, target, extent, grid)
        norm = field.norm(dim=-1, keepdim=True)
        scale = torch.tanh(norm / norm.median().clamp_min(1e-300))
        unit = torch.where(norm > 0, field / norm.clamp_min(1e-300), torch.zeros_like(field))
        unit = unit * scale
        ax.quiver(gx.numpy(), gy.numpy(), unit[..., 0].numpy(), unit[..., 1].numpy(),
                  val.numpy(), cmap="viridis", pivot="mid", scale=grid * 1.3)
        ax.plot([target[0]], [target[1]], "r*", ms=10)
        ax.plot([0], [0], "k+", ms=8)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(losses):]:
        ax.axis("off")
    fig.suptitle(f"-grad_x loss(x, y), target y = {tuple(target)} (red star)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_loss_fields(losses: Sequence[str], path: str | Path,
                     target: Sequence[float] = (1.0, 0.5), extent: float = 2.0,
                     grid: int = 17) -> Path:
    """:func:`loss_fields_figure` saved as ``path``."""
    return save_figure(loss_fields_figure(losses, target, extent, grid), path, dpi=80)


def jacobians_figure(true: Tensor, restored: Tensor, title: str = "") -> Figure:
    """Heatmaps of ``true`` and ``restored`` (o, i) on one symmetric colour scale, and the
    difference (non-finite entries are drawn blank)."""
    t, r = true.detach().cpu().double(), restored.detach().cpu().double()
    finite = torch.cat([t.flatten(), r.flatten()])
    finite = finite[torch.isfinite(finite)]
    lim = float(max(finite.abs().max() if finite.numel() else 0.0, 1e-12))
    fig = Figure(figsize=(10, 3.4))
    axes = fig.subplots(1, 3)
    for ax, mat, name in zip(axes, (t, r, r - t), ("true J", "restored J", "restored - true")):
        im = ax.imshow(mat.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("input i")
        ax.set_ylabel("output o")
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_jacobians(true: Tensor, restored: Tensor, path: str | Path, title: str = "") -> Path:
    """:func:`jacobians_figure` saved as ``path``."""
    return save_figure(jacobians_figure(true, restored, title), path, dpi=80)


def curves_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]],
                  metrics: Sequence[str] = ("cosine", "rel_error", "sign_agreement", "loss"),
                  x: str = "jvp_evals") -> Figure:
    """Metric curves of several runs (``label -> history records``) against ``x``."""
    fig = Figure(figsize=(3.6 * len(metrics), 3.2))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, hist in runs.items():
            xs = [h[x] for h in hist if metric in h]
            ys = [math.nan if h[metric] is None else h[metric] for h in hist if metric in h]
            ax.plot(xs, ys, label=label, lw=1.2)
        ax.set_xlabel(x)
        ax.set_title(metric, fontsize=9)
        if metric in ("rel_error",):
            ax.set_yscale("log")
        if metric == "cosine":
            ax.set_ylim(-0.1, 1.02)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path,
                metrics: Sequence[str] = ("cosine", "rel_error", "sign_agreement", "loss"),
                x: str = "jvp_evals") -> Path:
    """:func:`curves_figure` saved as ``path``."""
    return save_figure(curves_figure(runs, metrics, x), path, dpi=80)
