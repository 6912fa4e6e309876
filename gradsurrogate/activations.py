"""Registry of elementwise activations with closed-form first and second derivatives.

Every activation is a small :class:`torch.nn.Module` subclass providing

* ``g(x)``   -- the activation itself (also what ``module(x)`` returns),
* ``dg(x)``  -- its derivative g'(x),
* ``d2g(x)`` -- its second derivative g''(x),
* ``derivatives(x, order)`` -- the tuple ``(g, g', ...)`` up to ``order`` (0, 1 or 2),
  sharing intermediate results (one ``sigmoid`` / ``tanh`` / ``exp`` per call).

All functions are elementwise (any shape in, same shape out) and differentiable with
autograd, so losses on g' or g'' can be trained through. Device and dtype follow the input.
Non-smooth points use the one-sided convention of autograd (e.g. relu'(0) = 0).

Use :func:`get_activation` (``get_activation("softplus", beta=2.0)``); an unknown name raises
``ValueError`` naming it and the accepted names (:data:`ACTIVATIONS`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsurrogate.registry import check_number, lookup

__all__ = ["ACTIVATIONS", "Activation", "get_activation"]

_TWO_PI = 2.0 * math.pi
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Activation(nn.Module):
    """Base class: subclasses implement ``g``, ``dg`` and ``d2g`` (elementwise)."""

    name: str = ""

    def g(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def dg(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def d2g(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def derivatives(self, x: Tensor, order: int = 1) -> tuple[Tensor, ...]:
        """``(g(x), g'(x), ..., g^(order)(x))`` for ``order`` in {0, 1, 2}; shapes = x."""
        if order not in (0, 1, 2):
            raise ValueError(f"order must be 0, 1 or 2, got {order!r}")
        out = [self.g(x), self.dg(x), self.d2g(x)]
        return tuple(out[: order + 1])

    def forward(self, x: Tensor) -> Tensor:
        return self.g(x)

    def extra_repr(self) -> str:
        return ""


class Linear(Activation):
    """Identity: g = x, g' = 1, g'' = 0."""

    name = "linear"

    def g(self, x: Tensor) -> Tensor:
        return x

    def dg(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)

    def d2g(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


class ReLU(Activation):
    """g = max(x, 0), g' = 1[x > 0], g'' = 0."""

    name = "relu"

    def g(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def dg(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)

    def d2g(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


class Quad(Activation):
    """g = relu(x)²/2, g' = relu(x), g'' = 1[x > 0]."""

    name = "quad"

    def g(self, x: Tensor) -> Tensor:
        return 0.5 * torch.relu(x).square()

    def dg(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def d2g(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)


class Cubic(Activation):
    """g = relu(x)³/6, g' = relu(x)²/2, g'' = relu(x)."""

    name = "cubic"

    def g(self, x: Tensor) -> Tensor:
        return torch.relu(x).pow(3) / 6.0

    def dg(self, x: Tensor) -> Tensor:
        return 0.5 * torch.relu(x).square()

    def d2g(self, x: Tensor) -> Tensor:
        return torch.relu(x)


class Softplus(Activation):
    """g = log(1 + exp(βx))/β, g' = σ(βx), g'' = β σ(βx) σ(-βx), for any β > 0.

    Evaluated as ``(relu(βx) + log1p(exp(-|βx|)))/β`` (no overflow, no threshold switch),
    and g'' as a product of two sigmoids (no cancellation in 1 - σ for large inputs).
    """

    name = "softplus"

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = check_number(beta, "softplus beta")

    def g(self, x: Tensor) -> Tensor:
        z = self.beta * x
        return (torch.relu(z) + torch.log1p(torch.exp(-z.abs()))) / self.beta

    def dg(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.beta * x)

    def d2g(self, x: Tensor) -> Tensor:
        z = self.beta * x
        return self.beta * torch.sigmoid(z) * torch.sigmoid(-z)

    def derivatives(self, x: Tensor, order: int = 1) -> tuple[Tensor, ...]:
        if order < 1:
            return super().derivatives(x, order)
        z = self.beta * x
        s = torch.sigmoid(z)
        out = [self.g(x), s]
        if order == 2:
            out.append(self.beta * s * torch.sigmoid(-z))
        return tuple(out)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class Tanh(Activation):
    """g = tanh x, g' = 1 - tanh² x, g'' = -2 tanh x (1 - tanh² x)."""

    name = "tanh"

    def g(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def dg(self, x: Tensor) -> Tensor:
        return 1.0 - torch.tanh(x).square()

    def d2g(self, x: Tensor) -> Tensor:
        t = torch.tanh(x)
        return -2.0 * t * (1.0 - t.square())

    def derivatives(self, x: Tensor, order: int = 1) -> tuple[Tensor, ...]:
        if order < 1:
            return super().derivatives(x, order)
        t = torch.tanh(x)
        d = 1.0 - t.square()
        return (t, d) if order == 1 else (t, d, -2.0 * t * d)


class Sigmoid(Activation):
    """g = σ(x), g' = σ(x) σ(-x), g'' = σ(x) σ(-x) (σ(-x) - σ(x))."""

    name = "sigmoid"

    def g(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def dg(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x) * torch.sigmoid(-x)

    def d2g(self, x: Tensor) -> Tensor:
        return self.derivatives(x, 2)[2]

    def derivatives(self, x: Tensor, order: int = 1) -> tuple[Tensor, ...]:
        s, r = torch.sigmoid(x), torch.sigmoid(-x)
        out = [s, s * r]
        if order == 2:
            out.append(out[1] * (r - s))
        return tuple(out[: order + 1])


class Cos(Activation):
    """g = cos(ωx), g' = -ω sin(ωx), g'' = -ω² cos(ωx) (ω = ``freq``, default 1)."""

    name = "cos"

    def __init__(self, freq: float = 1.0) -> None:
        super().__init__()
        self.freq = check_number(freq, f"{self.name} freq", low=None)

    def g(self, x: Tensor) -> Tensor:
        return torch.cos(self.freq * x)

    def dg(self, x: Tensor) -> Tensor:
        return -self.freq * torch.sin(self.freq * x)

    def d2g(self, x: Tensor) -> Tensor:
        return -(self.freq**2) * torch.cos(self.freq * x)

    def derivatives(self, x: Tensor, order: int = 1) -> tuple[Tensor, ...]:
        z = self.freq * x
        c = torch.cos(z)
        out = [c]
        if order >= 1:
            out.append(-self.freq * torch.sin(z))
        if order == 2:
            out.append(-(self.freq**2) * c)
        return tuple(out)

    def extra_repr(self) -> str:
        return f"freq={self.freq}"


class Cos2Pi(Cos):
    """The reference network's cosine: g = cos(2πx), g' = -2π sin 2πx, g'' = -4π² cos 2πx."""

    name = "cos2pi"

    def __init__(self) -> None:
        super().__init__(freq=_TWO_PI)


class Sin(Activation):
    """g = sin(ωx), g' = ω cos(ωx), g'' = -ω² sin(ωx) (ω = ``freq``, default 1)."""

    name = "sin"

    def __init__(self, freq: float = 1.0) -> None:
        super().__init__()
        self.freq = check_number(freq, f"{self.name} freq", low=None)

    def g(self, x: Tensor) -> Tensor:
        return torch.sin(self.freq * x)

    def dg(self, x: Tensor) -> Tensor:
        return self.freq * torch.cos(self.freq * x)

    def d2g(self, x: Tensor) -> Tensor:
        return -(self.freq**2) * torch.sin(self.freq * x)

    def derivatives(self, x: Tensor, order: int = 1) -> tuple[Tensor, ...]:
        z = self.freq * x
        s = torch.sin(z)
        out = [s]
        if order >= 1:
            out.append(self.freq * torch.cos(z))
        if order == 2:
            out.append(-(self.freq**2) * s)
        return tuple(out)

    def extra_repr(self) -> str:
        return f"freq={self.freq}"


class GELU(Activation):
    """Exact (erf) GELU as ``nn.GELU()``: g = x Φ(x), g' = Φ(x) + x φ(x), g'' = (2 - x²) φ(x)."""

    name = "gelu"

    @staticmethod
    def _cdf_pdf(x: Tensor) -> tuple[Tensor, Tensor]:
        cdf = 0.5 * torch.erfc(-x * _INV_SQRT_2)
        pdf = _INV_SQRT_2PI * torch.exp(-0.5 * x.square())
        return cdf, pdf

    def g(self, x: Tensor) -> Tensor:
        return F.gelu(x)

    def dg(self, x: Tensor) -> Tensor:
        cdf, pdf = self._cdf_pdf(x)
        return cdf + x * pdf

    def d2g(self, x: Tensor) -> Tensor:
        _, pdf = self._cdf_pdf(x)
        return (2.0 - x.square()) * pdf

    def derivatives(self, x: Tensor, order: int = 1) -> tuple[Tensor, ...]:
        if order < 1:
            return super().derivatives(x, order)
        cdf, pdf = self._cdf_pdf(x)
        out = [F.gelu(x), cdf + x * pdf]
        if order == 2:
            out.append((2.0 - x.square()) * pdf)
        return tuple(out)


class ELU(Activation):
    """g = x (x > 0) else α(eˣ - 1); g' = 1 resp. α eˣ; g'' = 0 resp. α eˣ."""

    name = "elu"

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_number(alpha, "elu alpha", low=None)

    def _neg_exp(self, x: Tensor) -> Tensor:
        # α·exp(min(x, 0)): never overflows, equals α eˣ on the negative side.
        return self.alpha * torch.exp(torch.clamp(x, max=0.0))

    def g(self, x: Tensor) -> Tensor:
        return F.elu(x, alpha=self.alpha)

    def dg(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.ones_like(x), self._neg_exp(x))

    def d2g(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.zeros_like(x), self._neg_exp(x))

    def derivatives(self, x: Tensor, order: int = 1) -> tuple[Tensor, ...]:
        if order < 1:
            return super().derivatives(x, order)
        pos = x > 0
        e = self._neg_exp(x)
        neg = self.alpha * torch.expm1(torch.clamp(x, max=0.0))
        out = [torch.where(pos, x, neg), torch.where(pos, torch.ones_like(x), e)]
        if order == 2:
            out.append(torch.where(pos, torch.zeros_like(x), e))
        return tuple(out)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class LeakyReLU(Activation):
    """g = x (x > 0) else a·x; g' = 1 resp. a; g'' = 0 (JacNet's default hidden activation)."""

    name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = check_number(negative_slope, "leaky_relu negative_slope", low=None)

    def g(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def dg(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, self.negative_slope))

    def d2g(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


class SiLU(Activation):
    """g = x σ(x); g' = σ(1 + x(1 - σ)); g'' = σ(1 - σ)(2 + x(1 - 2σ))."""

    name = "silu"

    def g(self, x: Tensor) -> Tensor:
        return F.silu(x)

    def dg(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1 + x * (1 - s))

    def d2g(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1 - s) * (2 + x * (1 - 2 * s))


ACTIVATIONS: dict[str, type[Activation]] = {
    cls.name: cls
    for cls in (Linear, ReLU, LeakyReLU, Softplus, Tanh, Cos, Cos2Pi, Sin, Sigmoid, GELU, ELU,
                SiLU, Quad, Cubic)
}


def get_activation(name: str | Activation, **params: float) -> Activation:
    """Instantiate the activation registered as ``name`` (case-insensitive) with ``params``.

    An :class:`Activation` instance is returned unchanged (``params`` must then be empty).
    Raises ``ValueError`` naming the bad value and the registered names.
    """
    if isinstance(name, Activation):
        if params:
            raise ValueError(f"params {sorted(params)} given with an Activation instance")
        return name
    cls = lookup(ACTIVATIONS, name, "activation")
    try:
        return cls(**params)
    except TypeError as err:
        raise ValueError(f"bad parameters {params!r} for activation {cls.name!r}: {err}") from None
