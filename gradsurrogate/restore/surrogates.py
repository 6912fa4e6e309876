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
  ``u``, so right at every cotangent scale);
* ``gradnet``: ``g = u · ∂h_θ(α)/∂α``, the vjp of a learned network ``h_θ: R^i -> R^o`` (linear
  in ``u`` and a true Jacobian field, so its line integrals are ``h_θ`` differences): the
  default for nonlinear maps, fitted on its JVPs (derivative matching, as in Sobolev
  training);
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

__all__ = ["SURROGATES", "GradNet", "JacobianNet", "LogLinExp", "MLPSurrogate", "Structured",
           "Surrogate", "make_surrogate"]


def _randn(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype,
           device: torch.device | str | None) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


def _rand(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype,
          device: torch.device | str | None) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


def _scaled_linears(sizes: list[int], initial_messup: float, generator: torch.Generator,
                    dtype: torch.dtype, device: torch.device | str | None) -> list[nn.Linear]:
    """``Linear(sizes[k], sizes[k+1])`` layers with weights ``N(0, 1/fan_in)`` from
    ``generator`` (the last scaled by ``initial_messup``) and zero biases."""
    layers = []
    for n, (a, b) in enumerate(itertools.pairwise(sizes)):
        lin = nn.Linear(a, b, dtype=dtype, device=device)
        scale = (initial_messup if n == len(sizes) - 2 else 1.0) / math.sqrt(a)
        with torch.no_grad():
            lin.weight.copy_(scale * _randn((b, a), generator, dtype, device))
            lin.bias.zero_()
        layers.append(lin)
    return layers


class Surrogate(nn.Module):
    """Base class: ``forward(u (*, o), alpha (*, i)) -> (*, i)`` and ``jacobian``."""

    name: ClassVar[str]
    #: ``g(u, α) = u · Ĵ(α)``: line integrals and JVPs need no cotangent (integrate ``Ĵ dα``
    #: once per path, then contract with every ``u``)
    linear_in_cotangent: ClassVar[bool] = False

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

    def directional(self, alpha: Tensor, dalpha: Tensor) -> Tensor | None:
        """``Ĵ(α) dα`` (*, o) when the surrogate computes it directly (one forward-mode pass per
        direction, cotangent-free); ``None``: use ``g(u, α)·dα``."""
        return None

    def increment(self, alpha: Tensor, dalpha: Tensor) -> Tensor | None:
        """``∫_0^1 Ĵ(α + t dα) dα dt`` (*, o) in closed form when the surrogate is a true
        Jacobian field; ``None``: integrate numerically."""
        return None

    def jacobian(self, alpha: Tensor) -> Tensor:
        """Restored Jacobian ``(n, i) -> (n, o, i)``: ``J[n, r] = g(e_r, α_n)``."""
        p = next(self.parameters())
        eye = torch.eye(self.dim_out, dtype=p.dtype, device=p.device)
        out = self(eye[None], alpha[:, None, :])
        return out.expand(alpha.shape[0], self.dim_out, self.dim_in)


class Structured(Surrogate):
    """``g(u, α) = u B`` with a learned ``B`` (o, i); ``n o, o i -> n i``."""

    name: ClassVar[str] = "structured"
    linear_in_cotangent: ClassVar[bool] = True

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

    def increment(self, alpha: Tensor, dalpha: Tensor) -> Tensor:
        """``B dα`` (*, o): the line integral of a constant Jacobian."""
        return dalpha @ self.B.T

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
    linear_in_cotangent: ClassVar[bool] = True

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
        for lin in _scaled_linears(sizes, initial_messup, generator, dtype, device):
            layers += [lin, nn.Tanh()]
        self.net = nn.Sequential(*layers[:-1])

    def jacobian(self, alpha: Tensor) -> Tensor:
        lead = alpha.shape[:-1]
        J = self.structure(self.net, alpha.reshape(-1, self.dim_in))
        return J.reshape(*lead, self.dim_out, self.dim_in)

    def forward(self, u: Tensor, alpha: Tensor) -> Tensor:
        J = self.jacobian(alpha)  # (*a, o, i)
        return (u[..., None, :] @ J)[..., 0, :]

    def directional(self, alpha: Tensor, dalpha: Tensor) -> Tensor:
        """``Ĵ(α) dα``: (*, i), (*, i) -> (*, o) (leading dims broadcast)."""
        return (self.jacobian(alpha) @ dalpha[..., None])[..., 0]

    def rescale_(self, s: float) -> None:
        if self.structure.name != "none" or getattr(self.structure, "bound", None) is not None:
            raise NotImplementedError(f"structure {self.structure.name!r} is not linear in its "
                                      "raw output: no scale fix")
        with torch.no_grad():
            for p in self.net[-1].parameters():
                p.mul_(s)


