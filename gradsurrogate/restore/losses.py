"""Losses comparing predicted directional products ``x`` with targets ``y``.

Both tensors are ``(..., k)``: a batch of vectors of ``k`` scalar equations each (in the trainer,
``k`` runs over the sampled directions of one point and one cotangent). Every similarity works
on the last dim and every loss is the mean over the leading dims:

* ``mse``     ``|x - y|²`` (sum over the vector, mean over vectors);
* ``cosine``  ``1 - CosSim(x, y)``, ``CosSim = ⟨x,y⟩ / (|x||y|)``;
* ``dot``     ``(1 - DotSim(x, y))²``, ``DotSim = ⟨x,y⟩ / ⟨y,y⟩``;
* ``gensim:a`` ``(GenSim_a(x, y) - GenSim_a(y, y))²`` with ``GenSim_a = ⟨x,y⟩ / (|x|^a |y|^(2-a))``,
  ``a ∈ [0, 2]`` (``GenSim_a(y, y) = 1``; ``a = 0`` is ``dot``, ``a = 1`` compares the cosine);
* ``mixed``   ``1 - CosSim + (1 - DotSim)²``;
* ``gated:b`` ``sigmoid(b (CosSim - 1)) · (1 - DotSim)²`` (the dot loss switched on once aligned);
* ``log_<name>``  ``log(L + eps)`` of the batch-mean loss ``L`` of any of the above.

Degenerate inputs have defined values: a similarity whose denominator is zero (``x = 0`` for
``cosine``/``gensim`` with ``a > 0``, ``y = 0`` for any of them) is **0 with zero gradient**, so
no NaN or inf ever appears; e.g. ``cosine(0, y) = 1`` and ``dot(x, 0) = 1``, both flat.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import Tensor

from ..registry import check_number, lookup, parse_arg

__all__ = ["LOG_EPS", "RESTORE_LOSSES", "Loss", "accepted_losses", "cos_sim", "dot_sim",
           "gen_sim", "get_loss"]

#: ``eps`` of the log variants: ``log(L + LOG_EPS)``.
LOG_EPS = 1e-12


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0 — with zero gradient (double-``where``)."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def _safe_norm(x: Tensor) -> Tensor:
    """``|x|`` over the last dim with a zero (not NaN) gradient at ``x = 0``."""
    sq = (x * x).sum(-1)
    ok = sq > 0
    root = torch.sqrt(torch.where(ok, sq, torch.ones_like(sq)))
    return torch.where(ok, root, torch.zeros_like(sq))


def _safe_pow(r: Tensor, p: float) -> Tensor:
    """``r ** p`` for ``r ≥ 0`` with ``0 ** 0 = 1`` and a finite (zero) gradient at ``r = 0``."""
    if p == 0:
        return torch.ones_like(r)
    ok = r > 0
    return torch.where(ok, torch.where(ok, r, torch.ones_like(r)) ** p, torch.zeros_like(r))


def cos_sim(x: Tensor, y: Tensor) -> Tensor:
    """``⟨x,y⟩ / (|x||y|)`` over the last dim, ``(..., k) -> (...)``; 0 if either is zero."""
    return _safe_ratio((x * y).sum(-1), _safe_norm(x) * _safe_norm(y))


def dot_sim(x: Tensor, y: Tensor) -> Tensor:
    """``⟨x,y⟩ / ⟨y,y⟩`` over the last dim, ``(..., k) -> (...)``; 0 if ``y = 0``."""
    return _safe_ratio((x * y).sum(-1), (y * y).sum(-1))


def gen_sim(x: Tensor, y: Tensor, a: float) -> Tensor:
    """``⟨x,y⟩ / (|x|^a |y|^(2-a))``, ``a ∈ [0, 2]``; 0 where the denominator is zero."""
    den = _safe_pow(_safe_norm(x), a) * _safe_pow(_safe_norm(y), 2.0 - a)
    return _safe_ratio((x * y).sum(-1), den)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss ``(x, y) -> scalar`` on ``(..., k)`` tensors; subclasses implement ``per_vector``."""

    name: ClassVar[str]
    takes: ClassVar[str | None] = None  # the parameter's meaning, if the loss takes one

    def per_vector(self, x: Tensor, y: Tensor) -> Tensor:
        """``(..., k), (..., k) -> (...)``."""
        raise NotImplementedError

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape:
            raise ValueError(f"loss {self}: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
        return self.per_vector(x, y).mean()

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_arg(cls, arg: str | None) -> Loss:
        if arg is not None:
            raise ValueError(f"loss {cls.name!r} takes no parameter (got {arg!r})")
        return cls()


@dataclasses.dataclass(frozen=True)
class MSE(Loss):
    name: ClassVar[str] = "mse"

    def per_vector(self, x: Tensor, y: Tensor) -> Tensor:
        return ((x - y) ** 2).sum(-1)


@dataclasses.dataclass(frozen=True)
class Cosine(Loss):
    name: ClassVar[str] = "cosine"

    def per_vector(self, x: Tensor, y: Tensor) -> Tensor:
        return 1 - cos_sim(x, y)


@dataclasses.dataclass(frozen=True)
class Dot(Loss):
    name: ClassVar[str] = "dot"

    def per_vector(self, x: Tensor, y: Tensor) -> Tensor:
        return (1 - dot_sim(x, y)) ** 2


@dataclasses.dataclass(frozen=True)
class GenSim(Loss):
    a: float = 1.0
    name: ClassVar[str] = "gensim"
    takes: ClassVar[str | None] = "exponent a in [0, 2]"

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", check_number(self.a, "loss 'gensim': exponent a", 0.0,
                                                   2.0, low_open=False))

    def per_vector(self, x: Tensor, y: Tensor) -> Tensor:
        return (gen_sim(x, y, self.a) - gen_sim(y, y, self.a)) ** 2

    def __str__(self) -> str:
        return f"gensim:{self.a:g}"

    @classmethod
    def from_arg(cls, arg: str | None) -> Loss:
        return cls() if arg is None else cls(_number(arg, "gensim"))


