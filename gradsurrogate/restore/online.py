"""Online restoration: each weight layer's backward is a ``learned`` feedback ``B`` restored on
the fly from directional probes of that layer's forward map.

For a layer ``y = x Wᵀ + b`` the backward uses ``grad_input = grad_output @ B`` (mode
``weight=Learned(surrogate.feedback)``) and never reads ``W``; ``grad_weight`` stays exact (it
needs only ``x`` and ``grad_output``). After every optimizer step, :meth:`OnlineRestorer.step`
probes each layer's *forward* at the latest inputs (jvp or finite differences of the black box
``x ↦ layer(x)``) and takes a few optimizer steps on ``B`` with the restoration loss, so ``B``
tracks the moving ``W``. Cotangents are Gaussian, or the real ``grad_output`` of the last
backward (``cotangents="real"``).

Convolutions (``nn.Conv1d/2d/3d``, any stride, padding, dilation, groups, padding mode) are
restored by :class:`ConvRestorer`: ``B`` is shaped like ``W`` (o, c/groups, *k) and the backward
is the transposed convolution with ``B``. The map ``dx ↦ J dx = conv(dx, W)`` is linear and the
same at every point, so one probe of one input sample gives ``P`` equations (one per output
position ``p``): ``(J dx)[:, p] = B_g · patch_p(dx)`` per group ``g``, with ``patch_p`` read
off ``dx`` by the layer's own stride/padding/dilation (a convolution with one-hot kernels; it
never sees ``W``). ``⌈oversample · fan_in / P⌉`` probes (``fan_in = c/groups · Πk``) determine
``B`` by least squares.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._conv import surrogate_conv
from ..backward import BackwardSpec, Learned
from ..layers import SurrogateLinear, convert
from ..registry import check_choice, check_int, check_number
from .baseline import least_squares_jacobian
from .losses import get_loss
from .problems import jacobian_metrics
from .sampling import check_dim_sample, sample_cotangents, sample_directions
from .surrogates import Structured
from .targets import directional_change
from .trainer import NonFiniteLossError, equations

__all__ = ["ONLINE_COTANGENTS", "ONLINE_METHODS", "ConvFeedback", "ConvRestorer", "LayerRestorer",
           "OnlineRestorer"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: cotangents of the online restoration: random, or the real ``grad_output`` of the last backward
ONLINE_COTANGENTS = ("gaussian", "real")
#: ``lsq`` (default): ``B`` = least squares on the latest ``fan_in`` probes, all taken at the
#: current weights after the step (no lag behind ``W``); ``sgd``: ``steps`` optimizer steps of the
#: restoration loss per training step (``B`` lags ``W`` by the recent updates; the lag error
#: ``grad_output @ (B - W)`` is systematic and can reverse a deep network's gradient)
ONLINE_METHODS = ("lsq", "sgd")


def _update(opt: torch.optim.Optimizer, loss: Tensor) -> float:
    """One optimizer step on a restoration ``loss``; a non-finite loss raises."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"online restoration loss is {loss.item()}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


