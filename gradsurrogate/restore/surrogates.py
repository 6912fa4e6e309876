"""Backward surrogates ``g(∇_f, α) ≈ ∇_α = ∇_f · J_f(α)``.

Every surrogate is an ``nn.Module`` with

* ``forward(u, alpha)``: ``u`` (*, o) cotangents, ``alpha`` (*, i) points (leading dims
  broadcast) ``-> (*, i)`` — exactly the signature of the ``learned`` ``grad_input`` mode;
* ``jacobian(alpha)``: ``(n, i) -> (n, o, i)``, the restored Jacobian, row ``r`` being
  ``g(e_r, α)`` (what the backward returns for a unit cotangent).

Registry (:func:`make_surrogate`):

* ``structured``: one learned matrix ``B`` (o, i) shaped like the true Jacobian,
  ``g(u, α) = u B`` (ignores ``α``); ``feedback(W)`` returns ``B`` for the ``learned`` ``weight``
  mode (``grad_input = grad_output @ B``);
* ``mlp``: free-form ``g = MLP([u, α])`` (not linear in ``u``: wrong at other cotangent
  scales than it was trained on);
* ``jacnet``: ``g = u · Ĵ_θ(α)``, a Jacobian network with JacNet's structures (linear in
  ``u``: the scale-correct surrogate for nonlinear maps);
* ``loglinexp``: ``g = R · Re exp(W Log z)``, ``z = [u, α]``: units are signed generalised
  monomials ``Π_j |z_j|^{W_hj} · cos(π Σ_j W_hj [z_j < 0])`` (the real part of the complex
  power, so integer exponents give exact signed monomials) followed by a linear readout ``R``.

``initial_messup`` multiplies every initial parameter (0 gives a zero surrogate; large values
start far from the true scale). Initialisation draws come from the given generator only.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..registry import check_number, lookup

__all__ = ["SURROGATES", "JacobianNet", "LogLinExp", "MLPSurrogate", "Structured", "Surrogate",
           "make_surrogate"]


def _randn(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype,
           device: torch.device | str | None) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


def _rand(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype,
          device: torch.device | str | None) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


class Surrogate(nn.Module):
    """Base class: ``forward(u (*, o), alpha (*, i)) -> (*, i)`` and ``jacobian``."""

    name: ClassVar[str]

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        if dim_in < 1 or dim_out < 1:
            raise ValueError(f"surrogate dims must be >= 1; got dim_in={dim_in}, "
                             f"dim_out={dim_out}")
        self.dim_in, self.dim_out = dim_in, dim_out

    def forward(self, u: Tensor, alpha: Tensor) -> Tensor:
        raise NotImplementedError

    def rescale_(self, s: float) -> None:
        """Multiply the surrogate's output by ``s`` in place (fixes the scale a scale-free loss
        leaves open): scales the parameters of the last linear map."""
        raise NotImplementedError(f"{type(self).__name__} cannot be rescaled")

    def jacobian(self, alpha: Tensor) -> Tensor:
        """Restored Jacobian ``(n, i) -> (n, o, i)``: ``J[n, r] = g(e_r, α_n)``."""
        p = next(self.parameters())
        eye = torch.eye(self.dim_out, dtype=p.dtype, device=p.device)
        out = self(eye[None], alpha[:, None, :])
        return out.expand(alpha.shape[0], self.dim_out, self.dim_in)


class Structured(Surrogate):
    """``g(u, α) = u B`` with a learned ``B`` (o, i); ``n o, o i -> n i``."""

    name: ClassVar[str] = "structured"

    def __init__(self, dim_in: int, dim_out: int, initial_messup: float = 1.0,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__(dim_in, dim_out)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        generator = generator or torch.Generator().manual_seed(0)
        init = _randn((dim_out, dim_in), generator, dtype, device) / math.sqrt(dim_in)
        self.B = nn.Parameter(initial_messup * init)

    def forward(self, u: Tensor, alpha: Tensor | None = None) -> Tensor:
        return u @ self.B

    def jacobian(self, alpha: Tensor) -> Tensor:
        return self.B.expand(alpha.shape[0], *self.B.shape)

    def rescale_(self, s: float) -> None:
        with torch.no_grad():
            self.B.mul_(s)

    def feedback(self, weight: Tensor | None = None) -> Tensor:
        """The learned matrix ``B`` (o, i), for ``BackwardSpec(weight=Learned(s.feedback))``."""
        return self.B


def _inputs(u: Tensor, alpha: Tensor, use_alpha: bool) -> Tensor:
    if not use_alpha:
        return u
    shape = torch.broadcast_shapes(u.shape[:-1], alpha.shape[:-1])
    return torch.cat([u.expand(*shape, u.shape[-1]), alpha.expand(*shape, alpha.shape[-1])], -1)


class MLPSurrogate(Surrogate):
    """``g(u, α) = MLP([u, α])`` (or ``MLP(u)`` with ``use_alpha=False``), tanh hidden layers."""

    name: ClassVar[str] = "mlp"

    def __init__(self, dim_in: int, dim_out: int, initial_messup: float = 1.0,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, width: int = 64, depth: int = 2,
                 use_alpha: bool = True) -> None:
        super().__init__(dim_in, dim_out)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        generator = generator or torch.Generator().manual_seed(0)
        self.use_alpha = use_alpha
        sizes = [dim_out + (dim_in if use_alpha else 0)] + [width] * depth + [dim_in]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            lin = nn.Linear(a, b, dtype=dtype, device=device)
            bound = 1 / math.sqrt(a)
            with torch.no_grad():  # nn.Linear's init, drawn from our generator
                lin.weight.copy_(initial_messup * bound * (2 * _rand((b, a), generator, dtype,
                                                                     device) - 1))
                lin.bias.copy_(initial_messup * bound * (2 * _rand((b,), generator, dtype,
                                                                   device) - 1))
            layers += [lin, nn.Tanh()]
        self.net = nn.Sequential(*layers[:-1])

    def forward(self, u: Tensor, alpha: Tensor) -> Tensor:
        return self.net(_inputs(u, alpha, self.use_alpha))

    def rescale_(self, s: float) -> None:
        with torch.no_grad():
            for p in self.net[-1].parameters():
                p.mul_(s)


class LogLinExp(Surrogate):
    """``g(z) = R · Re exp(W Log z)`` with ``z = [u, α]``; ``W`` (h, d), ``R`` (i, h).

    Unit ``h``: ``exp(Σ_j W_hj log(|z_j| + eps)) · cos(π Σ_j W_hj [z_j < 0])``. Exponent rows
    start near a random convex combination (degree-1 homogeneous units), scaled by
    ``initial_messup`` together with the readout.
    """

    name: ClassVar[str] = "loglinexp"

    def __init__(self, dim_in: int, dim_out: int, initial_messup: float = 1.0,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, width: int | None = None,
                 use_alpha: bool = False, eps: float = 1e-6) -> None:
        super().__init__(dim_in, dim_out)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        generator = generator or torch.Generator().manual_seed(0)
        self.use_alpha, self.eps = use_alpha, eps
        d = dim_out + (dim_in if use_alpha else 0)
        width = width or 2 * dim_out
        w = -torch.log(_rand((width, d), generator, dtype, device).clamp_min(1e-6)) ** 4
        w = w / w.sum(-1, keepdim=True)  # peaked random convex combinations
        self.W = nn.Parameter(initial_messup * w)
        r = _randn((dim_in, width), generator, dtype, device) / math.sqrt(width)
        self.R = nn.Parameter(initial_messup * r)

    def forward(self, u: Tensor, alpha: Tensor) -> Tensor:
        z = _inputs(u, alpha, self.use_alpha)
        mag = torch.exp(torch.log(z.abs() + self.eps) @ self.W.T)
        sign = torch.cos(math.pi * ((z < 0).to(z.dtype) @ self.W.T))
        return (mag * sign) @ self.R.T

    def rescale_(self, s: float) -> None:
        with torch.no_grad():
            self.R.mul_(s)


class JacobianNet(Surrogate):
    """``g(u, α) = u · Ĵ_θ(α)``: linear in the cotangent, so exact at every cotangent scale.

    ``Ĵ_θ(α) = structure(MLP(α))`` (o, i) with a :mod:`gradsurrogate.jacnet.structures`
    structure (``none``, ``lipschitz``, ...), the same priors JacNet uses; the MLP has ``depth``
    tanh hidden layers of ``width``; ``initial_messup`` scales its last layer.
    """

    name: ClassVar[str] = "jacnet"

    def __init__(self, dim_in: int, dim_out: int, initial_messup: float = 1.0,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, width: int = 64, depth: int = 2,
                 structure: str = "none", **structure_opts: Any) -> None:
        from ..jacnet.structures import get_structure

        super().__init__(dim_in, dim_out)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        generator = generator or torch.Generator().manual_seed(0)
        self.structure = get_structure(structure, dim_in, dim_out, **structure_opts)
        sizes = [dim_in] + [width] * depth + [self.structure.n_raw]
        layers: list[nn.Module] = []
        for n, (a, b) in enumerate(itertools.pairwise(sizes)):
            lin = nn.Linear(a, b, dtype=dtype, device=device)
            scale = (initial_messup if n == len(sizes) - 2 else 1.0) / math.sqrt(a)
            with torch.no_grad():
                lin.weight.copy_(scale * _randn((b, a), generator, dtype, device))
                lin.bias.zero_()
            layers += [lin, nn.Tanh()]
        self.net = nn.Sequential(*layers[:-1])

    def jacobian(self, alpha: Tensor) -> Tensor:
        lead = alpha.shape[:-1]
        J = self.structure(self.net, alpha.reshape(-1, self.dim_in))
        return J.reshape(*lead, self.dim_out, self.dim_in)

    def forward(self, u: Tensor, alpha: Tensor) -> Tensor:
        J = self.jacobian(alpha)  # (*a, o, i)
        return (u[..., None, :] @ J)[..., 0, :]

    def rescale_(self, s: float) -> None:
        if self.structure.name != "none" or getattr(self.structure, "bound", None) is not None:
            raise NotImplementedError(f"structure {self.structure.name!r} is not linear in its "
                                      "raw output: no scale fix")
        with torch.no_grad():
            for p in self.net[-1].parameters():
                p.mul_(s)


SURROGATES: dict[str, type[Surrogate]] = {c.name: c for c in (Structured, MLPSurrogate,
                                                                LogLinExp, JacobianNet)}


def make_surrogate(name: str, dim_in: int, dim_out: int, initial_messup: float = 1.0,
                   generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None, **opts: Any) -> Surrogate:
    """Build a registered surrogate; ``opts`` go to its constructor (``width``, ...).
    ``dtype`` defaults to ``torch.get_default_dtype()``."""
    cls = lookup(SURROGATES, name, "surrogate")
    initial_messup = check_number(initial_messup, "initial_messup", 0.0, low_open=False)
    return cls(dim_in, dim_out, initial_messup, generator, dtype, device, **opts)
