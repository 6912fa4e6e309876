"""The paper's 1-d experiments: exp(x) with an invertible Jacobian, |x| with a 1-Lipschitz one,
each against an unconstrained baseline, on the reference code's protocol by default: 5 evenly
spaced training points ``linspace(-1, 1, 5)`` (``points="random"``: uniform draws, the paper's
wording), 100 test points uniform in [-2, 2], 64 hidden units, Adam lr 0.01, 50 full-batch
steps, invertible ε = 1e-3, tolerance annealing on the batch sum of ``|y|``, anchor x0 = 0,
y0 = f(0)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from gradsurrogate.integrate import line_integral
from gradsurrogate.registry import check_choice, check_int, check_number, lookup

from .config import check_range, set_fields, training_fields
from .model import JacNet
from .pinv import PseudoInverseWarning
from .training import train

__all__ = ["DTYPES", "EVAL_1D", "POINTS", "TARGETS_1D", "Config1D", "Target1D", "get_target",
           "run_1d", "summary_rows", "training_points"]

#: evaluation forward: adaptive quadrature with a tolerance per dtype (float32 cannot resolve
#: much below 1e-4 on the kinked LeakyReLU integrands), so errors are the model's, not the
#: integrator's
EVAL_1D: dict[str, Any] = {"method": "adaptive"}
EVAL_TOL: dict[torch.dtype, float] = {torch.float32: 1e-4, torch.float64: 1e-9}
#: fixed RK4 steps of the pseudo-inverse ODE (near a zero of J it is singular: an adaptive
#: solver stalls there, sharing its step size with the whole batch)
PINV_STEPS = 256
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Target1D:
    """A 1-d target with its structured model and the unconstrained baseline of the reference."""

    f: Callable[[Tensor], Tensor]
    inverse: Callable[[Tensor], Tensor] | None
    structure: str
    structure_opts: dict[str, Any]
    baseline_opts: dict[str, Any]


TARGETS_1D: dict[str, Target1D] = {
    # the invertible model's ε is ``Config1D.eps`` (the reference: 1e-3 in 1-d)
    "exp": Target1D(torch.exp, torch.log, "invertible", {}, {"bound": 10.0}),
    "abs": Target1D(torch.abs, None, "lipschitz", {"k": 1.0}, {}),
}
#: how the training points are placed on ``train_range``
POINTS: tuple[str, ...] = ("even", "random")


@dataclass(frozen=True)
class Config1D:
    """One 1-d run (one seed: the structured model and its baseline), validated once.

    Ranges are ``(lo, hi)`` with ``lo < hi``; ``points`` places the ``n_train`` training points:
    ``even`` (``linspace``, the reference code) or ``random`` (uniform draws of the seed);
    ``eps`` is the invertible structure's ε; ``anneal`` the annealing threshold's scale
    (``sum``: batch sum of ``|y|``, the reference; ``mean``); ``grid`` points on
    ``test_range`` measure the guarantee; ``inverse_tol`` is dopri5's rtol = atol for the
    learned inverse."""

    target: str = "exp"
    n_train: int = 5
    n_test: int = 100
    train_range: tuple[float, float] = (-1.0, 1.0)
    test_range: tuple[float, float] = (-2.0, 2.0)
    hidden: int = 64
    activation: str = "leaky_relu"
    lr: float = 0.01
    steps: int = 50
    seed: int = 0
    method: str = "gauss-legendre"
    dtype: str = "float32"
    grid: int = 2001
    inverse_tol: float = 1e-5
    points: str = "even"
    eps: float = 1e-3
    anneal: str = "sum"

    def __post_init__(self) -> None:
        for name, low in (("n_train", 1), ("n_test", 1), ("hidden", 1), ("steps", 1),
                          ("seed", 0), ("grid", 2)):
            check_int(getattr(self, name), name, low)
        set_fields(
            self,
            target=check_choice(self.target, TARGETS_1D, "1-d target"),
            train_range=check_range(self.train_range, "train_range"),
            test_range=check_range(self.test_range, "test_range"),
            **training_fields(self),
            dtype=check_choice(self.dtype, DTYPES, "dtype"),
            points=check_choice(self.points, POINTS, "training points"),
            eps=check_number(self.eps, "eps"),
        )

    @classmethod
    def from_record(cls, config: dict[str, Any]) -> Config1D:
        """The config of a stored record; records from before ``points``/``eps``/``anneal``
        existed were made with random points, ε = 1e-4 and the mean rule."""
        legacy = {} if "points" in config else {"points": "random", "eps": 1e-4,
                                                "anneal": "mean"}
        return cls(**{**config, **legacy})


def get_target(name: str) -> Target1D:
    """The 1-d target registered as ``name``; ``ValueError`` naming the accepted ones."""
    return lookup(TARGETS_1D, name, "1-d target")


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    return (lo + (hi - lo) * torch.rand(n, 1, generator=gen, dtype=torch.float64)).to(dtype)


def training_points(cfg: Config1D, gen: torch.Generator | None = None) -> Tensor:
    """``(n_train, 1)`` training inputs: ``linspace`` over ``train_range`` (``even``) or
    uniform draws from ``gen`` (``random``; default: a generator seeded with ``cfg.seed``)."""
    dtype = DTYPES[cfg.dtype]
    if cfg.points == "even":
        return torch.linspace(*cfg.train_range, cfg.n_train, dtype=torch.float64)[:, None].to(dtype)
    gen = torch.Generator().manual_seed(cfg.seed) if gen is None else gen
    return _uniform(cfg.n_train, *cfg.train_range, gen, dtype)


def _predict(model: JacNet, x: Tensor) -> Tensor:
    tol = EVAL_TOL.get(x.dtype, 1e-4)
    with torch.no_grad():
        return model(x, **EVAL_1D, rtol=tol, atol=tol)


def _inverse_curve(model: JacNet, tgt: Target1D, cfg: Config1D, x_te: Tensor, pred_te: Tensor,
                   x_tr: Tensor) -> dict[str, Any]:
    """The learned inverse on ``y ∈ f(test_range)`` (exact path for invertible structures,
    the reference's pseudo-inverse path otherwise, with ``PINV_STEPS`` RK4 steps: its warning
    is expected here) and round trips ``inverse(ŷ(x))`` on the test and training points."""
    dtype = DTYPES[cfg.dtype]
    lo, hi = tgt.f(torch.tensor(cfg.test_range, dtype=dtype))
    ys = torch.linspace(lo.item(), hi.item(), 200, dtype=dtype)[:, None]
    tol = {"rtol": cfg.inverse_tol, "atol": cfg.inverse_tol}
    solver = tol if model.structure.invertible else {"method": "rk4", "steps": PINV_STEPS}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", PseudoInverseWarning)
        res = model.solve_inverse(ys, **solver)
        xs = res.value
        rec: dict[str, Any] = {"inverse_y": ys[:, 0].tolist(), "inverse": xs[:, 0].tolist(),
                               "inverse_mae": (xs - tgt.inverse(ys)).abs().mean().item(),
                               "inverse_evals": res.n_evals,
                               "inverse_exact": model.structure.invertible}
        if model.structure.invertible:
            rt = model.inverse(pred_te, **tol)
            rt_tr = model.inverse(_predict(model, x_tr), **tol)
            rec.update(round_trip_max=(rt - x_te).abs().max().item(),
                       round_trip_train_max=(rt_tr - x_tr).abs().max().item())
    return rec


def run_1d(cfg: Config1D) -> dict[str, Any]:
    """Train the structured model and the baseline; return data for the table and figures.

    Test metrics are mean/max absolute error on the ``n_test`` points; ``guarantee`` checks
    the structure on a dense grid over the test range: the smallest ``J`` and smallest
    finite-difference slope (monotone, invertible) or the largest ``|J|`` and ``|Δŷ/Δx|``
    (1-Lipschitz). For exp, both models are inverted on ``y ∈ exp(test_range)``: the
    invertible one exactly, the baseline through the pseudo-inverse (the paper's figure).

    A non-finite training loss stops the run: ``diverged`` is True, ``diverged_step`` and
    ``diverged_model`` say where, and the model that diverged has only its partial ``history``
    (the baseline is not trained after a diverged structured model).
    """
    tgt = get_target(cfg.target)
    dtype = DTYPES[cfg.dtype]
    gen = torch.Generator().manual_seed(cfg.seed)
    x_tr = training_points(cfg, gen)  # random points come first from gen, as they always did
    x_te = _uniform(cfg.n_test, *cfg.test_range, gen, dtype)
    y_tr, y_te = tgt.f(x_tr), tgt.f(x_te)
    grid = torch.linspace(*cfg.test_range, cfg.grid, dtype=dtype)[:, None]
    x0 = torch.zeros(1, dtype=dtype)
    y0 = tgt.f(x0)
    out: dict[str, Any] = {"config": asdict(cfg), "x_train": x_tr[:, 0].tolist(),
                           "grid": grid[:, 0].tolist(), "target": tgt.f(grid)[:, 0].tolist(),
                           "diverged": False, "diverged_step": None, "diverged_model": None}
    s_opts = {**tgt.structure_opts, **({"eps": cfg.eps} if tgt.structure == "invertible" else {})}
    for role, structure, opts in [("structured", tgt.structure, s_opts),
                                  ("baseline", "none", tgt.baseline_opts)]:
        torch.manual_seed(cfg.seed)
        model = JacNet(1, 1, cfg.hidden, 1, structure, activation=cfg.activation, x0=x0,
                       y0=y0, **opts).to(dtype)
        init = _predict(model, grid)
        fit = train(model, x_tr, y_tr, cfg.steps, cfg.lr, cfg.method, anneal=cfg.anneal)
        history = fit.history
        if fit.diverged:
            out[role] = {"structure": structure, "opts": opts, "history": history,
                         "diverged_step": fit.diverged_step}
            out.update(diverged=True, diverged_step=fit.diverged_step, diverged_model=role)
            return out
        pred_te, pred_grid = _predict(model, x_te), _predict(model, grid)
        with torch.no_grad():
            J = model.jacobian(grid)[:, 0, 0]
            # increments between grid neighbours, each its own integral: positive quadrature
            # weights carry the guarantee on J over to the finite-difference slope
            inc = line_integral(model.jacobian, grid[:-1], grid[1:], method="gauss-legendre",
                                n=8).value[:, 0]
        slope = inc / torch.diff(grid[:, 0])
        err = (pred_te - y_te).abs()
        rec: dict[str, Any] = {
            "structure": structure, "opts": opts, "history": history,
            "init": init[:, 0].tolist(), "fit": pred_grid[:, 0].tolist(),
            "jacobian": J.tolist(),
            "train_l1": history[-1]["loss"],
            "test_mae": err.mean().item(), "test_max": err.max().item(),
            "test_rmse": err.pow(2).mean().sqrt().item(),
            "min_J": J.min().item(), "max_abs_J": J.abs().max().item(),
            "min_slope": slope.min().item(), "max_abs_slope": slope.abs().max().item(),
            "total_evals": sum(h["n_evals"] for h in history),
            "train_time": sum(h["time"] for h in history),
            "final_atol": history[-1]["atol"],
        }
        if tgt.inverse is not None:
            rec.update(_inverse_curve(model, tgt, cfg, x_te, pred_te, x_tr))
        out[role] = rec
    return out


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per model of a ``run_1d`` result (or of its stored record)."""
    rows = []
    for role in ("structured", "baseline"):
        r = result[role]
        rows.append({
            "target": result["config"]["target"], "model": role, "structure": r["structure"],
            "train L1": r["train_l1"], "test MAE": r["test_mae"], "test max": r["test_max"],
            "min J": r["min_J"], "max |J|": r["max_abs_J"], "min slope": r["min_slope"],
            "max |slope|": r["max_abs_slope"], "evals": r["total_evals"],
        })
    return rows