class GradNet(Surrogate):
    """``g(u, α) = u · J_h(α)``, ``J_h = ∂h_θ/∂α``: the vjp of an MLP ``h_θ: (*, i) -> (*, o)``
    with ``depth`` tanh hidden layers of ``width`` (weights ``N(0, 1/fan_in)``, zero biases;
    ``initial_messup`` scales the last layer).

    Linear in ``u`` (right at every cotangent scale) and exactly integrable:
    ``∫_0^1 u·J_h(α + t dα) dα dt = u·(h(α + dα) - h(α))`` (:meth:`increment`). Trained on its
    JVPs ``J_h(α) dα`` (:meth:`directional`, forward mode by hand) against the probes'
    ``df``; one hidden layer of width ≥ m represents ``tanh(Wx + b)`` and a 1-hidden-layer
    tanh MLP exactly. ``forward`` is the hand-written reverse sweep (differentiable in θ).
    """

    name: ClassVar[str] = "gradnet"
    linear_in_cotangent: ClassVar[bool] = True

    def __init__(self, dim_in: int, dim_out: int, initial_messup: float = 1.0,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, width: int = 128,
                 depth: int = 1) -> None:
        super().__init__(dim_in, dim_out)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        generator = generator or torch.Generator().manual_seed(0)
        sizes = [dim_in] + [width] * depth + [dim_out]
        self.layers = nn.ModuleList(_scaled_linears(sizes, initial_messup, generator, dtype,
                                                    device))

    def potential(self, alpha: Tensor) -> Tensor:
        """``h_θ(α)``: (*, i) -> (*, o)."""
        acts = self._hidden(alpha)
        return self.layers[-1](acts[-1] if acts else alpha)

    def _hidden(self, alpha: Tensor) -> list[Tensor]:
        """The hidden activations ``tanh(a_l)`` of ``h_θ`` at ``α``, first to last."""
        acts = []
        for lin in self.layers[:-1]:
            alpha = torch.tanh(lin(alpha))
            acts.append(alpha)
        return acts

    def forward(self, u: Tensor, alpha: Tensor) -> Tensor:
        acts = self._hidden(alpha)  # leading dims of u and α broadcast in the sweep
        g = u @ self.layers[-1].weight
        for lin, a in zip(reversed(self.layers[:-1]), reversed(acts), strict=True):
            g = (g * (1 - a * a)) @ lin.weight
        return g.expand(*torch.broadcast_shapes(u.shape[:-1], alpha.shape[:-1]), self.dim_in)

    def directional(self, alpha: Tensor, dalpha: Tensor) -> Tensor:
        """``J_h(α) dα`` by forward mode: (*, i), (*, i) -> (*, o) (leading dims broadcast)."""
        for lin in self.layers[:-1]:
            alpha = torch.tanh(lin(alpha))
            dalpha = (1 - alpha * alpha) * (dalpha @ lin.weight.T)
        return dalpha @ self.layers[-1].weight.T

    def increment(self, alpha: Tensor, dalpha: Tensor) -> Tensor:
        """``h(α + dα) - h(α)``: the exact line integral of ``J_h`` along the segment."""
        return self.potential(alpha + dalpha) - self.potential(alpha)

    def jacobian(self, alpha: Tensor) -> Tensor:
        eye = torch.eye(self.dim_in, dtype=alpha.dtype, device=alpha.device)
        cols = self.directional(alpha[..., None, :], eye)  # (*, i, o): column j = J e_j
        return cols.transpose(-1, -2)

    def rescale_(self, s: float) -> None:
        with torch.no_grad():
            for p in self.layers[-1].parameters():
                p.mul_(s)


SURROGATES: dict[str, type[Surrogate]] = {c.name: c for c in (Structured, MLPSurrogate,
                                                                LogLinExp, JacobianNet, GradNet)}


def make_surrogate(name: str, dim_in: int, dim_out: int, initial_messup: float = 1.0,
                   generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None, **opts: Any) -> Surrogate:
    """Build a registered surrogate; ``opts`` go to its constructor (``width``, ...).
    ``dtype`` defaults to ``torch.get_default_dtype()``."""
    cls = lookup(SURROGATES, name, "surrogate")
    initial_messup = check_number(initial_messup, "initial_messup", 0.0, low_open=False)
    return cls(dim_in, dim_out, initial_messup, generator, dtype, device, **opts)
