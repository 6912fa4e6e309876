"""Output activations that turn a network's raw output into a structured Jacobian.

Each structure maps ``x (n, i)`` through the raw network to ``J (n, o, i)`` whose form
guarantees a property of every function ``y(x) = y0 + ∫ J``:

- ``none``: ``J = A`` (optionally ``bound · tanh(A)`` entrywise, the reference's exp baseline).
- ``invertible``: ``J = A Aᵀ + ε I`` (1-d: ``a² + ε``): symmetric positive definite.
- ``orientation``: ``J = expm(A)``: ``det J = e^{tr A} > 0`` without requiring symmetry.
- ``lipschitz``: ``J = k · tanh(σ)/σ · A`` with ``σ = ‖A‖₂`` (1-d: ``k · tanh(a)``):
  ``‖J‖₂ < k``, so ``y`` is ``k``-Lipschitz in the Euclidean norm on convex domains.
- ``complex``: 2×2 blocks ``[[a, -b], [b, a]]`` (Cauchy–Riemann): complex differentiable maps
  ``C^{i/2} -> C^{o/2}``.
- ``conservative`` (``o = 1``): ``J = ∇φ(x)ᵀ`` for a scalar network ``φ``: curl-free, so line
  integrals do not depend on the path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from gradsurrogate.registry import check_choice, check_int, check_number, lookup

RawNet = Callable[[Tensor], Tensor]


class Structure:
    """Base class: ``__call__(net, x)`` returns ``J (n, o, i)`` from the raw net's output."""

    name: ClassVar[str]
    #: Jacobians are always invertible (``JacNet.inverse`` is available).
    invertible: ClassVar[bool] = False
    #: Whether the raw network's last layer has a bias (useless for a potential).
    raw_bias: ClassVar[bool] = True

    def __init__(self, d_in: int, d_out: int) -> None:
        self.d_in = check_int(d_in, "d_in", 1)
        self.d_out = check_int(d_out, "d_out", 1)
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` for dimensions this structure does not support."""

    @property
    def n_raw(self) -> int:
        """Width of the raw network's output."""
        return self.d_in * self.d_out

    def shape(self, raw: Tensor) -> Tensor:
        """``raw (n, n_raw) -> J (n, o, i)``."""
        return raw.reshape(-1, self.d_out, self.d_in)

    def __call__(self, net: RawNet, x: Tensor) -> Tensor:
        return self.shape(net(x))

    def _square(self) -> None:
        if self.d_in != self.d_out:
            raise ValueError(
                f"structure {self.name!r} needs d_in == d_out (a square Jacobian); got "
                f"d_in={self.d_in}, d_out={self.d_out}"
            )


class NoStructure(Structure):
    """``J = A`` or ``bound · tanh(A)`` (``bound`` finite and positive, or ``None``)."""

    name = "none"

    def __init__(self, d_in: int, d_out: int, bound: float | None = None) -> None:
        super().__init__(d_in, d_out)
        self.bound = None if bound is None else check_number(bound, "structure 'none' bound")

    def shape(self, raw: Tensor) -> Tensor:
        A = super().shape(raw)
        return A if self.bound is None else self.bound * torch.tanh(A)


class Invertible(Structure):
    """``J = A Aᵀ + ε I``: eigenvalues ``≥ ε > 0`` (``eps`` finite and positive)."""

    name = "invertible"
    invertible = True

    def __init__(self, d_in: int, d_out: int, eps: float = 1e-4) -> None:
        super().__init__(d_in, d_out)
        self.eps = check_number(eps, "structure 'invertible' eps")

    def check(self) -> None:
        self._square()

    def shape(self, raw: Tensor) -> Tensor:
        A = super().shape(raw)
        if self.d_in == 1:
            return A**2 + self.eps
        eye = torch.eye(self.d_in, dtype=A.dtype, device=A.device)
        return A @ A.transpose(-1, -2) + self.eps * eye


class Orientation(Structure):
    """``J = expm(A)``: ``det J = exp(tr A) > 0`` (orientation preserving, any symmetry)."""

    name = "orientation"
    invertible = True

    def check(self) -> None:
        self._square()

    def shape(self, raw: Tensor) -> Tensor:
        A = super().shape(raw)
        return torch.exp(A) if self.d_in == 1 else torch.linalg.matrix_exp(A)


class Lipschitz(Structure):
    """``J = k · tanh(σ)/σ · A``, ``σ = ‖A‖₂``: operator norm ``k·tanh(σ) < k`` (``k`` finite,
    positive)."""

    name = "lipschitz"

    def __init__(self, d_in: int, d_out: int, k: float = 1.0) -> None:
        super().__init__(d_in, d_out)
        self.k = check_number(k, "structure 'lipschitz' constant k")

    def shape(self, raw: Tensor) -> Tensor:
        A = super().shape(raw)
        if self.d_in == 1 and self.d_out == 1:
            return self.k * torch.tanh(A)
        sigma = torch.linalg.matrix_norm(A, ord=2)[:, None, None]
        small = sigma < 1e-4
        safe = torch.where(small, torch.ones_like(sigma), sigma)
        ratio = torch.where(small, 1 - sigma**2 / 3, torch.tanh(safe) / safe)
        return self.k * ratio * A


class Complex(Structure):
    """Blocks ``J[2p:2p+2, 2q:2q+2] = [[a, -b], [b, a]]`` (Cauchy–Riemann equations)."""

    name = "complex"

    def check(self) -> None:
        if self.d_in % 2 or self.d_out % 2:
            raise ValueError(
                f"structure 'complex' needs even d_in and d_out (real, imaginary pairs); got "
                f"d_in={self.d_in}, d_out={self.d_out}"
            )

    @property
    def n_raw(self) -> int:
        return self.d_in * self.d_out // 2

    def shape(self, raw: Tensor) -> Tensor:
        P, Q = self.d_out // 2, self.d_in // 2
        ab = raw.reshape(-1, P, Q, 2)
        a, b = ab[..., 0], ab[..., 1]
        blocks = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)
        return blocks.permute(0, 1, 3, 2, 4).reshape(-1, self.d_out, self.d_in)


class Conservative(Structure):
    """``J = ∇φ(x)ᵀ (n, 1, i)`` for the raw net as scalar potential ``φ``; built with
    ``create_graph=True`` so the Jacobian stays trainable (and works under ``no_grad``)."""

    name = "conservative"
    raw_bias = False

    def check(self) -> None:
        if self.d_out != 1:
            raise ValueError(
                f"structure 'conservative' is the gradient of a scalar potential and needs "
                f"d_out == 1; got d_out={self.d_out}"
            )

    @property
    def n_raw(self) -> int:
        return 1

    def __call__(self, net: RawNet, x: Tensor) -> Tensor:
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            phi = net(xg)
            (grad,) = torch.autograd.grad(phi.sum(), xg, create_graph=True)
        return grad[:, None, :]


STRUCTURES: dict[str, type[Structure]] = {
    cls.name: cls for cls in (NoStructure, Invertible, Orientation, Lipschitz, Complex,
                              Conservative)
}


def get_structure(name: str, d_in: int, d_out: int, **opts: Any) -> Structure:
    """A structure instance by registry name; ``ValueError`` for unknown names/options."""
    cls = lookup(STRUCTURES, name, "structure")
    accepted = [p for p in inspect.signature(cls.__init__).parameters
                if p not in ("self", "d_in", "d_out")]
    if opts and not accepted:
        raise ValueError(f"structure {cls.name!r} takes no options; got {sorted(opts)}")
    for key in sorted(opts):
        check_choice(key, accepted, f"option of structure {cls.name!r}:")
    return cls(d_in, d_out, **opts)
