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
        loss.backward()
    rec.summary()          # {(layer, target): {metric: mean over calls}}
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "METRICS",
    "GradientRecord",
    "GradientRecorder",
    "end_to_end_fidelity",
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
        return dataclasses.asdict(self)


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

    def summary(self) -> dict[tuple[str, str], dict[str, float]]:
        """Mean of each metric over calls (and members) per (layer, target)."""
        groups: dict[tuple[str, str], list[GradientRecord]] = {}
        for r in self.records:
            groups.setdefault((r.layer, r.target), []).append(r)
        out = {}
        for key, rs in groups.items():
            out[key] = {
                m: float(torch.tensor([getattr(r, m) for r in rs], dtype=torch.float64).mean())
                for m in METRICS
            }
        return out


@contextlib.contextmanager
def record_gradients(model: nn.Module,
                     recorder: GradientRecorder | None = None) -> Iterator[GradientRecorder]:
    """Record diagnostics of every surrogate layer of ``model`` while the block runs.

    The forward pass must run inside the block (the recorder is bound at forward time).
    """
    from .layers import SurrogateMixin

    recorder = GradientRecorder() if recorder is None else recorder
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, SurrogateMixin)]
    if not layers:
        raise ValueError("record_gradients: the model has no surrogate layers; call convert()")
    for name, layer in layers:
        layer.recorder = recorder.for_layer(name or type(layer).__name__)
    try:
        yield recorder
    finally:
        for _, layer in layers:
            layer.recorder = None


def end_to_end_fidelity(model: nn.Module,
                        loss_fn: Callable[[], Tensor]) -> dict[str, dict[str, float]]:
    """Per parameter: metrics of the surrogate gradient vs exact backpropagation's.

    ``loss_fn()`` runs the forward pass and returns a scalar loss; it is evaluated twice, once
    with every surrogate layer's spec set to exact (true gradient) and once as configured.
    Leaves ``.grad`` untouched.
    """
    from .layers import exact_backward

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("end_to_end_fidelity: the model has no trainable parameters")
    names, params = zip(*named)
    with exact_backward(model):
        true = torch.autograd.grad(loss_fn(), params, allow_unused=True)
    used = torch.autograd.grad(loss_fn(), params, allow_unused=True)
    out = {}
    for name, u, t in zip(names, used, true):
        if t is None:
            continue
        u = torch.zeros_like(t) if u is None else u
        out[name] = {k: float(v) for k, v in gradient_metrics(u, t).items()}
    return out
