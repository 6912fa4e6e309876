"""Autograd Functions whose backward follows a :class:`~gradsurrogate.backward.BackwardSpec`.

One derivative class per layer type (:class:`LinearOp`; :class:`~gradsurrogate._conv.ConvOp`
for 1-d, 2-d and 3-d convolutions) shares the small :class:`LayerOp` interface; one generic
:class:`SurrogateFunction` turns any of them into a ``torch.autograd.Function`` (``forward`` +
``setup_context`` form, so it composes with ``torch.func.grad``, ``vmap`` and ``jvp``). Index
letters: ``n`` batch (all leading dims), ``o`` out, ``i`` in, ``e`` ensemble member.

Mixed precision: under ``torch.autocast`` (any device) the operands are cast to the autocast
dtype before the Function, exactly as autocast casts them for ``F.linear``/``F.conv*``, so the
forward numbers are those of the torch layer under autocast and the backward works in that
dtype (the casts' own backward returns float32 gradients to float32 parameters).

``torch.compile``: while dynamo traces, :class:`CompilableSurrogateFunction` (the same Function
without ``jvp``, which dynamo rejects as "Unsupported custom jvp") is used, so the
deterministic modes compile with ``fullgraph=True``. Random modes (``flip``, ``brsf``) compile
with ``fullgraph=True`` only with ``generator=None`` (global RNG): dynamo cannot put a
``torch.Generator`` object in a graph, so a layer with a generator breaks the graph there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .backward import (
    BackwardSpec,
    FeedbackMode,
    Generators,
    Learned,
    NoGrad,
)

__all__ = [
    "CompilableSurrogateFunction",
    "Conv2dOp",
    "ConvOp",
    "LayerOp",
    "LinearOp",
    "SurrogateFunction",
    "autocast_operands",
    "surrogate_conv",
    "surrogate_conv2d",
    "surrogate_linear",
]

#: ``recorder(target, used, true, ensemble)``, called from the backward when diagnostics are on.
Recorder = Callable[[str, Tensor, Tensor, bool], None]


class LayerOp:
    """Derivatives of one layer type ``y = op(x; W) + b``; the exact backward reads

    ``grad_input = grad_input(g, W)``, ``grad_weight = grad_weight(g, x)``, ``grad_bias(g)``.
    Perturbations enter only through the ``W`` and ``x`` handed in, and the results.
    """

    #: Whether :meth:`grads` forms all three gradients in one kernel call.
    fused: ClassVar[bool] = False

    def forward(self, x: Tensor, w: Tensor, b: Tensor | None, ensemble: bool) -> Tensor:
        raise NotImplementedError

    def grad_input(self, g: Tensor, w: Tensor, x_shape: torch.Size, ensemble: bool) -> Tensor:
        raise NotImplementedError

    def grad_weight(self, g: Tensor, x: Tensor, w_shape: torch.Size, ensemble: bool) -> Tensor:
        raise NotImplementedError

    def grad_bias(self, g: Tensor, ensemble: bool) -> Tensor:
        raise NotImplementedError

    def grad_bias_at(self, g: Tensor, x: Tensor, w: Tensor, ensemble: bool) -> Tensor:
        """``grad_bias`` given the saved operands too (a kernel may need them to match torch's
        own reduction bitwise); defaults to :meth:`grad_bias`."""
        return self.grad_bias(g, ensemble)

    def grads(self, g: Tensor, x: Tensor, w: Tensor, need_bias: bool,
              ensemble: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(grad_input(g, w), grad_weight(g, x), grad_bias)`` from one kernel call; only for
        layer types with ``fused = True`` (the others form the three one by one)."""
        raise NotImplementedError

    def jvp(self, x: Tensor, w: Tensor, dx: Tensor | None, dw: Tensor | None,
            db: Tensor | None, ensemble: bool) -> Tensor:
        """Exact forward-mode derivative ``dy = op(dx; W) + op(x; dW) + db``."""
        terms = []
        if dx is not None:
            terms.append(self.forward(dx, w, None, ensemble))
        if dw is not None:
            terms.append(self.forward(x, dw, None, ensemble))
        out = sum(terms[1:], terms[0]) if terms else None
        if db is not None:
            if out is None:
                out = self.forward(x, torch.zeros_like(w), None, ensemble)
            out = out + self.broadcast_bias(db, out, ensemble)
        return out

    def broadcast_bias(self, b: Tensor, y: Tensor, ensemble: bool) -> Tensor:
        """``b`` (o,) or (e, o) shaped to add to an output ``y`` (*, o) or (e, *, o)."""
        if ensemble:
            return b.reshape(b.shape[0], *([1] * (y.dim() - 2)), b.shape[-1])
        return b


