"""The 100-dimensional JacNet experiment, trained in minibatches with per-epoch logs and
checkpoints (resume after any epoch).

Target (this package's choice: the reference's 100-d target is not among the facts we have):
``f(x) = Qᵀ exp(Q x)`` with ``Q`` a fixed random orthonormal ``d × d`` matrix (QR of a Gaussian
drawn with seed ``TARGET_SEED``), i.e. the paper's invertible ``exp`` experiment in a rotated
basis. Its Jacobian ``Qᵀ diag(exp(Qx)) Q`` is symmetric positive definite and curl-free, so
the invertible structure ``A Aᵀ + ε I`` (the reference's n-d output activation, ε = 1e-4) can
represent it, and its inverse ``f⁻¹(y) = Qᵀ log(Q y)`` is known in closed form.

Data: ``n_train`` training and ``n_test`` test inputs uniform in ``[-box, box]^d`` (drawn from
the run's seed), anchor ``x0 = 0``, ``y0 = f(0)``. Each model of ``models`` (default
``invertible`` and the unconstrained ``none``) is trained by :class:`~.training.Trainer`
(Adam, minibatches of ``batch_size``, the reference's annealing on the batch sum of ``|y|``),
all models in lockstep one epoch at a time. The affine least-squares fit of the training set
is reported as a reference point.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gradsurrogate.io import atomic_path
from gradsurrogate.registry import check_choice, check_int, check_number

from .config import set_fields, training_fields
from .model import JacNet
from .pinv import PseudoInverseWarning
from .training import Trainer

__all__ = ["EVAL_100D", "MODELS_100D", "TARGET_SEED", "CheckpointWarning", "Config100D",
           "Target100D", "run_100d"]

TARGET_SEED = 1234
#: structures a square high-dimensional model may take
MODELS_100D: tuple[str, ...] = ("invertible", "orientation", "none", "lipschitz")
#: final evaluation forward (per-epoch test error uses half the nodes)
EVAL_100D: dict[str, Any] = {"method": "gauss-legendre", "n": 32}
#: RK4 steps of the pseudo-inverse ODE of non-invertible models
PINV_STEPS_100D = 32


class CheckpointWarning(UserWarning):
    """A checkpoint could not be used (unreadable or another config): training restarts."""


@dataclass(frozen=True)
class Config100D:
    """One 100-d run (all ``models`` on one seed), validated once. ``batch_size`` 0 means
    full batch; ``n_inverse`` test points are inverted (ODE, then ``refine`` quasi-Newton
    steps; dopri5 rtol = atol = ``inverse_tol``); ``max_nodes`` caps the Gauss–Legendre
    training schedule (4..64; a 100×100 ``A Aᵀ`` per node and point makes 64 nodes costly)."""

    dim: int = 100
    n_train: int = 1000
    n_test: int = 200
    box: float = 1.0
    hidden: int = 64
    activation: str = "leaky_relu"
    lr: float = 0.01
    epochs: int = 10
    batch_size: int = 100
    seed: int = 0
    method: str = "gauss-legendre"
    eps: float = 1e-4
    anneal: str = "sum"
    models: tuple[str, ...] = ("invertible", "none")
    n_inverse: int = 20
    refine: int = 3
    inverse_tol: float = 1e-4
    max_nodes: int = 16

    def __post_init__(self) -> None:
        for name, low in (("dim", 1), ("n_train", 1), ("n_test", 1), ("hidden", 1),
                          ("epochs", 1), ("batch_size", 0), ("seed", 0), ("n_inverse", 0),
                          ("refine", 0)):
            check_int(getattr(self, name), name, low)
        check_int(self.max_nodes, "max_nodes", 4, 64)
        models = tuple(self.models) if not isinstance(self.models, str) else (self.models,)
        if not models:
            raise ValueError(f"models must name at least one of {', '.join(MODELS_100D)}")
        set_fields(
            self,
            **training_fields(self),
            box=check_number(self.box, "box"),
            eps=check_number(self.eps, "eps"),
            models=tuple(check_choice(m, MODELS_100D, "100-d model structure") for m in models),
        )
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models must not repeat; got {self.models!r}")


class Target100D:
    """``f(x) = Qᵀ exp(Q x)`` for rows ``x (n, d)``; ``inverse(y) = Qᵀ log(Q y)``."""

    def __init__(self, dim: int, seed: int = TARGET_SEED) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))

    def __call__(self, x: Tensor) -> Tensor:
        Q = self.Q.to(x)
        return torch.exp(x @ Q.T) @ Q

    def inverse(self, y: Tensor) -> Tensor:
        Q = self.Q.to(y)
        return torch.log(y @ Q.T) @ Q


def _mae(pred: Tensor, y: Tensor) -> float:
    return (pred - y).norm(dim=-1).mean().item()


def _affine_reference(x: Tensor, y: Tensor, x_te: Tensor, y_te: Tensor) -> float:
    """Test error of the affine least-squares fit of the training set (in float64)."""
    x, y, x_te, y_te = (t.double() for t in (x, y, x_te, y_te))
    ones = torch.ones(x.shape[0], 1, dtype=x.dtype)
    sol = torch.linalg.lstsq(torch.cat([x, ones], 1), y, driver="gelsd").solution
    pred = torch.cat([x_te, torch.ones(x_te.shape[0], 1, dtype=x.dtype)], 1) @ sol
    return _mae(pred, y_te)


def _load(path: Path | None, cfg: Config100D) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True)
        if not isinstance(state, dict) or state.get("config") != asdict(cfg):
            raise ValueError("it belongs to another config")
        return state
    except Exception as err:  # unreadable, truncated or foreign: train from the start
        warnings.warn(f"checkpoint {str(path)!r} not used ({type(err).__name__}: {err}); "
                      "training this run from the start", CheckpointWarning, stacklevel=2)
        return None


def _evaluate(model: JacNet, tgt: Target100D, cfg: Config100D, x_te: Tensor,
              y_te: Tensor) -> dict[str, Any]:
    """Test error (``EVAL_100D``), Jacobian diagnostics at the test points (smallest
    eigenvalue of the symmetric part, share with ``det J > 0``, condition number) and, on the
    first ``n_inverse`` test points, the inverse of ``ŷ(x)``: round trip ``‖x̂ - x‖`` and
    output residual ``‖ŷ(x̂) - ŷ(x)‖`` (the ODE alone, then refined), and the inverse of the
    true ``y`` against ``x``."""
    with torch.no_grad():
        pred = model(x_te, **EVAL_100D)
        J = model.jacobian(x_te)
        sym = torch.linalg.eigvalsh((J + J.transpose(1, 2)) / 2)
        sign, _ = torch.linalg.slogdet(J)
        cond = torch.linalg.cond(J.double())
    rec: dict[str, Any] = {"test_mae": _mae(pred, y_te),
                           "test_rel": _mae(pred, y_te) / _mae(tgt(torch.zeros_like(x_te)), y_te),
                           "min_sym_eig": sym.min().item(),
                           "det_pos_frac": (sign > 0).double().mean().item(),
                           "cond_median": cond.median().item(), "cond_max": cond.max().item()}
    k = min(cfg.n_inverse, x_te.shape[0])
    if k:
        solver = ({"rtol": cfg.inverse_tol, "atol": cfg.inverse_tol}
                  if model.structure.invertible else {"method": "rk4", "steps": PINV_STEPS_100D})
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", PseudoInverseWarning)
            plain = model.solve_inverse(pred[:k], **solver)
            refined = model.inverse(pred[:k], refine=cfg.refine, forward_opts=EVAL_100D,
                                    **solver)
            of_true = model.inverse(y_te[:k], refine=cfg.refine, forward_opts=EVAL_100D,
                                    **solver)
            resid = [(model(v, **EVAL_100D) - pred[:k]).norm(dim=-1).max().item()
                     for v in (plain.value, refined)]
        rec.update(inverse_exact=model.structure.invertible, inverse_evals=plain.n_evals,
                   round_trip_max=(plain.value - x_te[:k]).norm(dim=-1).max().item(),
                   round_trip_max_refined=(refined - x_te[:k]).norm(dim=-1).max().item(),
                   residual_max=resid[0], residual_max_refined=resid[1],
                   inverse_mae=_mae(of_true, x_te[:k]))
    return rec


def run_100d(cfg: Config100D,
             on_epoch: Callable[[str, dict[str, Any]], None] | None = None,
             checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Train every model of ``cfg.models``; return metrics per model and the epoch logs.

    ``on_epoch(model, summary)`` is called after each model's epoch (training loss, steps,
    evaluations, time, tolerance in force, test error with ``n = 16`` nodes), also again for
    the epochs restored from ``checkpoint`` (so a consumer keyed by epoch stays complete).
    With ``checkpoint``, the state of all models is saved there atomically after each epoch
    and training resumes from it. A non-finite loss stops that model (``diverged``).
    """
    tgt = Target100D(cfg.dim)
    gen = torch.Generator().manual_seed(cfg.seed)
    x_tr = ((2 * torch.rand(cfg.n_train, cfg.dim, generator=gen) - 1) * cfg.box)
    x_te = ((2 * torch.rand(cfg.n_test, cfg.dim, generator=gen) - 1) * cfg.box)
    y_tr, y_te = tgt(x_tr), tgt(x_te)
    y0 = tgt(torch.zeros(1, cfg.dim))[0]
    trainers: dict[str, Trainer] = {}
    for name in cfg.models:
        torch.manual_seed(cfg.seed)
        opts = {"eps": cfg.eps} if name == "invertible" else {}
        model = JacNet(cfg.dim, cfg.dim, cfg.hidden, 1, name, activation=cfg.activation,
                       y0=y0, **opts)
        trainers[name] = Trainer(model, x_tr, y_tr, cfg.lr, cfg.method,
                                 batch_size=cfg.batch_size, anneal=cfg.anneal, seed=cfg.seed,
                                 max_nodes=cfg.max_nodes)
    path = None if checkpoint is None else Path(checkpoint)
    state = _load(path, cfg)
    if state is not None:
        for name, tr in trainers.items():
            tr.load_state_dict(state["trainers"][name])
            for summary in tr.result.epochs:
                if on_epoch is not None:
                    on_epoch(name, summary)

    def test_now(model: JacNet) -> float:
        with torch.no_grad():
            return _mae(model(x_te, method="gauss-legendre", n=16), y_te)

    while True:
        active = {n: tr for n, tr in trainers.items()
                  if not tr.result.diverged and len(tr.result.epochs) < cfg.epochs}
        if not active:
            break
        for tr in active.values():
            summary = tr.epoch()
            if summary is not None:
                summary["test_mae"] = test_now(tr.model)
        if path is not None:
            with atomic_path(path, suffix=".pt") as tmp:
                torch.save({"config": asdict(cfg),
                            "trainers": {n: t.state_dict() for n, t in trainers.items()}}, tmp)
        for name, tr in active.items():
            if not tr.result.diverged and on_epoch is not None:
                on_epoch(name, tr.result.epochs[-1])
    out: dict[str, Any] = {"config": asdict(cfg), "models": {}, "epochs": {},
                           "diverged": False, "diverged_step": None, "diverged_model": None,
                           "reference": {"affine_test_mae": _affine_reference(x_tr, y_tr, x_te,
                                                                              y_te),
                                         "anchor_test_mae": _mae(y0.expand_as(y_te), y_te)}}
    for name, tr in trainers.items():
        res = tr.result
        out["epochs"][name] = res.epochs
        rec: dict[str, Any] = {"structure": name, "epochs_done": len(res.epochs),
                               "steps_done": len(res.history),
                               "train_l1": res.epochs[-1]["loss"] if res.epochs else math.nan,
                               "train_time": sum(e["time"] for e in res.epochs),
                               "total_evals": sum(e["n_evals"] for e in res.epochs)}
        if res.diverged:
            rec["diverged_step"] = res.diverged_step
            if not out["diverged"]:
                out.update(diverged=True, diverged_step=res.diverged_step, diverged_model=name)
        else:
            rec.update(_evaluate(tr.model, tgt, cfg, x_te, y_te))
        out["models"][name] = rec
    return out
