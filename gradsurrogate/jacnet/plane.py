"""2-d experiments: a smooth diffeomorphism of the plane learned with invertible Jacobians
(inverse and round trip), and the path-dependence diagnostic (``none`` vs ``conservative``).

Target ``f(a, b) = (a + ½ sin b, b + ½ tanh a)``: ``f - id`` is ½-Lipschitz, so ``f`` is a
global diffeomorphism with ``det J ≥ 3/4``; ``J`` is not symmetric, so the ``invertible``
structure (symmetric positive definite) can only approximate it while ``orientation``
(``expm``) can represent it. Scalar part: ``g(a, b) = sin a · cos b`` with ``none`` (a free
2-vector field, generally not curl-free) vs ``conservative`` (``∇φ``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from gradsurrogate.registry import check_int, check_number

from .config import set_fields, training_fields
from .model import JacNet
from .training import train

__all__ = ["EVAL_2D", "MODELS_2D", "Config2D", "diffeo", "run_2d", "scalar"]

EVAL_2D = {"method": "gauss-legendre", "n": 48}


def diffeo(x: Tensor) -> Tensor:
    """``(n, 2) -> (n, 2)``: ``(a + ½ sin b, b + ½ tanh a)``."""
    a, b = x[:, 0], x[:, 1]
    return torch.stack([a + 0.5 * torch.sin(b), b + 0.5 * torch.tanh(a)], -1)


def scalar(x: Tensor) -> Tensor:
    """``(n, 2) -> (n, 1)``: ``sin a · cos b``."""
    return (torch.sin(x[:, 0]) * torch.cos(x[:, 1]))[:, None]


@dataclass(frozen=True)
class Config2D:
    """The 2-d run (all five models of ``MODELS_2D`` on one seed), validated once.

    Points are uniform in ``[-box, box]²``; ``depth`` hidden layers; ``refine`` quasi-Newton
    steps after the ODE inverse, whose dopri5 rtol = atol is ``inverse_tol``; ``anneal`` the
    annealing threshold's scale (``sum``: batch sum of ``|y|``, the reference; ``mean``)."""

    n_train: int = 256
    n_test: int = 400
    box: float = 2.0
    hidden: int = 64
    depth: int = 2
    activation: str = "tanh"
    lr: float = 0.01
    steps: int = 300
    seed: int = 0
    method: str = "gauss-legendre"
    refine: int = 5
    inverse_tol: float = 1e-5
    anneal: str = "sum"

    def __post_init__(self) -> None:
        for name, low in (("n_train", 1), ("n_test", 1), ("hidden", 1), ("depth", 1),
                          ("steps", 1), ("seed", 0), ("refine", 0)):
            check_int(getattr(self, name), name, low)
        set_fields(self, **training_fields(self), box=check_number(self.box, "box"))

    @classmethod
    def from_record(cls, config: dict[str, Any]) -> Config2D:
        """The config of a stored record; records from before ``anneal`` existed used the
        mean rule."""
        return cls(**{"anneal": "mean", **config})


#: (task, structure) of the 2-d models, in training order
MODELS_2D: tuple[tuple[str, str], ...] = (
    ("vector", "none"), ("vector", "invertible"), ("vector", "orientation"),
    ("scalar", "none"), ("scalar", "conservative"),
)


def _box(n: int, box: float, gen: torch.Generator) -> Tensor:
    return (2 * torch.rand(n, 2, generator=gen) - 1) * box


def run_2d(cfg: Config2D) -> dict[str, Any]:
    """Train ``none``/``invertible``/``orientation`` on ``diffeo`` and ``none``/``conservative``
    on ``scalar``; report test errors, inverse errors, ``min det J`` and path gaps.

    A non-finite training loss stops the run (``diverged``, ``diverged_step``,
    ``diverged_model``); the models after it are not trained."""
    gen = torch.Generator().manual_seed(cfg.seed)
    x_tr, x_te = _box(cfg.n_train, cfg.box, gen), _box(cfg.n_test, cfg.box, gen)
    out: dict[str, Any] = {"config": asdict(cfg), "models": {}, "diverged": False,
                           "diverged_step": None, "diverged_model": None}
    for task, structure in MODELS_2D:
        f = diffeo if task == "vector" else scalar
        torch.manual_seed(cfg.seed)
        d_out = 2 if task == "vector" else 1
        model = JacNet(2, d_out, cfg.hidden, cfg.depth, structure, activation=cfg.activation,
                       y0=f(torch.zeros(1, 2))[0])
        fit = train(model, x_tr, f(x_tr), cfg.steps, cfg.lr, cfg.method, anneal=cfg.anneal)
        history = fit.history
        if fit.diverged:
            name = f"{task}/{structure}"
            out["models"][name] = {"task": task, "structure": structure,
                                   "loss": [h["loss"] for h in history],
                                   "diverged_step": fit.diverged_step}
            out.update(diverged=True, diverged_step=fit.diverged_step, diverged_model=name)
            return out
        with torch.no_grad():
            pred = model(x_te, **EVAL_2D)
        gap = model.path_gap(x_te, **EVAL_2D).detach()
        rec: dict[str, Any] = {
            "task": task, "structure": structure, "train_l1": history[-1]["loss"],
            "test_mae": (pred - f(x_te)).norm(dim=-1).mean().item(),
            "gap_mean": gap.mean().item(), "gap_max": gap.max().item(),
            "loss": [h["loss"] for h in history], "atol": [h["atol"] for h in history],
            "n": [h.get("n") for h in history],
        }
        if task == "vector":
            with torch.no_grad():
                rec["min_det"] = torch.linalg.det(model.jacobian(x_te)).min().item()
        if model.structure.invertible:
            tol = {"rtol": cfg.inverse_tol, "atol": cfg.inverse_tol}
            y_true = f(x_te)
            with torch.no_grad():
                plain = model.inverse(y_true, **tol)
                refined = model.inverse(y_true, refine=cfg.refine, **tol)
                rt_plain = model.inverse(pred, **tol)
                rt_ref = model.inverse(pred, refine=cfg.refine, **tol)
            rec.update(
                inv_true_mae=(plain - x_te).norm(dim=-1).mean().item(),
                inv_true_mae_refined=(refined - x_te).norm(dim=-1).mean().item(),
                round_trip_max=(rt_plain - x_te).norm(dim=-1).max().item(),
                round_trip_max_refined=(rt_ref - x_te).norm(dim=-1).max().item(),
            )
            if structure == "orientation":
                out["grid_model"] = _warp(model)
        out["models"][f"{task}/{structure}"] = rec
    out["grid_true"] = _warp(diffeo)
    return out


def _warp(fn: Any, lines: int = 9, pts: int = 60, box: float = 2.0) -> list[list[list[float]]]:
    """Images of the grid lines of ``[-box, box]²`` under ``fn`` (for the figure)."""
    s = torch.linspace(-box, box, pts)
    curves = []
    for v in torch.linspace(-box, box, lines):
        for xy in (torch.stack([s, v.expand(pts)], -1), torch.stack([v.expand(pts), s], -1)):
            with torch.no_grad():
                y = fn(xy, **EVAL_2D) if isinstance(fn, JacNet) else fn(xy)
            curves.append(y.tolist())
    return curves
