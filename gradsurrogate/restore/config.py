"""One restoration run's settings (:class:`RestoreConfig`): the only source of every restore
setting and of its defaults (the CLI flags are generated from it), validated once.

``RestoreConfig`` names the problem (``f``, its dims, ``dtype``), the surrogate (kind, width,
``initial_messup``) and every trainer setting. Settings left ``"auto"`` resolve by the problem
and surrogate (stored resolved): a linear problem gets the ``structured`` surrogate and the
linear profile (2× the limit, plain SGD at the estimated rate, Gaussian cotangents, one point
with ``dim_sample`` directions per step); any other problem gets the ``gradnet`` surrogate and
the nonlinear profile (:data:`NONLINEAR_DEFAULTS`: 50× the limit, one direction per point,
basis cotangents, Adam with a cosine schedule, full-bank steps). :func:`build_problem` and
:func:`build_surrogate` make the objects it describes (seeded from ``seed``), and
:func:`gradsurrogate.restore.restore` trains with it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch

from ..integrate import INTEGRATORS
from ..registry import check_choice, check_int, check_number
from .losses import accepted_losses, get_loss
from .problems import RESTORE_PROBLEMS, RestoreProblem, callable_problem, load_function
from .sampling import (
    COTANGENT_DISTS,
    DIRECTION_DISTS,
    SUBSPACE_MODES,
    check_dim_sample,
    normalised_epochs,
)
from .surrogates import SURROGATES, Surrogate, make_surrogate
from .targets import DF_TARGETS, FD_SCHEMES

__all__ = ["DTYPES", "FIT_BY_JVP", "MAX_EPOCHS", "METHODS", "NONLINEAR_DEFAULTS", "PROBE_MODES",
           "RESTORE_OPTIMIZERS", "SCHEDULES", "RestoreConfig", "build_problem", "build_surrogate"]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
#: the most epochs a run may have (given or resolved from ``"auto"``): a bound on run time
MAX_EPOCHS = 10**9
#: the fewest steps of epochs ``"auto"`` (the held-out stopping rule ends runs earlier)
MIN_AUTO_EPOCHS = 1000
RESTORE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
#: ``replay``: evaluate a bank of ``budget`` probes once, then train on it (offline);
#: ``fresh``: new probes every step until the budget is spent (what online restoration does)
PROBE_MODES = ("replay", "fresh")
#: ``train``: fit the surrogate by the loss; ``least-squares``: the closed-form baseline on the
#: same probes (structured surrogate only)
METHODS = ("train", "least-squares")
#: learning-rate schedules: ``constant``, or ``cosine`` decay to 0 over ``epochs``
SCHEDULES = ("constant", "cosine")
#: surrogates fitted by their own JVPs (:meth:`~.surrogates.Surrogate.directional`), which
#: get the nonlinear profile of ``"auto"`` settings
FIT_BY_JVP = ("gradnet",)
#: what ``"auto"`` settings resolve to for a :data:`FIT_BY_JVP` surrogate (chosen by
#: measurement on tanh(Wx + b) and a 2-layer tanh MLP, 32 -> 32:
#: ``benchmarks/restore_nonlinear.py``); ``lr`` is Adam's
NONLINEAR_DEFAULTS: dict[str, Any] = {
    "budget": 50.0, "optimizer": "adam", "schedule": "cosine", "lr": 1e-2, "epochs": 3000,
    "directions": 1, "cotangent_dist": "basis", "points": 4096}
#: what they resolve to otherwise (the linear profile)
LINEAR_DEFAULTS: dict[str, Any] = {"budget": 2.0, "optimizer": "sgd", "schedule": "constant",
                                   "points": 1, "cotangent_dist": "gaussian"}


def _f(default: Any, help_: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help_})


def _name(value: Any, accepted: Any, what: str) -> str:
    """A choice, compared lower-cased and stripped; stored in that canonical form."""
    key = value.strip().lower() if isinstance(value, str) else value
    return check_choice(key, accepted, what)


def _float(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number or 'auto'; got {value!r}") from None


def _problem_name(value: Any) -> str:
    """A built-in problem name, or ``module:function`` (a user's ``f``, kept as typed)."""
    if isinstance(value, str) and ":" in value:
        module, _, attr = value.strip().partition(":")
        if not module or not attr:
            raise ValueError(f"problem {value!r}: a user's function is given as module:function")
        return value.strip()
    return _name(value, RESTORE_PROBLEMS, "problem")


def _optional_int(value: Any, name: str, low: int = 1) -> int | None:
    return None if value is None else check_int(value, name, low)


@dataclasses.dataclass(frozen=True)
class RestoreConfig:
    """Every setting of one restoration run; validated (and normalised) on construction.

    ``epochs`` is an integer or ``"auto"`` = ``ceil(epoch_scale·dim_in·dim_out/dim_sample)``,
    stored resolved (so ``dataclasses.replace`` of a dim keeps the old count: pass
    ``epochs="auto"`` again), at most :data:`MAX_EPOCHS` either way. ``surrogate``, ``budget``,
    ``optimizer``, ``schedule``, ``points`` and ``cotangent_dist`` ``"auto"`` are stored
    resolved too (by the problem, then the surrogate's profile), so ``replace(problem=...)``
    keeps them: pass ``"auto"`` again. ``directions`` / ``cotangents`` default to
    ``k = dim_sample`` (``gradnet``: 1) and ``c = dim_out`` per point. Bad values
    raise ``ValueError`` naming the value and the accepted ones; rates, steps and scales must
    be finite and positive.
    """

    problem: str = _f("linear", "f(x) = A x (linear), tanh(A x) (tanh), tanh(A x + b) (tanh_bias), "
                                "a 2-layer tanh MLP (mlp2), or module:function (a user's f)")
    dim_in: int = _f(16, "input dimension of f")
    dim_out: int = _f(16, "output dimension of f")
    dim_sample: int | str = _f("auto", "coordinates of the random subspace of each minibatch "
                                       "(<= dim-in), or 'auto' = dim-in")
    loss: str = _f("mse", accepted_losses())
    surrogate: str = _f("auto", ", ".join(SURROGATES) + ", or 'auto' = structured for a linear "
                                "problem, gradnet otherwise")
    width: int | None = _f(None, "hidden width of mlp/loglinexp/jacnet/gradnet surrogates "
                                 "(their default if unset)")
    initial_messup: float = _f(1.0, "scale of the initial surrogate parameters (>= 0)")
    target: str = _f("jvp", "how df is obtained: " + ", ".join(DF_TARGETS))
    method: str = _f("train", ", ".join(METHODS) + " (least-squares: the closed-form baseline "
                                                   "on the same probes)")
    probes: str = _f("replay", "replay: evaluate a bank of BUDGET probes once and train on it "
                               "(offline); fresh: new probes every step")
    budget: float | str = _f("auto", "directional evaluations, in multiples of the information "
                                     "limit dim-in (held-out probes included), or 'auto' = 2 "
                                     "(linear profile) or 50 (gradnet)")
    heldout: float = _f(0.125, "fraction of the budget kept out of training: the held-out "
                               "probe loss that stops the run and picks the best state")
    epochs: int | str = _f("auto", "maximum optimizer steps (<= 1e9), or 'auto' = "
                                   "max(1000, ceil(epoch-scale*dim-in*dim-out/dim-sample)) "
                                   "(gradnet: 3000), stored resolved")
    epoch_scale: float = _f(16.0, "factor of epochs 'auto'")
    steps_per_epoch: int = _f(1, "minibatches per epoch")
    lr: float | str = _f("auto", "learning rate, or 'auto' = lr-scale / (curvature estimated "
                                 "from the probes' norms)")
    lr_scale: float = _f(0.8, "factor of lr 'auto' (1 = half the estimated stability edge)")
    optimizer: str = _f("auto", ", ".join(RESTORE_OPTIMIZERS) + ", or 'auto' = sgd (linear "
                                "profile) or adam (gradnet)")
    schedule: str = _f("auto", ", ".join(SCHEDULES) + " learning rate, or 'auto' = constant "
                               "(linear profile) or cosine (gradnet)")
    momentum: float = _f(0.0, "momentum of sgd (in [0, 1))")
    eval_every: int = _f(10, "steps between held-out (and true-Jacobian) evaluations")
    stop_tol: float = _f(1e-5, "stop once the held-out relative residual is below this")
    patience: int = _f(30, "stop after this many evaluations without a 1 percent held-out "
                           "improvement")
    subspace: str = _f("cycle", ", ".join(SUBSPACE_MODES) + " (cycle: coordinates without "
                                                            "replacement)")
    points: int | str = _f("auto", "points alpha per minibatch (replay: at most the bank), or "
                                   "'auto' = 1 (linear profile) or 4096 (gradnet)")
    directions: int | None = _f(None, "directions per point (default: dim-sample; gradnet: 1)")
    cotangents: int | None = _f(None, "cotangents per point (default: dim-out)")
    direction_dist: str = _f("gaussian", ", ".join(DIRECTION_DISTS))
    cotangent_dist: str = _f("auto", ", ".join(COTANGENT_DISTS) + ", or 'auto' = gaussian "
                                     "(linear profile) or basis (gradnet)")
    fd_step: float = _f(1e-3, "finite-difference step (target fd)")
    fd_scheme: str = _f("central", ", ".join(FD_SCHEMES))
    integral_step: float = _f(1.0, "segment length factor (target integral)")
    integral_method: str = _f("gauss-legendre", ", ".join(INTEGRATORS))
    integral_nodes: int = _f(8, "nodes of the Gauss integrators (target integral)")
    probe_budget: int | None = _f(None, "probes (directional evaluations) to spend, overriding "
                                        "budget")
    target_cosine: float | None = _f(None, "stop once the cosine with the true Jacobian "
                                           "reaches this (needs a known Jacobian)")
    eval_points: int = _f(4, "points at which the restored Jacobian is compared")
    seed: int = _f(0, "seed of A, the surrogate init (seed+1) and the probes")
    dtype: str = _f("float32", ", ".join(DTYPES))

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "problem", _problem_name(self.problem))
        check_int(self.dim_in, "dim_in", 1)
        check_int(self.dim_out, "dim_out", 1)
        if isinstance(self.dim_sample, str) and self.dim_sample.strip().isdigit():
            put(self, "dim_sample", int(self.dim_sample.strip()))
        if isinstance(self.dim_sample, str):
            if self.dim_sample.strip().lower() != "auto":
                raise ValueError(f"dim_sample must be an integer in [1, {self.dim_in}] or "
                                 f"'auto'; got {self.dim_sample!r}")
            put(self, "dim_sample", self.dim_in)
        check_dim_sample(self.dim_sample, self.dim_in)
        put(self, "loss", str(get_loss(self.loss)))
        if isinstance(self.surrogate, str) and self.surrogate.strip().lower() == "auto":
            put(self, "surrogate", "structured" if self.problem == "linear" else "gradnet")
        put(self, "surrogate", _name(self.surrogate, SURROGATES, "surrogate"))
        profile = NONLINEAR_DEFAULTS if self.surrogate in FIT_BY_JVP else LINEAR_DEFAULTS
        for name in ("budget", "optimizer", "schedule", "points", "cotangent_dist"):
            value = getattr(self, name)
            if isinstance(value, str) and value.strip().lower() == "auto":
                put(self, name, profile[name])
        if isinstance(self.points, str) and self.points.strip().isdigit():
            put(self, "points", int(self.points.strip()))
        _optional_int(self.width, "width")
        if self.width is not None and self.surrogate == "structured":
            raise ValueError(f"width={self.width} applies to the mlp, loglinexp, jacnet and "
                             "gradnet surrogates, "
                             "not to structured (its matrix is dim_out x dim_in)")
        put(self, "initial_messup", check_number(self.initial_messup, "initial_messup", 0.0,
                                                 low_open=False))
        put(self, "target", _name(self.target, DF_TARGETS, "target"))
        put(self, "epoch_scale", check_number(self.epoch_scale, "epoch_scale"))
        put(self, "epochs", self._resolve_epochs())
        for name in ("steps_per_epoch", "points", "integral_nodes", "eval_points"):
            check_int(getattr(self, name), name, 1)
        if isinstance(self.lr, str) and self.lr.strip().lower() == "auto":
            put(self, "lr", "auto")
        else:
            put(self, "lr", check_number(_float(self.lr, "lr"), "lr"))
        put(self, "lr_scale", check_number(self.lr_scale, "lr_scale"))
        put(self, "optimizer", _name(self.optimizer, RESTORE_OPTIMIZERS, "optimizer"))
        put(self, "schedule", _name(self.schedule, SCHEDULES, "schedule"))
        put(self, "momentum", check_number(self.momentum, "momentum", 0.0, 1.0, low_open=False,
                                           high_open=True))
        put(self, "method", _name(self.method, METHODS, "method"))
        put(self, "probes", _name(self.probes, PROBE_MODES, "probes"))
        put(self, "budget", check_number(_float(self.budget, "budget"), "budget"))
        put(self, "heldout", check_number(self.heldout, "heldout", 0.0, 1.0, low_open=False,
                                          high_open=True))
        put(self, "stop_tol", check_number(self.stop_tol, "stop_tol", 0.0, low_open=False))
        check_int(self.eval_every, "eval_every", 1)
        check_int(self.patience, "patience", 1)
        put(self, "subspace", _name(self.subspace, SUBSPACE_MODES, "subspace"))
        if self.method == "least-squares" and self.surrogate != "structured":
            raise ValueError(f"method 'least-squares' gives a matrix: it needs surrogate "
                             f"'structured'; got {self.surrogate!r}")
        _optional_int(self.directions, "directions")
        _optional_int(self.cotangents, "cotangents")
        put(self, "direction_dist", _name(self.direction_dist, DIRECTION_DISTS,
                                          "direction distribution"))
        put(self, "cotangent_dist", _name(self.cotangent_dist, COTANGENT_DISTS,
                                          "cotangent distribution"))
        if self.direction_dist == "coordinate" and self.k > self.dim_sample:
            raise ValueError(f"'coordinate' directions need directions <= dim_sample="
                             f"{self.dim_sample}; got {self.k}")
        if self.cotangent_dist == "basis" and self.c != self.dim_out:
            raise ValueError(f"cotangents 'basis' need cotangents == dim_out={self.dim_out}; "
                             f"got {self.c}")
        put(self, "fd_step", check_number(self.fd_step, "fd_step"))
        put(self, "fd_scheme", _name(self.fd_scheme, FD_SCHEMES, "finite-difference scheme"))
        put(self, "integral_step", check_number(self.integral_step, "integral_step"))
        put(self, "integral_method", _name(self.integral_method, INTEGRATORS,
                                           "integral method"))
        _optional_int(self.probe_budget, "probe_budget")
        if self.target_cosine is not None:
            put(self, "target_cosine", check_number(self.target_cosine, "target_cosine", -1.0,
                                                    1.0, low_open=False))
        check_int(self.seed, "seed", 0)
        put(self, "dtype", _name(self.dtype, DTYPES, "dtype"))

    def _resolve_epochs(self) -> int:
        epochs = self.epochs
        if isinstance(epochs, str):
            text = epochs.strip().lower()
            if text == "auto" and self.surrogate in FIT_BY_JVP:
                return int(NONLINEAR_DEFAULTS["epochs"])
            if text == "auto":
                auto = normalised_epochs(self.dim_in, self.dim_out, self.dim_sample,
                                         self.epoch_scale)
                if auto > MAX_EPOCHS:
                    raise ValueError(
                        f"epochs 'auto' = ceil(epoch_scale*dim_in*dim_out/dim_sample) = {auto:.3g}"
                        f" (epoch_scale={self.epoch_scale:g}) is more than {MAX_EPOCHS:.0e}; "
                        "lower epoch_scale or give epochs")
                return max(MIN_AUTO_EPOCHS, auto)
            if not text.isdigit():
                raise ValueError(f"epochs must be a positive integer or 'auto'; got {epochs!r}")
            epochs = int(text)
        return check_int(epochs, "epochs", 1, MAX_EPOCHS)

    @property
    def total_probes(self) -> int:
        """Directional evaluations to spend: ``probe_budget``, else ``ceil(budget·dim_in)``."""
        if self.probe_budget is not None:
            return self.probe_budget
        return max(2, math.ceil(self.budget * self.dim_in))

    @property
    def heldout_probes(self) -> int:
        """Probes of the budget kept for the held-out loss (0 when ``heldout`` is 0)."""
        if self.heldout == 0:
            return 0
        share = min(round(self.heldout * self.total_probes), max(4, 2 * self.dim_in))
        return min(self.total_probes - 1, max(4, share))

    @property
    def k(self) -> int:
        """Directions per point: ``directions``, else 1 for a :data:`FIT_BY_JVP` surrogate
        (probes at distinct points), else ``dim_sample``."""
        if self.directions:
            return self.directions
        return int(NONLINEAR_DEFAULTS["directions"]) if self.surrogate in FIT_BY_JVP \
            else self.dim_sample

    @property
    def c(self) -> int:
        """Cotangents per point."""
        return self.cotangents or self.dim_out

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        """Every setting (JSON-able; what a record stores under ``"config"``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RestoreConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a ``ValueError`` (missing keys take
        their defaults, so configs stored before a field existed still load)."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            check_choice(key, names, "restore config key")
        return cls(**data)

    def replace(self, **changes: Any) -> RestoreConfig:
        return dataclasses.replace(self, **changes)


def build_problem(cfg: RestoreConfig, device: torch.device | str | None = None
                  ) -> RestoreProblem:
    """The problem ``cfg`` names: weights drawn from ``cfg.seed``, in ``cfg.dtype``; for
    ``module:function`` the user's ``f`` (its Jacobian by autograd when torch can)."""
    if ":" in cfg.problem:
        return callable_problem(load_function(cfg.problem), cfg.dim_in, cfg.dim_out,
                                cfg.torch_dtype, device, name=cfg.problem)
    return RESTORE_PROBLEMS[cfg.problem](cfg.dim_in, cfg.dim_out, seed=cfg.seed,
                                         dtype=cfg.torch_dtype, device=device)


def build_surrogate(cfg: RestoreConfig, device: torch.device | str | None = None) -> Surrogate:
    """The surrogate ``cfg`` names, initialised from a generator seeded ``cfg.seed + 1``."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    opts = {} if cfg.width is None else {"width": cfg.width}
    return make_surrogate(cfg.surrogate, cfg.dim_in, cfg.dim_out, cfg.initial_messup, gen,
                          cfg.torch_dtype, device, **opts)
