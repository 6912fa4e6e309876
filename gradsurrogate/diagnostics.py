"""Gradient fidelity: how far is an approximate gradient (or Jacobian) from the exact one?

:func:`gradient_metrics` is the one implementation of the comparison metrics in this package;
with ``a`` the approximation and ``t`` the exact value, reduced over ``dim``:

* ``cosine``         = ⟨a, t⟩ / (|a| |t|)  in [-1, 1]  (0 when either is zero),
* ``sign_agreement`` = mean(sign a == sign t)          (sign 0 matches only 0; 1 when empty),
* ``norm_ratio``     = |a| / |t|                        (0 when both are zero, inf when only t is),
* ``rel_error``      = |a - t| / |t|                    (0 when both are zero, inf when only t is).

For every surrogate layer and every backward call, :class:`GradientRecorder` stores them per
target (``grad_input``, ``grad_weight``, ``grad_bias``), ``a`` being the gradient used and ``t``
the true one (computed as well, which costs one extra exact product per target). These are
*local*: ``t`` is the exact backward of the layer given the gradient it received.
:func:`end_to_end_fidelity` instead compares every parameter gradient with the one exact
backpropagation would give, so corruption accumulated through upstream layers shows.

Ensemble layers give one value per member (a list). Usage::

    with record_gradients(model) as rec:
        loss = loss_fn(model(x))           # the forward must run inside the block
        loss.backward()                    # the backward may run inside or after it
    rec.summary()   # {"layer/target": {metric: mean over calls}}, strict-JSON ready
    rec.angles()    # {layer: angle between used and true grad_input, degrees}

Activation checkpointing (``torch.utils.checkpoint``, reentrant or not) is supported: the
layers of a block that ran a forward are recomputed with their recorders bound, even when the
backward runs after the block (until the next ordinary forward of one of them).
:func:`feedback_alignment` gives the standard feedback-alignment diagnostic, the angle between
each layer's feedback matrix ``B`` and its weight ``W``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "METRICS",
    "GradientRecord",
    "GradientRecorder",
    "end_to_end_fidelity",
    "feedback_alignment",
    "gradient_metrics",
    "record_gradients",
]

#: the keys of :func:`gradient_metrics`, in order
METRICS: tuple[str, ...] = ("cosine", "sign_agreement", "norm_ratio", "rel_error")


def _reduced_dims(t: Tensor, dim: int | tuple[int, ...] | None) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(t.dim()))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if (not dims and t.dim() > 0) or any(not -t.dim() <= d < max(t.dim(), 1) for d in dims):
        raise ValueError(f"dim must name one or more of the {t.dim()} dims of a tensor of shape "
                         f"{tuple(t.shape)} (or be None for all); got {dim!r}")
    return tuple(sorted({d % max(t.dim(), 1) for d in dims}))


def gradient_metrics(approx: Tensor, exact: Tensor,
                     dim: int | tuple[int, ...] | None = None) -> dict[str, Tensor]:
    """:data:`METRICS` of ``approx`` against ``exact`` (same shape), reduced over ``dim``.

    ``dim=None`` compares the whole tensors (0-d results); ``dim=(1, 2)`` on (n, o, i)
    Jacobians gives one value per point n; ``dim=tuple(range(1, t.dim()))`` one per ensemble
    member. Computed in float64; results are float64 tensors shaped like ``approx`` without
    ``dim``. Zero and empty cases follow the module docstring; a NaN in the inputs makes
    ``cosine``, ``norm_ratio`` and ``rel_error`` NaN.
    """
    if approx.shape != exact.shape:
        raise ValueError(f"approx shape {tuple(approx.shape)} must equal exact shape "
                         f"{tuple(exact.shape)}")
    dims = _reduced_dims(approx, dim)
    a = approx.detach().to(torch.float64)
    t = exact.detach().to(a.device, torch.float64)
    if a.dim() == 0:
        a, t, dims = a.reshape(1), t.reshape(1), (0,)
    norm = lambda u: torch.linalg.vector_norm(u, dim=dims)
    na, nt, nd = norm(a), norm(t), norm(a - t)
    count = math.prod(a.shape[d] for d in dims)
    zero = torch.zeros((), dtype=torch.float64, device=a.device)
    both_zero = (na == 0) & (nt == 0)
    agree = (torch.sign(a) == torch.sign(t)).to(torch.float64).sum(dims)
    return {
        "cosine": torch.where((na == 0) | (nt == 0), zero,
                              ((a * t).sum(dims) / na / nt).clamp(-1, 1)),
        "sign_agreement": agree / count if count else torch.ones_like(na),
        "norm_ratio": torch.where(both_zero, zero, na / nt),
        "rel_error": torch.where(both_zero, zero, nd / nt),
    }


@dataclasses.dataclass
class GradientRecord:
    """:data:`METRICS` of one backward call of one (layer, target); per-member lists for an
    ensemble layer."""

    layer: str
    target: str
    call: int
    cosine: float | list[float]
    sign_agreement: float | list[float]
    norm_ratio: float | list[float]
    rel_error: float | list[float]

    def as_dict(self) -> dict[str, Any]:
        """The record as a strict-JSON-ready dict (non-finite values become ``None``)."""
        d = dataclasses.asdict(self)
        for m in METRICS:
            d[m] = [_finite(v) for v in d[m]] if isinstance(d[m], list) else _finite(d[m])
        return d


def _finite(v: float) -> float | None:
    """``v``, or ``None`` when it is NaN or infinite (strict JSON has neither)."""
    return v if math.isfinite(v) else None


def _degrees(cosine: Tensor) -> Tensor:
    return torch.rad2deg(torch.arccos(cosine.clamp(-1, 1)))


class GradientRecorder:
    """Collects :class:`GradientRecord`s; attach with :func:`record_gradients`."""

    def __init__(self) -> None:
        self.records: list[GradientRecord] = []
        self._calls: dict[tuple[str, str], int] = {}

    def for_layer(self, name: str):
        """The ``recorder(target, used, true, ensemble)`` callback of layer ``name``."""

        def record(target: str, used: Tensor, true: Tensor, ensemble: bool) -> None:
            key = (name, target)
            call = self._calls.get(key, 0)
            self._calls[key] = call + 1
            dim = tuple(range(1, used.dim())) if ensemble else None
            m = {k: v.tolist() for k, v in gradient_metrics(used, true, dim).items()}
            self.records.append(GradientRecord(name, target, call, **m))

        return record

    def clear(self) -> None:
        self.records.clear()
        self._calls.clear()

    def _groups(self) -> dict[tuple[str, str], list[GradientRecord]]:
        groups: dict[tuple[str, str], list[GradientRecord]] = {}
        for r in self.records:
            groups.setdefault((r.layer, r.target), []).append(r)
        return groups

    def summary(self, nested: bool = False) -> dict[str, Any]:
        """Mean of each metric over calls (and members), strict-JSON ready.

        Keys ``"layer/target"`` (``"encoder.0.linear1/grad_input"``), values
        ``{metric: float | None}`` (``None`` where the mean is NaN or infinite, e.g. the
        ``norm_ratio`` of a zero true gradient). ``nested=True``: ``{layer: {target: ...}}``.
        """
        out: dict[str, Any] = {}
        for (layer, target), rs in self._groups().items():
            means = {
                m: _finite(float(torch.tensor([getattr(r, m) for r in rs],
                                              dtype=torch.float64).mean()))
                for m in METRICS
            }
            if nested:
                out.setdefault(layer, {})[target] = means
            else:
                out[f"{layer}/{target}"] = means
        return out

    def angles(self, target: str = "grad_input") -> dict[str, float]:
        """Per layer: mean over calls (and members) of the angle, in degrees, between the
        gradient used and the true one, ``arccos(cosine)`` (the feedback-alignment angle of
        the signal a layer passes down when ``target="grad_input"``)."""
        out = {}
        for (layer, t), rs in self._groups().items():
            if t == target:
                cos = torch.tensor([r.cosine for r in rs], dtype=torch.float64)
                out[layer] = float(_degrees(cos).mean())
        return out


def _in_backward() -> bool:
    """True while the autograd engine runs a backward (where checkpointing recomputes)."""
    task = getattr(torch._C, "_current_graph_task_id", None)
    return task is not None and task() != -1


class _Session:
    """The bindings of one :func:`record_gradients` block (retired together)."""

    def __init__(self) -> None:
        self.open, self.ran = True, False
        self.bindings: list[_Binding] = []

    def close(self) -> None:
        self.open = False
        for binding in self.bindings:
            binding.layer.recorder = None
        if not self.ran:
            self.retire()

    def retire(self) -> None:
        for binding in self.bindings:
            binding.remove()
        self.bindings = []


class _Binding:
    """Binds one recorder callback to one layer, including checkpoint recomputations.

    An ordinary forward (outside a backward) binds the callback while the block is open; once
    it is closed, the first ordinary forward of any of its layers retires the whole block. A
    recomputation (a forward inside a backward: activation checkpointing) binds the callback
    only if the block ran a forward, so a recomputed graph matches the original one.
    """

    def __init__(self, layer: nn.Module, callback: Callable, session: _Session) -> None:
        self.layer, self.callback, self.session = layer, callback, session
        self.handles = [layer.register_forward_pre_hook(self.pre),
                        layer.register_forward_hook(self.post)]
        layer.recorder = callback

    def pre(self, layer: nn.Module, args: Any) -> None:
        session = self.session
        if _in_backward():
            layer.recorder = self.callback if session.ran else None
        elif session.open:
            session.ran = True
            layer.recorder = self.callback
        else:
            session.retire()

    def post(self, layer: nn.Module, args: Any, output: Any) -> None:
        if not self.session.open:
            layer.recorder = None

    def remove(self) -> None:
        self.layer.recorder = None
        for h in self.handles:
            h.remove()
        self.handles = []
        if _BINDINGS.get(self.layer) is self:
            del _BINDINGS[self.layer]


#: the binding of each layer still waiting for a checkpoint recomputation
_BINDINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def record_gradients(model: nn.Module,
                     recorder: GradientRecorder | None = None) -> Iterator[GradientRecorder]:
    """Record diagnostics of every surrogate layer of ``model`` for graphs built in the block.

    The forward pass must run inside the block (the recorder is bound at forward time); the
    backward may run inside or after it. With activation checkpointing the layers stay bound
    for their recomputation until the next ordinary forward pass of one of them.
    """
    from .layers import SurrogateMixin

    recorder = GradientRecorder() if recorder is None else recorder
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, SurrogateMixin)]
    if not layers:
        raise ValueError("record_gradients: the model has no surrogate layers; call convert()")
    session = _Session()
    for name, layer in layers:
        old = _BINDINGS.get(layer)
        if old is not None:
            old.session.retire()
        binding = _Binding(layer, recorder.for_layer(name or type(layer).__name__), session)
        _BINDINGS[layer] = binding
        session.bindings.append(binding)
    try:
        yield recorder
    finally:
        session.close()


def _cuda_devices() -> list[int]:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


def end_to_end_fidelity(model: nn.Module,
                        loss_fn: Callable[[], Tensor]) -> dict[str, dict[str, float]]:
    """Per parameter: metrics of the surrogate gradient vs exact backpropagation's.

    ``loss_fn()`` runs the forward pass and returns a scalar loss; it is evaluated twice, once
    with every surrogate layer's spec set to exact (true gradient) and once as configured.
    Both passes see the same random numbers (CPU and CUDA RNG states are restored in between,
    so dropout draws the same masks) and the model's buffers (BatchNorm running statistics)
    are restored after the first pass, so they are updated once, as by one training forward.
    Leaves ``.grad`` untouched; an exact spec scores cosine 1 and rel_error 0.
    """
    from .layers import exact_backward

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("end_to_end_fidelity: the model has no trainable parameters")
    names, params = zip(*named)
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    with torch.random.fork_rng(devices=_cuda_devices()):
        with exact_backward(model):
            true = torch.autograd.grad(loss_fn(), params, allow_unused=True)
    with torch.no_grad():
        for b, saved in buffers:
            if b.shape == saved.shape:
                b.copy_(saved)
    used = torch.autograd.grad(loss_fn(), params, allow_unused=True)
    out = {}
    for name, u, t in zip(names, used, true):
        if t is None:
            continue
        u = torch.zeros_like(t) if u is None else u
        out[name] = {k: float(v) for k, v in gradient_metrics(u, t).items()}
    return out


def _clone_generators(gen: Any) -> Any:
    """A copy of a layer's generator(s) in the same state (so reading B draws nothing)."""
    if isinstance(gen, torch.Generator):
        copy = torch.Generator(device=gen.device)
        copy.set_state(gen.get_state())
        return copy
    if isinstance(gen, (list, tuple)):
        return [_clone_generators(g) for g in gen]
    return gen