class LayerRestorer:
    """Restores ``B ≈ W`` (o, i) of one linear layer from probes of its forward map."""

    def __init__(self, layer: SurrogateLinear, loss: str = "mse", dim_sample: int | None = None,
                 directions: int | None = None, cotangents: int | None = None,
                 points: int = 4, lr: float = 1e-2, steps: int = 1, target: str = "jvp",
                 initial_messup: float = 1.0, generator: torch.Generator | None = None,
                 method: str = "lsq") -> None:
        w = layer.weight
        self.method = check_choice(method, ONLINE_METHODS, "online restoration method")
        self._window: list[tuple[Tensor, Tensor]] = []
        self.layer = layer
        self.dim_sample = check_dim_sample(dim_sample or layer.in_features, layer.in_features)
        self.k = directions or self.dim_sample
        self.c = cotangents or layer.out_features
        self.points = check_int(points, "points", 1)
        self.steps = check_int(steps, "steps", 1)
        self.target = check_choice(target, ("jvp", "fd"), "online restoration target")
        self.loss = get_loss(loss)
        self.gen = generator or torch.Generator().manual_seed(0)
        self.surrogate = Structured(layer.in_features, layer.out_features, initial_messup,
                                    self.gen, w.dtype, w.device)
        self.opt = torch.optim.Adam(self.surrogate.parameters(), lr=check_number(lr, "lr"))
        self.jvp_evals = 0
        self.last_input: Tensor | None = None
        self.last_grad: Tensor | None = None

    def f(self, x: Tensor) -> Tensor:
        """The black-box forward ``x (m, i) -> (m, o)`` (probes only; no gradient to ``W``)."""
        bias = self.layer.bias.detach() if self.layer.bias is not None else None
        return F.linear(x, self.layer.weight.detach(), bias)

    def step(self, cotangents: str = "gaussian") -> float:
        """``steps`` restoration updates at the last seen inputs; returns the mean loss."""
        if self.last_input is None:
            raise RuntimeError("LayerRestorer.step needs a forward pass first (no inputs seen)")
        x = self.last_input.reshape(-1, self.last_input.shape[-1])
        dtype, device = x.dtype, x.device
        if self.method == "lsq":
            return self._lsq_step(x)
        total = 0.0
        for _ in range(self.steps):
            rows = torch.randint(0, x.shape[0], (self.points,), generator=self.gen)
            alpha = x[rows.to(device)]
            n, i = alpha.shape
            dalpha, _ = sample_directions(n, self.k, i, self.dim_sample, "gaussian", self.gen,
                                          dtype, device)
            df, _ = directional_change(self.f, alpha[:, None].expand(n, self.k, i).reshape(-1, i),
                                       dalpha.reshape(-1, i), self.target)
            self.jvp_evals += n * self.k
            if cotangents == "real" and self.last_grad is not None:
                g = self.last_grad.reshape(-1, self.last_grad.shape[-1])
                pick = torch.randint(0, g.shape[0], (n, self.c), generator=self.gen)
                u = g[pick.to(device)]
            else:
                u = sample_cotangents(n, self.c, df.shape[-1], "gaussian", self.gen, dtype, device)
            pred, y = equations(self.surrogate, u, alpha[:, None], dalpha,
                                df.reshape(n, self.k, -1))
            loss = self.loss(pred, y)
            total += _update(self.opt, loss)
        return total / self.steps

    def _lsq_step(self, x: Tensor) -> float:
        """Probe ``dim_sample`` directions at one input row, keep the latest ``fan_in`` probes
        and set ``B`` to their least-squares solution; returns the held residual of the new
        probes under the previous ``B`` (relative), a drift signal."""
        i = x.shape[-1]
        row = torch.randint(0, x.shape[0], (1,), generator=self.gen).to(x.device)
        dalpha, _ = sample_directions(1, self.dim_sample, i, self.dim_sample, "gaussian",
                                      self.gen, x.dtype, x.device)
        dalpha = dalpha[0]
        df, _ = directional_change(self.f, x[row].expand_as(dalpha), dalpha, self.target)
        self.jvp_evals += dalpha.shape[0]
        with torch.no_grad():
            before = df.norm()
            drift = float((dalpha @ self.surrogate.B.T - df).norm() / before) if before > 0 \
                else 0.0
            self._window = [(dalpha, df), *self._window]
            kept, n = [], 0
            for d, f in self._window:
                if n >= i:
                    break
                kept.append((d, f))
                n += d.shape[0]
            self._window = kept
            d_all = torch.cat([d for d, _ in kept])
            f_all = torch.cat([f for _, f in kept])
            self.surrogate.B.copy_(least_squares_jacobian(d_all, f_all))
        return drift

    def metrics(self) -> dict[str, float]:
        """Cosine / relative error / sign agreement of ``B`` vs the layer's current ``W``."""
        return jacobian_metrics(self.surrogate.B[None], self.layer.weight[None])


class ConvFeedback(nn.Module):
    """The restored feedback ``B`` of a convolution, shaped like its weight (o, c/groups, *k)."""

    def __init__(self, weight: Tensor, initial_messup: float, generator: torch.Generator) -> None:
        super().__init__()
        fan_in = math.prod(weight.shape[1:])
        init = torch.randn(weight.shape, generator=generator, dtype=weight.dtype)
        self.B = nn.Parameter((initial_messup / math.sqrt(fan_in)) * init.to(weight.device))

    def feedback(self, weight: Tensor | None = None) -> Tensor:
        """``B``, for ``BackwardSpec(weight=Learned(s.feedback))`` (never reads ``weight``)."""
        return self.B


