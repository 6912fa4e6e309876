"""Opt-in gradient diagnostics: how far is the gradient used from the true one?

For every surrogate layer and every backward call, :class:`GradientRecorder` stores, per target
(``grad_input``, ``grad_weight``, ``grad_bias``), with ``u`` the gradient used and ``t`` the true
one (computed as well, which costs one extra exact product per target):

* ``cosine``         = ⟨u, t⟩ / (|u| |t|)   (0 when either is zero),
* ``sign_agreement`` = mean(sign u == sign t),
* ``norm_ratio``     = |u| / |t|            (0 when both are zero, inf when only t is).

These are *local*: ``t`` is the exact backward of the layer given the gradient it received.
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
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "GradientRecord",
    "GradientRecorder",
    "end_to_end_fidelity",
    "gradient_metrics",
    "record_gradients",
]


def gradient_metrics(used: Tensor, true: Tensor, ensemble: bool = False) -> dict[str, Tensor]:
    """Cosine, sign agreement and norm ratio of ``used`` vs ``true`` (per member if ensemble)."""
    u = used.detach().reshape(used.shape[0], -1) if ensemble else used.detach().reshape(1, -1)
    t = true.detach().reshape(u.shape)
    dot = (u * t).sum(-1)
    nu, nt = u.norm(dim=-1), t.norm(dim=-1)
    denom = nu * nt
    cosine = torch.where(denom > 0, dot / torch.where(denom > 0, denom, 1), 0).clamp(-1, 1)
    ratio = torch.where(nt > 0, nu / torch.where(nt > 0, nt, 1),
                        torch.where(nu > 0, torch.inf, 0))
    agree = (torch.sign(u) == torch.sign(t)).to(u.dtype).mean(-1)
    out = {"cosine": cosine, "sign_agreement": agree, "norm_ratio": ratio}
    return {k: v if ensemble else v[0] for k, v in out.items()}


@dataclasses.dataclass
class GradientRecord:
    layer: str
    target: str
    call: int
    cosine: float | list[float]
    sign_agreement: float | list[float]
    norm_ratio: float | list[float]

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
            m = {k: v.tolist() for k, v in gradient_metrics(used, true, ensemble).items()}
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
                for m in ("cosine", "sign_agreement", "norm_ratio")
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

    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
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
