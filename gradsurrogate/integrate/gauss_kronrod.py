"""Gauss–Kronrod quadrature: the ``n``-point Gauss rule nested in a ``(2n+1)``-point rule.

The Kronrod rule adds the ``n + 1`` zeros of the Stieltjes polynomial ``E_{n+1}`` (defined by
``∫_{-1}^{1} E_{n+1}(s) P_n(s) s^k ds = 0`` for ``k ≤ n``) to the Gauss nodes and is exact for
polynomials of degree ``≤ 3n + 1``; ``|K_{2n+1} - G_n|`` estimates the error of ``G_n`` (and,
pessimistically, of the returned ``K_{2n+1}``) at no extra Jacobian evaluations.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from numpy.polynomial import legendre as L
from torch import Tensor

from .base import IntegralResult, Integrator, JacFn, PathFn, apply_jac, check_count
from .gauss_legendre import as_tensors

#: largest Gauss node count accepted (the rule's Vandermonde solve is ill-conditioned beyond)
MAX_GAUSS_NODES = 512


@lru_cache(maxsize=32)
def kronrod_rule(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t, w_kronrod, w_gauss)`` on ``[0, 1]``: ``2n + 1`` nodes (Gauss nodes first), the Kronrod
    weights and the Gauss weights padded with zeros at the Kronrod-only nodes (float64)."""
    sg, wg = L.leggauss(n)
    m = 3 * n + 2  # exact for the degree <= 3n+1 products below
    sq, wq = L.leggauss(m)
    pn = L.legval(sq, np.eye(n + 1)[n])
    basis = np.stack([L.legval(sq, np.eye(n + 2)[j]) for j in range(n + 2)])  # P_0..P_{n+1}
    # E = P_{n+1} + Σ_{j<=n} a_j P_j with ∫ E P_n P_k = 0, k = 0..n
    gram = np.einsum("q,jq,kq,q->kj", wq, basis[: n + 1], basis[: n + 1], pn)
    rhs = -np.einsum("q,q,kq,q->k", wq, basis[n + 1], basis[: n + 1], pn)
    coef = np.append(np.linalg.solve(gram, rhs), 1.0)
    sk = np.sort(np.real(L.legroots(coef)))
    s = np.concatenate([sg, sk])
    # interpolatory weights: Σ_k w_k P_j(s_k) = ∫ P_j = 2 δ_j0, j = 0..2n
    vand = np.stack([L.legval(s, np.eye(2 * n + 1)[j]) for j in range(2 * n + 1)])
    moments = np.zeros(2 * n + 1)
    moments[0] = 2.0
    wk = np.linalg.solve(vand, moments)
    wgp = np.concatenate([wg, np.zeros(n + 1)])
    return (s + 1.0) / 2.0, wk / 2.0, wgp / 2.0


class GaussKronrod(Integrator):
    """``G_n``/``K_{2n+1}`` line integrals in one batched call of ``2n + 1`` points per path.

    ``n`` Gauss nodes, ``1 ≤ n ≤ MAX_GAUSS_NODES``. The value is the Kronrod estimate;
    ``error = |K_{2n+1} - G_n|`` (detached).
    """

    name = "gauss-kronrod"

    def __init__(self, n: int = 7) -> None:
        self.n = check_count(n, "gauss-kronrod node count n", 1, MAX_GAUSS_NODES)

    def integrate(self, jac: JacFn, path: PathFn, x0: Tensor, x1: Tensor) -> IntegralResult:
        t_np, wk_np, wg_np = kronrod_rule(self.n)
        t, wk = as_tensors((t_np, wk_np), x1)
        wg = torch.as_tensor(wg_np, dtype=x1.dtype, device=x1.device)
        c, dc = path(t, x0, x1)
        g = apply_jac(jac, c, dc)
        kron = torch.einsum("t,tno->no", wk, g)
        gauss = torch.einsum("t,tno->no", wg, g)
        return IntegralResult(kron, 2 * self.n + 1, 1, (kron - gauss).detach().abs(), self.name)