class ConvRestorer:
    """Restores ``B ≈ W`` (o, c/groups, *k) of one convolution from probes of its forward.

    Each round draws ``⌈oversample · fan_in / P⌉`` Gaussian directions ``dx`` shaped like one
    input sample (``P`` output positions per sample), evaluates ``J dx`` at rows of the last
    input (jvp, or finite differences of the black box), and solves ``Y_g = X_g B_gᵀ`` per group
    (``X_g`` (m·P, c/groups·Πk) the patches of ``dx``, ``Y_g`` (m·P, o/groups)): least squares
    (``lsq``, in float64) or ``steps`` Adam steps on the relative squared residual (``sgd``).
    ``jvp_evals`` counts probed samples (one directional evaluation each).
    """

    def __init__(self, layer: nn.Module, oversample: float = 2.0, lr: float = 1e-2,
                 steps: int = 1, target: str = "jvp", initial_messup: float = 1.0,
                 generator: torch.Generator | None = None, method: str = "lsq") -> None:
        self.method = check_choice(method, ONLINE_METHODS, "online restoration method")
        self.layer = layer
        self.oversample = check_number(oversample, "oversample")
        self.steps = check_int(steps, "steps", 1)
        self.target = check_choice(target, ("jvp", "fd"), "online restoration target")
        self.gen = generator or torch.Generator().manual_seed(0)
        self.surrogate = ConvFeedback(layer.weight.detach(), initial_messup, self.gen)
        self.opt = torch.optim.Adam(self.surrogate.parameters(), lr=check_number(lr, "lr"))
        self.jvp_evals = 0
        self.last_input: Tensor | None = None
        self.last_grad: Tensor | None = None
        #: output positions ``P`` per sample of the last forward (set by the restorer's hook)
        self.out_positions = 1

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None, groups: int) -> Tensor:
        m = self.layer
        return surrogate_conv(x, w, b, stride=m.stride, padding=m.padding, dilation=m.dilation,
                              groups=groups, padding_mode=m.padding_mode)

    def f(self, x: Tensor) -> Tensor:
        """The black-box forward ``x (m, c, *s) -> (m, o, *s')`` (no gradient to ``W``)."""
        bias = self.layer.bias.detach() if self.layer.bias is not None else None
        return self._conv(x, self.layer.weight.detach(), bias, self.layer.groups)

    def patches(self, dx: Tensor) -> Tensor:
        """``dx`` (m, c, *s) -> (groups, m·P, c/groups·Πk): the patch each output position sees
        (a convolution with one-hot kernels and the layer's geometry)."""
        c, ks = dx.shape[1], tuple(self.layer.kernel_size)
        kk = math.prod(ks)
        eye = torch.eye(kk, dtype=dx.dtype, device=dx.device).reshape(kk, 1, *ks)
        cols = self._conv(dx, eye.repeat(c, 1, *([1] * len(ks))), None, c)  # (m, c·kk, *s')
        g = self.layer.groups
        cols = cols.reshape(dx.shape[0], g, (c // g) * kk, -1)
        return cols.permute(1, 0, 3, 2).reshape(g, -1, (c // g) * kk)

    def _probe(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Design ``X`` (g, m·P, c/g·Πk) and responses ``Y`` (g, m·P, o/g) of fresh probes."""
        sample = x.shape[1:]
        w = self.layer.weight
        fan, g = math.prod(w.shape[1:]), self.layer.groups
        m = max(1, math.ceil(self.oversample * fan / max(1, self.out_positions)))
        rows = torch.randint(0, x.shape[0], (m,), generator=self.gen).to(x.device)
        dx = torch.randn((m, *sample), generator=self.gen, dtype=x.dtype).to(x.device)
        flat = lambda z: self.f(z.reshape(-1, *sample)).flatten(1)
        df, _ = directional_change(flat, x[rows].flatten(1), dx.flatten(1), self.target)
        self.jvp_evals += m
        df = df.reshape(m, g, w.shape[0] // g, -1).permute(1, 0, 3, 2).reshape(g, -1,
                                                                             w.shape[0] // g)
        return self.patches(dx), df

    def step(self, cotangents: str = "gaussian") -> float:
        """One restoration round at the last seen input; returns the relative residual of the
        new probes under the previous ``B`` (lsq: a drift signal) or the mean loss (sgd)."""
        if self.last_input is None:
            raise RuntimeError("ConvRestorer.step needs a forward pass first (no inputs seen)")
        x = self.last_input
        if x.dim() == self.layer.weight.dim() - 1:  # unbatched (c, *s)
            x = x[None]
        B = self.surrogate.B
        o, g = B.shape[0], self.layer.groups
        if self.method == "lsq":
            X, Y = self._probe(x)
            with torch.no_grad():
                bg = B.reshape(g, o // g, -1)
                before = Y.norm()
                drift = float((X @ bg.transpose(1, 2) - Y).norm() / before) if before > 0 else 0.0
                sol = torch.linalg.lstsq(X.double(), Y.double(), driver="gelsd").solution
                B.copy_(sol.transpose(1, 2).reshape(B.shape).to(B.dtype))
            return drift
        total = 0.0
        for _ in range(self.steps):
            X, Y = self._probe(x)
            pred = X @ B.reshape(g, o // g, -1).transpose(1, 2)
            loss = ((pred - Y) ** 2).mean() / (Y ** 2).mean().clamp_min(1e-30)
            total += _update(self.opt, loss)
        return total / self.steps

    def metrics(self) -> dict[str, float]:
        """Cosine / relative error / sign agreement of ``B`` vs the layer's current ``W``."""
        o = self.layer.weight.shape[0]
        return jacobian_metrics(self.surrogate.B.reshape(1, o, -1),
                                self.layer.weight.reshape(1, o, -1))


class OnlineRestorer:
    """Convert every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` of ``model`` to a learned-feedback
    layer and restore them.

    ``model`` is modified in place (a bare layer cannot be, and raises ``ValueError``: wrap it
    in ``nn.Sequential``); ``restorers`` maps layer names to :class:`LayerRestorer` (linear) or
    :class:`ConvRestorer` (convolutions: ``oversample`` sets their probes; ``dim_sample``,
    ``points``, ``loss`` and ``cotangents`` apply to linear layers only). Inputs (and, for
    ``cotangents="real"``, output gradients) are captured by hooks.
    """

    def __init__(self, model: nn.Module, loss: str = "mse", dim_sample: float | int = 1.0,
                 points: int = 4, lr: float = 1e-2, steps: int = 1, target: str = "jvp",
                 cotangents: str = "gaussian", initial_messup: float = 1.0, seed: int = 0,
                 warmup_steps: int = 0, method: str = "lsq", oversample: float = 2.0) -> None:
        check_choice(cotangents, ONLINE_COTANGENTS, "cotangents")
        if isinstance(model, (nn.Linear, *_CONVS)):
            raise ValueError(
                f"OnlineRestorer converts model's layers in place, which a bare layer "
                f"({type(model).__name__}) does not allow; wrap it, e.g. "
                "nn.Sequential(layer), and train the wrapper")
        self.cotangents = cotangents
        self.restorers: dict[str, LayerRestorer | ConvRestorer] = {}
        gen = torch.Generator().manual_seed(seed)

        def spec_for(name: str, module: nn.Module) -> BackwardSpec | None:
            if not isinstance(module, (nn.Linear, *_CONVS)):
                return None
            # each layer's own stream, drawn from the seed in conversion order
            layer_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,),
                                                                        generator=gen)))
            r: LayerRestorer | ConvRestorer
            if isinstance(module, _CONVS):
                r = ConvRestorer(module, oversample, lr, steps, target, initial_messup,
                                 layer_gen, method)
            else:
                ds = dim_sample if isinstance(dim_sample, int) else max(
                    1, round(dim_sample * module.in_features))
                r = LayerRestorer(module, loss, ds, None, None, points, lr, steps, target,
                                  initial_messup, layer_gen, method)  # type: ignore[arg-type]
            self.restorers[name] = r
            return BackwardSpec(weight=Learned(r.surrogate.feedback))

        if convert(model, spec_for) is not model:  # pragma: no cover - guarded above
            raise ValueError("OnlineRestorer needs a model whose layers convert in place")
        for name, module in model.named_modules():
            if name in self.restorers:
                self.restorers[name].layer = module  # the converted layer (shares W)
                module.register_forward_hook(self._hook(self.restorers[name]))
        self.warmup_steps = warmup_steps

    def _hook(self, r: LayerRestorer | ConvRestorer):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            r.last_input = inputs[0].detach()
            if isinstance(r, ConvRestorer):
                spatial = r.layer.weight.dim() - 2
                r.out_positions = math.prod(output.shape[output.dim() - spatial:])
            if self.cotangents == "real" and output.requires_grad:
                output.register_hook(lambda g: setattr(r, "last_grad", g.detach()))
        return hook

    def step(self) -> dict[str, float]:
        """One restoration round for every layer; returns the losses by layer name."""
        return {name: r.step(self.cotangents) for name, r in self.restorers.items()}

    def warmup(self, x: Tensor, model: nn.Module) -> None:
        """Forward ``x`` once and run ``warmup_steps`` restoration rounds before training."""
        with torch.no_grad():
            model(x)
        for _ in range(self.warmup_steps):
            self.step()

    @property
    def jvp_evals(self) -> int:
        return sum(r.jvp_evals for r in self.restorers.values())

    def metrics(self) -> dict[str, dict[str, float]]:
        return {name: r.metrics() for name, r in self.restorers.items()}
