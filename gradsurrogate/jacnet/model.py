"""``JacNet``: a function learned through its (structured) Jacobian.

``y(x) = y0 + ∫_0^1 J_θ(c(t)) c'(t) dt`` along a path ``c`` from the anchor ``x0`` to ``x``;
``J_θ(x) = S(net_θ(x))`` where ``net_θ`` is an MLP and ``S`` a structure (output activation).
Inverses integrate the inverse Jacobian along the straight output path from ``y0`` to ``y``:
``dx/dt = J_θ(x)⁻¹ (y - y0)``, ``x(0) = x0``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from gradsurrogate.activations import get_activation
from gradsurrogate.integrate import IntegralResult, get_integrator, line_integral, solve_path_ode
from gradsurrogate.registry import check_int

from .structures import get_structure


class JacNet(nn.Module):
    """Learn ``y: R^i -> R^o`` by learning its Jacobian.

    Args:
        d_in, d_out: dimensions ``i``, ``o``.
        hidden, depth: width and number of hidden layers of the raw MLP.
        structure: registry name (``none``, ``invertible``, ``orientation``, ``lipschitz``,
            ``complex``, ``conservative``); ``structure_opts`` go to it (``eps``, ``k``, ``bound``).
        activation: hidden activation, a name in ``gradsurrogate.activations`` (``leaky_relu`` as
            in the reference).
        x0, y0: anchor ``(i,)``/``(o,)``; default zeros. ``learn_y0`` makes ``y0`` a parameter.
        method, integrator_opts: default integrator for ``forward``; ``None`` is
            ``line_integral``'s default: adaptive Gauss–Kronrod with the dtype's tolerance
            (``integrate.DEFAULT_TOLERANCES``), or fixed-node Gauss–Legendre when a node count
            ``n`` is given (in ``integrator_opts`` or per call).
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        hidden: int = 64,
        depth: int = 1,
        structure: str = "none",
        *,
        activation: str = "leaky_relu",
        x0: Tensor | None = None,
        y0: Tensor | None = None,
        learn_y0: bool = False,
        method: str | None = None,
        integrator_opts: dict[str, Any] | None = None,
        **structure_opts: Any,
    ) -> None:
        super().__init__()
        for name, value in (("d_in", d_in), ("d_out", d_out), ("hidden", hidden),
                            ("depth", depth)):
            check_int(value, f"JacNet {name}", 1)
        self.d_in, self.d_out = d_in, d_out
        self.structure = get_structure(structure, d_in, d_out, **structure_opts)
        layers: list[nn.Module] = []
        width = d_in
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), get_activation(activation)]
            width = hidden
        layers.append(nn.Linear(width, self.structure.n_raw, bias=self.structure.raw_bias))
        self.net = nn.Sequential(*layers)
        dtype = torch.get_default_dtype()
        x0 = torch.zeros(d_in) if x0 is None else torch.as_tensor(x0, dtype=dtype)
        y0 = torch.zeros(d_out) if y0 is None else torch.as_tensor(y0, dtype=dtype)
        if x0.shape != (d_in,) or y0.shape != (d_out,):
            raise ValueError(f"x0 must be ({d_in},) and y0 ({d_out},); got {tuple(x0.shape)}, "
                             f"{tuple(y0.shape)}")
        if not (torch.isfinite(x0).all() and torch.isfinite(y0).all()):
            raise ValueError(f"the anchor must be finite; got x0={x0.tolist()}, y0={y0.tolist()}")
        self.register_buffer("x0", x0.clone())
        if learn_y0:
            self.y0 = nn.Parameter(y0.clone())
        else:
            self.register_buffer("y0", y0.clone())
        self.integrator_opts = dict(integrator_opts or {})
        # validated once here (unknown name or option: ValueError), used by every forward;
        # None stays None so that per-call options (e.g. n=64) pick the method as in
        # line_integral
        resolved = get_integrator(method, **self.integrator_opts).name
        self.method = None if method is None else resolved

    @torch.no_grad()
    def set_anchor(self, x0: Tensor, y0: Tensor) -> None:
        """Anchor at a data point ``(x0 (i,), y0 (o,))`` (keeps ``y0`` learnable if it was)."""
        self.x0.copy_(torch.as_tensor(x0).reshape(self.d_in))
        self.y0.copy_(torch.as_tensor(y0).reshape(self.d_out))

    def jacobian(self, x: Tensor) -> Tensor:
        """Structured Jacobian ``x (n, i) -> J (n, o, i)``."""
        return self.structure(self.net, x)

    def integrate(
        self,
        x: Tensor,
        *,
        x0: Tensor | None = None,
        y0: Tensor | None = None,
        method: str | None = None,
        path: Any = None,
        **opts: Any,
    ) -> IntegralResult:
        """Line integral from the anchor (or the given ``x0 (i,)|(n, i)``, ``y0``) to ``x (n, i)``.

        ``method``/``opts`` override the model's integrator for this call (e.g. a schedule's
        ``options()``); returns the ``IntegralResult`` with ``value (n, o)``.
        """
        x0 = self.x0 if x0 is None else x0
        y0 = self.y0 if y0 is None else y0
        if method is None:
            method, opts = self.method, {**self.integrator_opts, **opts}
        return line_integral(self.jacobian, x0.to(x), x, y0.to(x), method=method, path=path,
                             **opts)

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:
        """``y(x) (n, o)``; keyword arguments as in ``integrate``."""
        return self.integrate(x, **kwargs).value

    def solve_inverse(
        self,
        y: Tensor,
        method: str = "dopri5",
        refine: int = 0,
        *,
        pseudo: bool | None = None,
        damping: float | None = None,
        forward_opts: dict[str, Any] | None = None,
        **opts: Any,
    ) -> IntegralResult:
        """``x`` with ``y(x) = y (n, o)``: solve ``dx/dt = J(x)⁻¹ (y - y0)``, ``x(0) = x0``.

        Invertible structures (``invertible``, ``orientation``) take this exact path. Any other
        structure (or ``pseudo=True``) takes the reference's pseudo-inverse path
        ``dx/dt = pinv(J(x) + δ I) (y - y0)`` (``damping`` δ, default 1e-5; see
        ``jacnet.pinv``) and, for a non-invertible structure, emits a
        ``PseudoInverseWarning``: the result is not a true inverse. ``pseudo=False`` refuses
        non-invertible structures (``ValueError``). dopri5 tolerances default to
        ``rtol = atol = 0.1 · sqrt(machine eps)`` of ``y``'s dtype.

        In 1-d this inverts ``forward`` exactly (up to the solvers' errors). For ``i > 1`` the
        ODE follows a curve while ``forward`` integrates along a straight line, so they agree
        only where ``J`` is curl-free; ``refine`` quasi-Newton steps
        ``x ← x - J(x)⁻¹ (forward(x) - y)`` (``pinv`` on the pseudo path; ``forward_opts`` go
        to ``forward``) then remove the path-dependence mismatch; a step is kept per point only
        where it lowers the residual (with a ``J`` that is not ``forward``'s derivative, plain
        steps can diverge), so refining never makes a point worse.
        """
        from .pinv import DEFAULT_DAMPING, PseudoInverseWarning, check_damping, pinv_apply

        use_pinv = not self.structure.invertible if pseudo is None else bool(pseudo)
        if not use_pinv and not self.structure.invertible:
            raise ValueError(
                f"inverse needs an invertible structure ('invertible' or 'orientation'); this "
                f"JacNet has structure {self.structure.name!r} (pseudo=None or True: "
                f"pseudo-inverse path)"
            )
        if y.dim() != 2 or y.shape[1] != self.d_out:
            raise ValueError(f"y must have shape (n, {self.d_out}); got {tuple(y.shape)}")
        check_int(refine, "inverse refine", 0)
        delta = check_damping(DEFAULT_DAMPING if damping is None else damping)
        if use_pinv and not self.structure.invertible:
            warnings.warn(
                f"JacNet structure {self.structure.name!r} is not invertible: inverse() follows "
                f"dx/dt = pinv(J + {delta:g} I)(y - y0), which is not a true inverse (y(x) may "
                f"differ from y where J is singular or the model is not injective)",
                PseudoInverseWarning, stacklevel=3)

        def apply_inv(x: Tensor, r: Tensor) -> Tensor:
            J = self.jacobian(x)
            if use_pinv:
                return pinv_apply(J, r, delta)
            return torch.linalg.solve(J, r[:, :, None])[:, :, 0]

        if method == "dopri5":
            tol = 0.1 * torch.finfo(y.dtype).eps ** 0.5
            opts = {"rtol": tol, "atol": tol, **opts}
        dy = y - self.y0.to(y)

        def rhs(t: Tensor, x: Tensor) -> Tensor:
            return apply_inv(x, dy)

        x0 = self.x0.to(y).expand(y.shape[0], self.d_in).contiguous()
        res = solve_path_ode(rhs, x0, method=method, **opts)
        if refine:
            r = self.forward(res.value, **(forward_opts or {})) - y
        for _ in range(refine):  # a step is kept only where it lowers ‖forward(x) - y‖
            cand = res.value - apply_inv(res.value, r)
            r_cand = self.forward(cand, **(forward_opts or {})) - y
            better = (r_cand.norm(dim=-1) < r.norm(dim=-1))[:, None]
            res.value = torch.where(better, cand, res.value)
            r = torch.where(better, r_cand, r)
        return res

    def inverse(self, y: Tensor, method: str = "dopri5", refine: int = 0, **opts: Any) -> Tensor:
        """``x (n, i)`` with ``y(x) = y``; see ``solve_inverse`` (also its ``pseudo``,
        ``damping`` and ``forward_opts``)."""
        return self.solve_inverse(y, method=method, refine=refine, **opts).value

    def path_gap(self, x: Tensor, amount: float = 0.5, **opts: Any) -> Tensor:
        """Path-dependence diagnostic ``(n,)``: ``‖y_straight(x) - y_bent(x)‖`` where the bent
        path bulges by ``amount·|x - x0|`` perpendicular to the line (needs ``i ≥ 2``).
        Zero up to quadrature error iff ``J`` is curl-free along the enclosed region."""
        from gradsurrogate.integrate import BentPath

        if self.d_in < 2:
            raise ValueError(f"path dependence needs d_in >= 2; this JacNet has d_in={self.d_in}")
        a = self.forward(x, path="straight", **opts)
        b = self.forward(x, path=BentPath(amount), **opts)
        return (a - b).norm(dim=-1)