class LinearOp(LayerOp):
    """``y = x Wᵀ + b``: ``y[n,o] = Σ_i x[n,i] W[o,i] + b[o]``; with an ensemble ``W[e,o,i]``,
    ``x[e,n,i]`` (any number of ``n`` dims)."""

    def forward(self, x: Tensor, w: Tensor, b: Tensor | None, ensemble: bool) -> Tensor:
        if not ensemble:
            return F.linear(x, w, b)
        shape = x.shape
        y = torch.bmm(x.reshape(shape[0], -1, shape[-1]), w.transpose(-1, -2))
        if b is not None:
            y = y + b.unsqueeze(-2)
        return y.reshape(*shape[:-1], w.shape[-2])

    def grad_input(self, g: Tensor, w: Tensor, x_shape: torch.Size, ensemble: bool) -> Tensor:
        # n o, o i -> n i
        if not ensemble:
            return g @ w
        return torch.bmm(g.reshape(g.shape[0], -1, g.shape[-1]), w).reshape(x_shape)

    def grad_weight(self, g: Tensor, x: Tensor, w_shape: torch.Size, ensemble: bool) -> Tensor:
        # n o, n i -> o i   (e n o, e n i -> e o i)
        if not ensemble:
            return g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])
        e = g.shape[0]
        return torch.bmm(
            g.reshape(e, -1, g.shape[-1]).transpose(1, 2), x.reshape(e, -1, x.shape[-1])
        )

    def grad_bias(self, g: Tensor, ensemble: bool) -> Tensor:
        # n o -> o   (e n o -> e o)
        if not ensemble:
            return g.reshape(-1, g.shape[-1]).sum(0)
        return g.reshape(g.shape[0], -1, g.shape[-1]).sum(1)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything non-tensor the backward needs (passed through ``apply`` untouched)."""

    op: LayerOp
    spec: BackwardSpec
    generator: Generators = None
    recorder: Recorder | None = None
    ensemble: bool = False


def _weight_used(spec: BackwardSpec, w: Tensor, feedback: Tensor | None, gen: Generators,
                 ens: bool) -> Tensor:
    """The matrix that stands in for ``W`` in ``grad_input`` (the ``weight`` target's mode)."""
    if isinstance(spec.weight, FeedbackMode):
        return spec.weight.matrix(w, feedback, gen, ens)
    if isinstance(spec.weight, Learned):
        return spec.weight(w)
    return spec.weight.apply(w, gen, ens)


def _backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
    """The backward of ``plan.spec``; operands are brought to ``g``'s dtype (autocast, or a
    float32 feedback matrix of a half-precision layer)."""
    if g is None:  # nothing flows into this layer (e.g. grad_input=none above): no gradients
        return None, None, None, None, None
    x, w, feedback = ctx.saved_tensors
    plan: Plan = ctx.plan
    spec, gen, ens, op = plan.spec, plan.generator, plan.ensemble, plan.op
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    gi = gw = gb = None

    want_x = need_x and not isinstance(spec.grad_input, NoGrad)
    want_w = need_w and not isinstance(spec.grad_weight, NoGrad)
    # One kernel for all three gradients (conv), when that keeps the order of random draws:
    # the input mode's draw moves before grad_input's, so not both may draw.
    if (op.fused and want_x and want_w and plan.recorder is None
            and not isinstance(spec.grad_input, Learned)
            and not (spec.input.random and spec.grad_input.random)):
        w_used = _weight_used(spec, w, feedback, gen, ens).to(g.dtype)
        x_used = spec.input.apply(x, gen, ens).to(g.dtype)
        gi_raw, gw_raw, gb_raw = op.grads(g, x_used, w_used, need_b, ens)
        gi = spec.grad_input.apply(gi_raw, gen, ens)
        gw = spec.grad_weight.apply(gw_raw, gen, ens)
        gb = spec.grad_weight.apply(gb_raw, gen, ens) if need_b else None
        return gi, gw, gb, None, None

    if want_x:
        if isinstance(spec.grad_input, Learned):
            gi = spec.grad_input(g, x)
        else:
            w_used = _weight_used(spec, w, feedback, gen, ens).to(g.dtype)
            gi = spec.grad_input.apply(op.grad_input(g, w_used, ctx.x_shape, ens), gen, ens)
        if plan.recorder is not None:
            plan.recorder("grad_input", gi, op.grad_input(g, w.to(g.dtype), ctx.x_shape, ens),
                          ens)

    if (need_w or need_b) and not isinstance(spec.grad_weight, NoGrad):
        if need_w:
            x_used = spec.input.apply(x, gen, ens).to(g.dtype)
            gw = spec.grad_weight.apply(op.grad_weight(g, x_used, ctx.w_shape, ens), gen, ens)
            if plan.recorder is not None:
                true = op.grad_weight(g, x.to(g.dtype), ctx.w_shape, ens)
                plan.recorder("grad_weight", gw, true, ens)
        if need_b:
            true_b = op.grad_bias_at(g, x, w, ens)
            gb = spec.grad_weight.apply(true_b, gen, ens)
            if plan.recorder is not None:
                plan.recorder("grad_bias", gb, true_b, ens)
    return gi, gw, gb, None, None


class CompilableSurrogateFunction(torch.autograd.Function):
    """``y = op(x; W) + b`` exactly; the backward follows ``plan.spec``.

    Random draws happen in a fixed order (weight, grad_input, input, grad_weight, grad_bias),
    so one generator seed gives bitwise the same gradients. This class has no ``jvp`` so that
    dynamo can trace it (``torch.compile(..., fullgraph=True)``); :class:`SurrogateFunction`
    adds the exact forward-mode derivative for ``torch.func.jvp``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor | None,
                plan: Plan) -> Tensor:
        return plan.op.forward(x, weight, bias, plan.ensemble)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, weight, _bias, feedback, plan = inputs
        ctx.plan = plan
        ctx.set_materialize_grads(False)  # an undefined grad_output stays None (see _backward)
        ctx.x_shape = x.shape
        ctx.w_shape = weight.shape
        ctx.save_for_backward(x, weight, feedback)
        ctx.save_for_forward(x, weight)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        return _backward(ctx, g)


class SurrogateFunction(CompilableSurrogateFunction):
    """:class:`CompilableSurrogateFunction` plus the exact ``jvp`` (forward mode)."""

    @staticmethod
    def jvp(ctx: Any, dx: Tensor | None, dw: Tensor | None, db: Tensor | None,
            dfeedback: Tensor | None, _plan: Any) -> Tensor:
        x, w = ctx.saved_tensors[:2]
        return ctx.plan.op.jvp(x, w, dx, dw, db, ctx.plan.ensemble)


def autocast_operands(*tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """Cast floating ``tensors`` (float64 excepted, as autocast does) to the autocast dtype when
    autocast is on for their device: what autocast does to the operands of ``F.linear`` and
    ``F.conv*``. Otherwise return them as they are."""
    first = next(t for t in tensors if t is not None)
    device = first.device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) if t is not None and t.is_floating_point() and
                 t.dtype != torch.float64 else t for t in tensors)


def _check_tensors(x: Tensor, weight: Tensor, bias: Tensor | None,
                   feedback: Tensor | None) -> None:
    """Floating dtypes: ``ValueError`` naming the dtype otherwise. (Mixed floating dtypes are
    left to torch, which accepts them under autocast.)

    An empty batch is valid (as for ``nn.Linear``): the output is empty and the parameter
    gradients are zero.
    """
    named = (("input", x), ("weight", weight), ("bias", bias), ("feedback", feedback))
    for name, t in named:
        if t is not None and not t.is_floating_point():
            raise ValueError(f"{name} has dtype {t.dtype}; surrogate layers need a floating "
                             f"dtype (float16, bfloat16, float32 or float64): convert it, e.g. "
                             f"with .float()")


def _apply(op: LayerOp, x: Tensor, weight: Tensor, bias: Tensor | None,
           spec: BackwardSpec | str | None, generator: Generators, feedback: Tensor | None,
           recorder: Recorder | None, ensemble: bool) -> Tensor:
    _check_tensors(x, weight, bias, feedback)
    spec = BackwardSpec.coerce(spec)
    if getattr(spec.weight, "stateful", False) and feedback is None:
        raise ValueError(
            f"weight={str(spec.weight)!r} (feedback alignment) needs a fixed feedback matrix: "
            "pass feedback=spec.weight.init_state(weight, generator) once and reuse it, or use "
            "a surrogate layer (SurrogateLinear, SurrogateConv2d, ...), which keeps one"
        )
    if feedback is not None and feedback.shape != weight.shape:
        raise ValueError(
            f"feedback shape {tuple(feedback.shape)} must equal weight shape {tuple(weight.shape)}"
        )
    if spec.is_exact and recorder is None:
        return op.forward(x, weight, bias, ensemble)  # plain autograd: bitwise the torch layer
    # Only random modes see the generator: a Generator object in the plan would stop dynamo.
    plan = Plan(op, spec, generator if spec.is_random else None, recorder, ensemble)
    x, weight, bias, feedback = autocast_operands(x, weight, bias, feedback)
    fn = CompilableSurrogateFunction if torch.compiler.is_compiling() else SurrogateFunction
    return fn.apply(x, weight, bias, feedback, plan)


def surrogate_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                     spec: BackwardSpec | str | None = None, generator: Generators = None,
                     feedback: Tensor | None = None, recorder: Recorder | None = None) -> Tensor:
    """``y = x Wᵀ + b`` with the backward of ``spec``.

    Shapes: ``x`` (*, i), ``weight`` (o, i), ``bias`` (o,) -> (*, o). Ensemble form:
    ``weight`` (e, o, i), ``bias`` (e, o), ``x`` (e, *, i) -> (e, *, o); then ``generator``
    may be a list of ``e`` generators (member ``e`` draws from ``generator[e]``) and flip/blend
    parameters may be (e,) tensors. ``feedback`` (shaped like ``weight``) is required for
    ``weight='random'``. Tensors must have a floating dtype; an empty batch (``n = 0``)
    gives an empty output and zero parameter gradients, as ``nn.Linear`` does.
    """
    if weight.dim() not in (2, 3):
        raise ValueError(
            f"weight must be (out, in) or (ensemble, out, in); got shape {tuple(weight.shape)}"
        )
    ensemble = weight.dim() == 3
    if x.dim() < 1 + ensemble or x.shape[-1] != weight.shape[-1] or \
            (ensemble and x.shape[0] != weight.shape[0]):
        raise ValueError(
            f"input shape {tuple(x.shape)} does not match weight shape {tuple(weight.shape)}: "
            f"expected (*, {weight.shape[-1]})"
            + (f" with {weight.shape[0]} ensemble members in dim 0" if ensemble else "")
        )
    if bias is not None and bias.shape != weight.shape[:-1]:
        raise ValueError(
            f"bias shape {tuple(bias.shape)} must be {tuple(weight.shape[:-1])} for weight "
            f"shape {tuple(weight.shape)}"
        )
    return _apply(LinearOp(), x, weight, bias, spec, generator, feedback, recorder, ensemble)


from ._conv import Conv2dOp, ConvOp, surrogate_conv, surrogate_conv2d  # noqa: E402 (re-export)
