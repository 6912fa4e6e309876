"""Autograd Functions whose backward follows a :class:`~gradsurrogate.backward.BackwardSpec`.

One derivative class per layer type (:class:`LinearOp`, :class:`Conv2dOp`) shares the small
:class:`LayerOp` interface; one generic :class:`SurrogateFunction` turns any of them into a
``torch.autograd.Function`` (``forward`` + ``setup_context`` form, so it composes with
``torch.func.grad``, ``vmap`` and ``jvp``). Index letters: ``n`` batch (all leading dims),
``o`` out, ``i`` in, ``e`` ensemble member.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

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
    "Conv2dOp",
    "LayerOp",
    "LinearOp",
    "SurrogateFunction",
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

    def forward(self, x: Tensor, w: Tensor, b: Tensor | None, ensemble: bool) -> Tensor:
        raise NotImplementedError

    def grad_input(self, g: Tensor, w: Tensor, x_shape: torch.Size, ensemble: bool) -> Tensor:
        raise NotImplementedError

    def grad_weight(self, g: Tensor, x: Tensor, w_shape: torch.Size, ensemble: bool) -> Tensor:
        raise NotImplementedError

    def grad_bias(self, g: Tensor, ensemble: bool) -> Tensor:
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
class Conv2dOp(LayerOp):
    """``y = conv2d(x, W) + b`` with ``x[n,c,h,w]``, ``W[o,c/groups,kh,kw]``; no ensemble."""

    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def _kw(self) -> dict[str, Any]:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def forward(self, x: Tensor, w: Tensor, b: Tensor | None, ensemble: bool) -> Tensor:
        return F.conv2d(x, w, b, **self._kw())

    def grad_input(self, g: Tensor, w: Tensor, x_shape: torch.Size, ensemble: bool) -> Tensor:
        return torch.nn.grad.conv2d_input(x_shape, w, g, **self._kw())

    def grad_weight(self, g: Tensor, x: Tensor, w_shape: torch.Size, ensemble: bool) -> Tensor:
        return torch.nn.grad.conv2d_weight(x, w_shape, g, **self._kw())

    def grad_bias(self, g: Tensor, ensemble: bool) -> Tensor:
        return g.sum(dim=(0, 2, 3))

    def broadcast_bias(self, b: Tensor, y: Tensor, ensemble: bool) -> Tensor:
        return b[:, None, None]  # (o,) against (n, o, h, w)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything non-tensor the backward needs (passed through ``apply`` untouched)."""

    op: LayerOp
    spec: BackwardSpec
    generator: Generators = None
    recorder: Recorder | None = None
    ensemble: bool = False


class SurrogateFunction(torch.autograd.Function):
    """``y = op(x; W) + b`` exactly; the backward follows ``plan.spec``.

    Random draws happen in a fixed order (weight, grad_input, input, grad_weight, grad_bias),
    so one generator seed gives bitwise the same gradients.
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
        ctx.x_shape = x.shape
        ctx.w_shape = weight.shape
        ctx.save_for_backward(x, weight, feedback)
        ctx.save_for_forward(x, weight)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, w, feedback = ctx.saved_tensors
        plan: Plan = ctx.plan
        spec, gen, ens, op = plan.spec, plan.generator, plan.ensemble, plan.op
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gi = gw = gb = None

        if need_x and not isinstance(spec.grad_input, NoGrad):
            if isinstance(spec.grad_input, Learned):
                gi = spec.grad_input(g, x)
            else:
                if isinstance(spec.weight, FeedbackMode):
                    w_used = spec.weight.matrix(w, feedback, gen, ens)
                elif isinstance(spec.weight, Learned):
                    w_used = spec.weight(w)
                else:
                    w_used = spec.weight.apply(w, gen, ens)
                gi = spec.grad_input.apply(op.grad_input(g, w_used, ctx.x_shape, ens), gen, ens)
            if plan.recorder is not None:
                plan.recorder("grad_input", gi, op.grad_input(g, w, ctx.x_shape, ens), ens)

        if (need_w or need_b) and not isinstance(spec.grad_weight, NoGrad):
            if need_w:
                x_used = spec.input.apply(x, gen, ens)
                gw = spec.grad_weight.apply(op.grad_weight(g, x_used, ctx.w_shape, ens), gen, ens)
                if plan.recorder is not None:
                    true = op.grad_weight(g, x, ctx.w_shape, ens)
                    plan.recorder("grad_weight", gw, true, ens)
            if need_b:
                true_b = op.grad_bias(g, ens)
                gb = spec.grad_weight.apply(true_b, gen, ens)
                if plan.recorder is not None:
                    plan.recorder("grad_bias", gb, true_b, ens)
        return gi, gw, gb, None, None

    @staticmethod
    def jvp(ctx: Any, dx: Tensor | None, dw: Tensor | None, db: Tensor | None,
            dfeedback: Tensor | None, _plan: Any) -> Tensor:
        x, w = ctx.saved_tensors[:2]
        return ctx.plan.op.jvp(x, w, dx, dw, db, ctx.plan.ensemble)


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
            "weight='random' (feedback alignment) needs a fixed feedback matrix: pass "
            "feedback=RandomFeedback().draw(weight, generator) once and reuse it, or use "
            "SurrogateLinear, which keeps one per layer"
        )
    if feedback is not None and feedback.shape != weight.shape:
        raise ValueError(
            f"feedback shape {tuple(feedback.shape)} must equal weight shape {tuple(weight.shape)}"
        )
    plan = Plan(op, spec, generator, recorder, ensemble)
    if spec.is_exact and recorder is None:
        return op.forward(x, weight, bias, ensemble)  # plain autograd: bitwise nn.Linear
    return SurrogateFunction.apply(x, weight, bias, feedback, plan)


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


def surrogate_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                     spec: BackwardSpec | str | None = None, generator: Generators = None,
                     feedback: Tensor | None = None, recorder: Recorder | None = None,
                     stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                     dilation: int | tuple[int, int] = 1, groups: int = 1) -> Tensor:
    """``conv2d(x, W) + b`` with the backward of ``spec``; ``x`` (n, c, h, w) or (c, h, w),
    ``weight`` (o, c/groups, kh, kw). ``n = 0`` gives an empty output and zero gradients."""
    if isinstance(padding, str):
        raise ValueError(f"padding must be an int or pair of ints; got {padding!r}")
    if x.dim() not in (3, 4) or weight.dim() != 4:
        raise ValueError(f"conv2d needs input (n, c, h, w) or (c, h, w) and weight "
                         f"(o, c/groups, kh, kw); got shapes {tuple(x.shape)} and "
                         f"{tuple(weight.shape)}")
    pair = torch.nn.modules.utils._pair
    op = Conv2dOp(pair(stride), pair(padding), pair(dilation), groups)
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    y = _apply(op, x, weight, bias, spec, generator, feedback, recorder, False)
    return y.squeeze(0) if unbatched else y
