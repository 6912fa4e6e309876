"""Directional targets: what ``f`` says about ``J_f(α) dα``.

``f`` is a batched callable ``(m, i) -> (m, o)``. Each function takes ``m`` probe rows
``alpha`` (m, i), ``dalpha`` (m, i) and returns the directional change ``df`` (m, o) with the
number of row-evaluations of ``f`` it spent:

* ``jvp``: ``df = J_f(α) dα`` exactly by forward mode (``torch.func.jvp``), ``m`` evaluations;
* ``fd``: ``(f(α + h dα) - f(α)) / h`` (``forward``, ``2m`` rows) or
  ``(f(α + h dα) - f(α - h dα)) / (2h)`` (``central``, ``2m`` rows);
* ``integral``: a large finite step ``Δf = f(α + s dα) - f(α)``, compared with the surrogate's
  line integral ``∫_0^1 g(u, α + t s dα) · (s dα) dt`` computed by
  :func:`gradsurrogate.integrate.line_integral` (exact for a constant Jacobian; the JacNet
  training principle applied to backward surrogates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..integrate import line_integral
from ..registry import check_choice, check_number
from .surrogates import Surrogate

__all__ = ["DF_TARGETS", "FD_SCHEMES", "Fn", "directional_change", "surrogate_line_integral"]

#: ``f(alpha (m, i)) -> (m, o)``.
Fn = Callable[[Tensor], Tensor]

#: how ``df`` is obtained (the restoration target)
DF_TARGETS = ("jvp", "fd", "integral")
FD_SCHEMES = ("forward", "central")


def directional_change(f: Fn, alpha: Tensor, dalpha: Tensor, target: str = "jvp",
                       step: float = 1e-3, scheme: str = "central") -> tuple[Tensor, int]:
    """``df`` (m, o) for probes ``alpha``, ``dalpha`` (m, i), and the ``f`` rows evaluated.

    ``jvp``/``fd`` return an estimate of ``J_f(α) dα``; ``integral`` returns the finite change
    ``f(α + step·dα) - f(α)`` (the caller integrates the surrogate along the same segment).
    """
    if alpha.shape != dalpha.shape or alpha.dim() != 2:
        raise ValueError(f"alpha and dalpha must both be (m, dim_in); got {tuple(alpha.shape)} "
                         f"and {tuple(dalpha.shape)}")
    check_choice(target, DF_TARGETS, "target")
    m = alpha.shape[0]
    with torch.no_grad():
        if target == "jvp":
            _, df = torch.func.jvp(f, (alpha.contiguous(),), (dalpha.contiguous(),))
            return df, m
        check_number(step, f"{target} target: step")
        if target == "integral":
            return f(alpha + step * dalpha) - f(alpha), 2 * m
        check_choice(scheme, FD_SCHEMES, "finite-difference scheme")
        if scheme == "forward":
            return (f(alpha + step * dalpha) - f(alpha)) / step, 2 * m
        return (f(alpha + step * dalpha) - f(alpha - step * dalpha)) / (2 * step), 2 * m


def surrogate_line_integral(surrogate: Surrogate, u: Tensor, alpha: Tensor, dalpha: Tensor,
                            method: str = "gauss-legendre", **opts: Any) -> Tensor:
    """``∫_0^1 g(u_c, α + t dα) · dα dt`` for every probe and cotangent: (m, c).

    ``u`` (m, c, o), ``alpha``/``dalpha`` (m, i). A surrogate with a closed-form
    :meth:`~.surrogates.Surrogate.increment` (``structured``, ``gradnet``) needs no quadrature;
    one linear in ``u`` (``jacnet``) has its Jacobian ``Ĵ dα`` integrated once per path (all
    nodes of all paths in one batched call), then contracted with every cotangent. Otherwise
    the integrand's "Jacobian" rows are the surrogate gradients ``g(u_c, ·)`` (c, i); each path
    carries its probe index as an extra, constant coordinate so the integrator may batch nodes
    in any order.
    """
    closed = surrogate.increment(alpha, dalpha)
    if closed is not None:
        return torch.einsum("mco,mo->mc", u, closed)
    if surrogate.linear_in_cotangent:
        jd = line_integral(surrogate.jacobian, alpha, alpha + dalpha, method=method, **opts)
        return torch.einsum("mco,mo->mc", u, jd.value)
    m, _c, _ = u.shape
    idx = torch.arange(m, dtype=alpha.dtype, device=alpha.device)[:, None]
    x0 = torch.cat([alpha, idx], -1)
    x1 = torch.cat([alpha + dalpha, idx], -1)

    def jac(z: Tensor) -> Tensor:  # (B, i + 1) -> (B, c, i + 1)
        rows = z[:, -1].round().long()
        g = surrogate(u[rows], z[:, None, :-1])
        return torch.cat([g, torch.zeros_like(g[..., :1])], -1)

    return line_integral(jac, x0, x1, method=method, **opts).value