@dataclasses.dataclass(frozen=True)
class Mixed(Loss):
    name: ClassVar[str] = "mixed"

    def per_vector(self, x: Tensor, y: Tensor) -> Tensor:
        return 1 - cos_sim(x, y) + (1 - dot_sim(x, y)) ** 2


@dataclasses.dataclass(frozen=True)
class Gated(Loss):
    beta: float = 10.0
    name: ClassVar[str] = "gated"
    takes: ClassVar[str | None] = "gate sharpness beta > 0"

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", check_number(self.beta, "loss 'gated': beta"))

    def per_vector(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.sigmoid(self.beta * (cos_sim(x, y) - 1)) * (1 - dot_sim(x, y)) ** 2

    def __str__(self) -> str:
        return f"gated:{self.beta:g}"

    @classmethod
    def from_arg(cls, arg: str | None) -> Loss:
        return cls() if arg is None else cls(_number(arg, "gated"))


@dataclasses.dataclass(frozen=True)
class Log(Loss):
    """``log(L + LOG_EPS)`` of the batch-mean of an inner loss (finite at ``L = 0``)."""

    inner: Loss = dataclasses.field(default_factory=MSE)
    name: ClassVar[str] = "log"

    def per_vector(self, x: Tensor, y: Tensor) -> Tensor:
        return self.inner.per_vector(x, y)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.log(self.inner(x, y) + LOG_EPS)

    def __str__(self) -> str:
        return f"log_{self.inner}"


def _number(text: str, loss: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"loss {loss!r}: cannot read parameter {text!r} as a number") from None
    if not math.isfinite(value):
        raise ValueError(f"loss {loss!r}: parameter must be finite; got {text!r}")
    return value


#: the base losses by name (each also exists as ``log_<name>``).
RESTORE_LOSSES: dict[str, type[Loss]] = {c.name: c for c in (MSE, Cosine, Dot, GenSim, Mixed,
                                                              Gated)}
#: every accepted name -> (class, wrapped in :class:`Log`)
_NAMES: dict[str, tuple[type[Loss], bool]] = {
    **{n: (c, False) for n, c in RESTORE_LOSSES.items()},
    **{f"log_{n}": (c, True) for n, c in RESTORE_LOSSES.items()},
}


def accepted_losses() -> str:
    """The accepted loss specs, for help texts (``:P`` marks a loss taking a parameter)."""
    base = [n + (":P" if c.takes else "") for n, c in RESTORE_LOSSES.items()]
    return ", ".join(base) + "; and log_<any of these> (e.g. log_mse, log_gensim:0.5)"


def get_loss(spec: str | Loss) -> Loss:
    """Parse ``"name"``, ``"name:param"`` or ``"log_name[:param]"`` (a :class:`Loss` passes).

    A bad parameter is a ``ValueError`` naming the whole spec as given (``'log_mse:nan'``).
    """
    if isinstance(spec, Loss):
        return spec
    name, arg = parse_arg(spec, "loss")
    cls, log = lookup(_NAMES, name, "loss")
    try:
        loss = cls.from_arg(arg)
    except ValueError as err:
        raise ValueError(f"bad loss {spec!r}: {err}") from None
    return Log(loss) if log else loss