def feedback_alignment(model: nn.Module) -> dict[str, float | list[float]]:
    """Angle in degrees between each feedback-mode layer's ``B`` and its weight ``W``.

    ``angle = arccos(<vec B, vec W> / (|B| |W|))`` (0 = backpropagation's direction, 90 =
    orthogonal; 90 when either is zero), for every surrogate layer whose ``spec.weight`` is a
    :class:`~gradsurrogate.backward.FeedbackMode` (FA, uSF, frSF, brSF). ``B`` is the matrix the
    layer's next backward will use (``spec.weight.matrix(W, feedback, generator)``, drawn from
    a copy of the layer's generator, or under a forked global RNG, so no stream advances).
    Ensemble layers give one angle per member. Keys are qualified layer names.
    """
    from .backward import FeedbackMode
    from .layers import SurrogateMixin

    out: dict[str, float | list[float]] = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, SurrogateMixin) or not isinstance(layer.spec.weight,
                                                                  FeedbackMode):
            continue
        ens = bool(layer.is_ensemble)
        with torch.no_grad(), torch.random.fork_rng(devices=_cuda_devices()):
            b = layer.spec.weight.matrix(layer.weight, layer.feedback,
                                         _clone_generators(layer.generator), ens)
        w = layer.weight.detach()
        dim = tuple(range(1, w.dim())) if ens else None
        angle = _degrees(gradient_metrics(b, w, dim)["cosine"])
        out[name or type(layer).__name__] = angle.tolist()
    return out
