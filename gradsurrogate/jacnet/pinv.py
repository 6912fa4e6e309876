"""Pseudo-inverse steps for JacNets whose structure does not guarantee an invertible Jacobian.

The reference inverts any model by integrating ``dx/dt = pinv(J(x) + δ I) (y - y0)`` with
``δ = 1e-5``; ``I`` is the ``(o, i)`` identity (ones on the diagonal of a rectangular matrix).
Where ``J`` has full row rank, ``J · pinv(J) r = r``: a step follows the output path to first
order. Where ``J`` is (nearly) singular, ``pinv(J + δ I)`` is large and the path oscillates or
jumps: the result is a point ``x`` with ``y(x)`` close to ``y`` only where the model happens to
be locally invertible, not a true inverse (a non-injective model has none).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradsurrogate.registry import check_number

__all__ = ["DEFAULT_DAMPING", "PseudoInverseWarning", "check_damping", "pinv_apply"]

#: the reference's shift ``δ`` in ``pinv(J + δ I)``
DEFAULT_DAMPING = 1e-5


class PseudoInverseWarning(UserWarning):
    """An inverse was computed with a pseudo-inverse: not a true inverse of the model."""


def check_damping(damping: float) -> float:
    """``δ ≥ 0`` finite (``0``: the plain Moore–Penrose pseudo-inverse)."""
    return check_number(damping, "pseudo-inverse damping", 0.0, low_open=False)


def pinv_apply(J: Tensor, r: Tensor, damping: float = DEFAULT_DAMPING) -> Tensor:
    """``pinv(J + δ I) r`` for ``J (n, o, i)``, ``r (n, o)`` -> ``(n, i)``."""
    shifted = J
    if damping:
        eye = torch.eye(J.shape[-2], J.shape[-1], dtype=J.dtype, device=J.device)
        shifted = J + damping * eye
    return (torch.linalg.pinv(shifted) @ r[:, :, None])[:, :, 0]
