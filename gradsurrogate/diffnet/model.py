"""Deep differential network: an MLP returning y, the input Jacobian J and the Hessian H.

Network (hidden layers l = 1..L, linear output layer L+1)::

    a_l = W_l h_{l-1} + b_l,   h_l = g(a_l),   h_0 = x,   y = W_{L+1} h_L + b_{L+1}

Derivatives are computed in closed form with batched matrix products (no autograd graph
over the input), and every result stays differentiable w.r.t. the weights:

* Jacobian, ``"forward"`` mode (tangents carried forward, n rows per sample)::

      T_1 = g'(a_1) ⊙ W_1ᵀ,   T_l = g'(a_l) ⊙ (T_{l-1} W_lᵀ),   Jᵀ = T_L W_{L+1}ᵀ

* Jacobian, ``"reverse"`` mode (adjoints swept back from the outputs, m rows per sample)::

      G_L = W_{L+1} ⊙ g'(a_L),   G_{l-1} = (G_l W_l) ⊙ g'(a_{l-1}),   J = G_1 W_1

* Hessian, ``"forward"`` mode (second-order forward, n² rows): with Ṫ_l = ∂a_l/∂x,
  ``H^{(h_l)}_{ij} = g''(a_l) Ṫ_{l,i} Ṫ_{l,j} + g'(a_l) (H^{(h_{l-1})}_{ij} W_lᵀ)``.
* Hessian, ``"reverse"`` mode (forward-over-reverse, m·n rows): differentiate the adjoint
  recursion along x_i, with Ġ_l = ∂G_l/∂x_i::

      Ġ_{l-1} = (Ġ_l W_l) ⊙ g'(a_{l-1}) + (G_l W_l) ⊙ g''(a_{l-1}) ⊙ Ṫ_{l-1,i},   H = Ġ_1 W_1

``mode="auto"`` picks reverse for J when m < n, and for H when n² > m (n + 1).

Shapes (einsum letters: ``e`` ensemble, ``n`` batch, ``o`` out, ``i`` in): parameters are
stored with a leading ensemble axis, ``W_l`` (E, o, i), ``b_l`` (E, o); E = 1 when the model
is built without ``ensemble``, and then every pass runs on plain 2-D tensors (``F.linear`` /
``matmul`` on the views ``W_l[0]``, no E axis, no copies), so a single network costs what
an ``nn.Sequential`` of ``nn.Linear`` layers costs. Without autograd (``torch.no_grad()``)
the passes multiply fresh products in place.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsurrogate.activations import Activation, Softplus, get_activation
from gradsurrogate.registry import check_choice, check_int, check_number

__all__ = ["HESSIAN_MODES", "INITS", "JACOBIAN_MODES", "DifferentialMLP"]

JACOBIAN_MODES = ("auto", "forward", "reverse")
HESSIAN_MODES = ("auto", "forward", "reverse")
INITS = ("xavier_normal", "orthogonal", "sparse")


def _mul(t: Tensor, s: Tensor) -> Tensor:
    """t ⊙ s, in place into t (a fresh product) when no autograd graph is being built."""
    return t.mul_(s) if not (t.requires_grad or s.requires_grad) else t * s


def _check_mode(mode: str, accepted: tuple[str, ...], what: str) -> str:
    return check_choice(mode, accepted, f"{what} mode")


class DifferentialMLP(nn.Module):
    """MLP that returns its output together with the exact input Jacobian (and Hessian).

    Args:
        n_in, n_out: input dimension n and output dimension m.
        width: hidden units per layer; depth: number of hidden layers (≥ 1).
        activation: a registered name (see :mod:`gradsurrogate.activations`) or an instance;
            ``activation_params`` are passed to :func:`get_activation`.
        ensemble: None for one network, or E for E independent networks evaluated in one
            batched computation (inputs then carry a leading E axis).
        w_init: ``"xavier_normal"`` (reference default), ``"orthogonal"`` or ``"sparse"``;
            ``gain_hidden`` / ``gain_output`` are the gains (std for sparse; a gain ≤ 0 means
            the torch-recommended gain for relu / linear); ``p_sparse`` the sparsity. The
            default hidden gain is √2, divided by the frequency ω of a periodic activation
            (``cos2pi``: ω = 2π), so the phase ω·a has the spread a gain-√2 net gives ``a``;
            without it the cos(2πx) nets start high-frequency and their derivatives stay
            noisy (2-d Type 1, 60 epochs: ∂f MSE 1.2e-2 at gain √2 vs 1.8e-5 at 0.25).
        b_init: constant bias initialisation (reference: 0.1).
        mode, hessian_mode: default Jacobian / Hessian schemes (``"auto"``, ``"forward"``,
            ``"reverse"``); can be overridden per call.
        generator: torch.Generator for a reproducible initialisation.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        width: int = 128,
        depth: int = 1,
        activation: str | Activation = "softplus",
        *,
        activation_params: dict[str, float] | None = None,
        ensemble: int | None = None,
        w_init: str = "xavier_normal",
        b_init: float = 0.1,
        gain_hidden: float | None = None,
        gain_output: float = 1.0,
        p_sparse: float = 0.2,
        mode: str = "auto",
        hessian_mode: str = "auto",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for label, val in (("n_in", n_in), ("n_out", n_out), ("width", width), ("depth", depth)):
            check_int(val, label, 1)
        if ensemble is not None:
            check_int(ensemble, "ensemble", 1)
        check_choice(w_init, INITS, "w_init")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.width, self.depth = int(width), int(depth)
        self.ensemble = None if ensemble is None else int(ensemble)
        self.mode = _check_mode(mode, JACOBIAN_MODES, "Jacobian")
        self.hessian_mode = _check_mode(hessian_mode, HESSIAN_MODES, "Hessian")
        self.activation = get_activation(activation, **(activation_params or {}))
        self.w_init, self.b_init = w_init, check_number(b_init, "b_init", low=None)
        if gain_hidden is None:
            gain_hidden = math.sqrt(2.0) / float(getattr(self.activation, "freq", 1.0))
        self.gain_hidden = check_number(gain_hidden, "gain_hidden", low=None)
        self.gain_output = check_number(gain_output, "gain_output", low=None)
        self.p_sparse = check_number(p_sparse, "p_sparse", low=0.0, low_open=False, high=1.0)

        e = self.ensemble or 1
        sizes = [self.n_in] + [self.width] * self.depth + [self.n_out]
        kw = {"device": device, "dtype": dtype}
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(e, o, i, **kw)) for i, o in itertools.pairwise(sizes)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.empty(e, o, **kw)) for o in sizes[1:]
        )
        self.reset_parameters(generator)

    # ------------------------------------------------------------------ set-up
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise every ensemble member: weights by ``w_init``, biases = ``b_init``."""
        n_layers = len(self.weights)
        with torch.no_grad():
            for k, (w, b) in enumerate(zip(self.weights, self.biases)):
                output = k == n_layers - 1
                gain = self.gain_output if output else self.gain_hidden
                if self.w_init != "sparse" and gain <= 0:
                    gain = nn.init.calculate_gain("linear" if output else "relu")
                for member in w:  # (o, i) views, one per ensemble member
                    if self.w_init == "xavier_normal":
                        nn.init.xavier_normal_(member, gain, generator=generator)
                    elif self.w_init == "orthogonal":
                        nn.init.orthogonal_(member, gain, generator=generator)
                    else:
                        nn.init.sparse_(member, self.p_sparse, gain, generator=generator)
                b.fill_(self.b_init)

    def extra_repr(self) -> str:
        return (
            f"n_in={self.n_in}, n_out={self.n_out}, width={self.width}, depth={self.depth}, "
            f"ensemble={self.ensemble}, mode={self.mode}, hessian_mode={self.hessian_mode}"
        )

    def resolve_mode(self, hessian: bool, mode: str | None = None) -> str:
        """The scheme a call would use: for J if not ``hessian``, else for H."""
        n, m = self.n_in, self.n_out
        if hessian:
            chosen = _check_mode(mode or self.hessian_mode, HESSIAN_MODES, "Hessian")
            if chosen == "auto":
                chosen = "reverse" if n * n > m * (n + 1) else "forward"
        else:
            chosen = _check_mode(mode or self.mode, JACOBIAN_MODES, "Jacobian")
            if chosen == "auto":
                chosen = "reverse" if m < n else "forward"
        return chosen

    # ------------------------------------------------------------------ shapes
    # Without an ensemble (E = 1) tensors carry no E axis and layers are plain 2-D matrix
    # products (F.linear / matmul on W_l[0], no copies); with one they are batched (bmm).
    def _flatten(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """(*, n) -> (B, n), or (E, *, n) -> (E, B, n) with an ensemble; returns lead dims."""
        if x.shape[-1:] != (self.n_in,):
            raise ValueError(f"input must have last dim n_in={self.n_in}, got {tuple(x.shape)}")
        if self.ensemble is None:
            lead = tuple(x.shape[:-1])
            return x.reshape(math.prod(lead), self.n_in), lead
        if x.dim() < 2 or x.shape[0] != self.ensemble:
            raise ValueError(
                f"ensemble input must have shape (E={self.ensemble}, *, {self.n_in}), "
                f"got {tuple(x.shape)}"
            )
        lead = tuple(x.shape[1:-1])
        return x.reshape(self.ensemble, math.prod(lead), self.n_in), lead

    def _unflatten(self, t: Tensor, lead: tuple[int, ...], tail: tuple[int, ...]) -> Tensor:
        """([E,] B, *tail) -> (*lead, *tail) or (E, *lead, *tail)."""
        front = lead if self.ensemble is None else (self.ensemble, *lead)
        return t.reshape(*front, *tail)

    def _w(self, k: int) -> Tensor:
        """W_k for broadcasting against ([E,] B, ..., o, i) tensors: (o, i) or (E, 1, o, i)."""
        w = self.weights[k]
        return w[0] if self.ensemble is None else w.unsqueeze(1)

    def _affine(self, h: Tensor, k: int) -> Tensor:
        """a = h W_kᵀ + b_k: ([E,] B, i) -> ([E,] B, o)."""
        w, b = self.weights[k], self.biases[k]
        if self.ensemble is None:
            return F.linear(h, w[0], b[0])
        return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))

    def _rows(self, t: Tensor, k: int) -> Tensor:
        """Every row of t times W_kᵀ: ([E,] B, ..., i) -> ([E,] B, ..., o)."""
        w = self.weights[k]
        if self.ensemble is None:
            return torch.matmul(t, w[0].t())
        rows = math.prod(t.shape[1:-1])
        out = torch.bmm(t.reshape(t.shape[0], rows, t.shape[-1]), w.transpose(1, 2))
        return out.reshape(*t.shape[:-1], w.shape[1])

    def _back(self, t: Tensor, k: int) -> Tensor:
        """Every row of t times W_k: ([E,] B, ..., o) -> ([E,] B, ..., i)."""
        w = self.weights[k]
        if self.ensemble is None:
            return torch.matmul(t, w[0])
        rows = math.prod(t.shape[1:-1])
        out = torch.bmm(t.reshape(t.shape[0], rows, t.shape[-1]), w)
        return out.reshape(*t.shape[:-1], w.shape[2])

    def _act(self, a: Tensor, order: int) -> tuple[Tensor, ...]:
        """(g(a), g'(a)[, g''(a)]); softplus takes a fused path (one softplus kernel, one
        sigmoid; exact: the switch to the identity is at βa > 40, where the remainder
        log1p(e^{-βa})/β < 5e-18 relative)."""
        act = self.activation
        if type(act) is not Softplus:
            return act.derivatives(a, order) if order else (act.g(a),)
        h = F.softplus(a, act.beta, 40.0)
        if not order:
            return (h,)
        z = a if act.beta == 1.0 else act.beta * a
        s = torch.sigmoid(z)
        return (h, s) if order == 1 else (h, s, act.beta * s * torch.sigmoid(-z))

    # ------------------------------------------------------------------ passes
    def value(self, x: Tensor) -> Tensor:
        """Plain forward pass: x (*, n) [or (E, *, n)] -> y (*, m) [or (E, *, m)]."""
        h, lead = self._flatten(x)
        last = len(self.weights) - 1
        for k in range(last):
            h = self._act(self._affine(h, k), 0)[0]
        return self._unflatten(self._affine(h, last), lead, (self.n_out,))

    def forward(
        self, x: Tensor, hessian: bool = False, mode: str | None = None
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """Return ``(y, J)`` or, with ``hessian=True``, ``(y, J, H)``.

        Shapes: x (*, n) -> y (*, m), J (*, m, n) with J[k, i] = ∂y_k/∂x_i,
        H (*, m, n, n) with H[k, i, j] = ∂²y_k/∂x_i∂x_j; with an ensemble every tensor
        carries a leading E axis. ``mode`` overrides the scheme (J's scheme without
        ``hessian``, H's with it; see the module docstring).
        """
        x_flat, lead = self._flatten(x)
        chosen = self.resolve_mode(hessian, mode)
        n, m = self.n_in, self.n_out
        if not hessian:
            run = self._jac_forward if chosen == "forward" else self._jac_reverse
            y, jac = run(x_flat)
            return self._unflatten(y, lead, (m,)), self._unflatten(jac, lead, (m, n))
        run = self._hess_forward if chosen == "forward" else self._hess_reverse
        y, jac, hess = run(x_flat)
        return (
            self._unflatten(y, lead, (m,)),
            self._unflatten(jac, lead, (m, n)),
            self._unflatten(hess, lead, (m, n, n)),
        )

    def _jac_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Tangents T[..., i, o] = ∂h_o/∂x_i carried forward; J = (T W_outᵀ)ᵀ."""
        last = len(self.weights) - 1
        h, d = self._act(self._affine(x, 0), 1)
        tan = d.unsqueeze(-2) * self._w(0).transpose(-1, -2)  # ([E,] B, n, o)
        for k in range(1, last):
            h, d = self._act(self._affine(h, k), 1)
            tan = _mul(self._rows(tan, k), d.unsqueeze(-2))
        return self._affine(h, last), self._rows(tan, last).transpose(-1, -2)

    def _hidden_pass(self, x: Tensor, order: int) -> tuple[Tensor, list[tuple[Tensor, ...]]]:
        """Forward pass keeping (g', [g'']) of every hidden layer; returns (y, derivs)."""
        h, saved, last = x, [], len(self.weights) - 1
        for k in range(last):
            h, *ders = self._act(self._affine(h, k), order)
            saved.append(tuple(ders))
        return self._affine(h, last), saved

    def _jac_reverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Adjoints G[..., k, o] = ∂y_k/∂a_o swept back from the output; J = G_1 W_1."""
        last = len(self.weights) - 1
        y, saved = self._hidden_pass(x, 1)
        adj = self._w(last) * saved[-1][0].unsqueeze(-2)  # ([E,] B, m, o)
        for k in range(last - 1, 0, -1):
            adj = _mul(self._back(adj, k), saved[k - 1][0].unsqueeze(-2))
        return y, self._back(adj, 0)

    def _hess_forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Second-order forward mode: carries T (.., n, o) and Hh (.., n, n, o) = ∂²h_o/∂x∂x."""
        last = len(self.weights) - 1
        h, d, dd = self._act(self._affine(x, 0), 2)
        ta = self._w(0).transpose(-1, -2)  # ∂a/∂x: (n, o) or (E, 1, n, o)
        tan = d.unsqueeze(-2) * ta
        hh = dd.unsqueeze(-2).unsqueeze(-2) * (ta.unsqueeze(-2) * ta.unsqueeze(-3))
        for k in range(1, last):
            h, d, dd = self._act(self._affine(h, k), 2)
            ta = self._rows(tan, k)
            hh = dd.unsqueeze(-2).unsqueeze(-2) * (ta.unsqueeze(-2) * ta.unsqueeze(-3)) + \
                _mul(self._rows(hh, k), d.unsqueeze(-2).unsqueeze(-2))
            tan = _mul(ta, d.unsqueeze(-2))
        y = self._affine(h, last)
        jac = self._rows(tan, last).transpose(-1, -2)
        return y, jac, self._rows(hh, last).movedim(-1, -3)

    def _hess_reverse(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Forward-over-reverse: tangents ∂a_l/∂x forward, then adjoints G and Ġ backward.

        Ġ's second term is regrouped as ((G_l W_l) ⊙ g''(a_{l-1})) ⊗ ∂a_{l-1}/∂x: the
        product with g'' is taken on the m rows before the n tangents are multiplied in.
        """
        last = len(self.weights) - 1
        h, d, dd = self._act(self._affine(x, 0), 2)
        ta = self._w(0).transpose(-1, -2)  # ∂a_1/∂x: (n, o) or (E, 1, n, o)
        saved = [(d, dd, ta)]  # g'(a_l), g''(a_l), ∂a_l/∂x
        for k in range(1, last):
            ta = self._rows(d.unsqueeze(-2) * ta, k)
            h, d, dd = self._act(self._affine(h, k), 2)
            saved.append((d, dd, ta))
        y = self._affine(h, last)
        w_out = self._w(last)  # (m, o) or (E, 1, m, o)
        adj = w_out * d.unsqueeze(-2)  # ([E,] B, m, o)
        adj_dot = (w_out * dd.unsqueeze(-2)).unsqueeze(-2) * ta.unsqueeze(-3)  # (.., m, n, o)
        for k in range(last - 1, 0, -1):
            d, dd, ta = saved[k - 1]
            p = self._back(adj, k)
            q = (p * dd.unsqueeze(-2)).unsqueeze(-2)
            adj_dot = _mul(self._back(adj_dot, k), d.unsqueeze(-2).unsqueeze(-2))
            if adj_dot.requires_grad or q.requires_grad or ta.requires_grad:
                adj_dot = torch.addcmul(adj_dot, q, ta.unsqueeze(-3))
            else:
                adj_dot.addcmul_(q, ta.unsqueeze(-3))
            adj = _mul(p, d.unsqueeze(-2))
        return y, self._back(adj, 0), self._back(adj_dot, 0)
