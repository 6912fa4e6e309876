"""Direct feedback alignment (DFA, Nøkland 2016) as a model-level spec.

Every converted layer ``l`` (``nn.Linear``, ``nn.Conv1d/2d/3d`` and their surrogates) hands its
input, instead of the backpropagated ``g_l @ W_l``, the model's output error sent through its
own fixed random matrix::

    grad_input_l = e @ B_l        e (n, *out) = dL/dy at the model output, flattened to (n, k)
                                  B_l (k, *in_l), in_l = the layer's input shape without n

so the hidden activation ``h_{l-1}`` feeding layer ``l`` receives ``e @ B_l`` and the output
layer gets the true ``e`` as its ``grad_output``. Weight and bias gradients stay exact given
the ``grad_output`` a layer receives (a layer that already was a surrogate keeps its other
targets, e.g. ``grad_weight=flip:0.1``); the forward is unchanged. The first layer's
``grad_input`` is only formed (and its ``B`` only drawn) when its input needs a gradient.
Other modules (``nn.MultiheadAttention`` included) keep their backward; ``handle.report``
lists them under ``skipped`` with the reason.

Scale (biotorch's convention, on ``B_l`` viewed as a (k, d) matrix with ``d = prod(in_l)``):
``kaiming`` (default) draws ``torch.nn.init.kaiming_uniform_(a=√5)``, i.e. ``U(±1/√d)``;
``xavier`` draws ``U(±√(6/(k+d)))``; both times ``scale``. Each ``B_l`` is drawn at the first
backward that needs it from its own generator, seeded from ``generator`` when :func:`dfa` is
called (so the draws do not depend on the order layers run), and kept as the persistent
buffer ``<layer>.dfa_feedback`` (``state_dict`` round trips; loading one restores ``B_l``).

String form (W&B / grid configs): ``"dfa"``, ``"dfa:xavier"``, ``"dfa:0.5"``,
``"dfa:xavier:0.5"`` (:class:`DFASpec`). One forward per backward: the output error is taken
from the output of the model call being backpropagated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .backward import BackwardSpec, Learned, draw_init
from .backward.feedback import INITS
from .layers import SurrogateMixin, convert_with_report, make_generator
from .registry import check_choice, check_number, parse_arg

__all__ = ["BUFFER", "DFASpec", "DirectFeedbackAlignment", "apply_model_spec", "dfa",
           "is_dfa"]

#: name of the per-layer buffer holding ``B_l``
BUFFER = "dfa_feedback"


def _num(v: float) -> str:
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


@dataclasses.dataclass(frozen=True)
class DFASpec:
    """``dfa[:INIT][:SCALE]``: ``init`` in ``kaiming`` (default) / ``xavier``, ``scale`` > 0."""

    init: str = "kaiming"
    scale: float = 1.0

    def __post_init__(self) -> None:
        init = self.init.strip().lower() if isinstance(self.init, str) else self.init
        object.__setattr__(self, "init", check_choice(init, INITS, "init of spec 'dfa'"))
        object.__setattr__(self, "scale", check_number(self.scale, "spec 'dfa': scale"))

    def __str__(self) -> str:
        parts = ["dfa"] + ([self.init] if self.init != "kaiming" else [])
        return ":".join(parts + ([_num(self.scale)] if self.scale != 1.0 else []))

    @classmethod
    def parse(cls, text: str) -> DFASpec:
        """Inverse of ``str``; a ``ValueError`` names a bad value and the accepted forms."""
        name, arg = parse_arg(text, "DFA spec")
        if name != "dfa":
            raise ValueError(f"not a DFA spec: {text!r}; accepted: dfa[:kaiming|xavier][:SCALE]")
        fields: dict[str, Any] = {}
        for token in [] if arg is None else [t.strip().lower() for t in arg.split(":")]:
            key = "init" if token in INITS or not _is_number(token) else "scale"
            if key in fields:
                raise ValueError(f"DFA spec {text!r} gives {key} twice; accepted: "
                                 f"dfa[:kaiming|xavier][:SCALE]")
            fields[key] = token
        return cls(**fields)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def is_dfa(spec: object) -> bool:
    """True for a :class:`DFASpec` or a string naming it (``"dfa"``, ``"dfa:..."``)."""
    if isinstance(spec, DFASpec):
        return True
    return isinstance(spec, str) and spec.strip().lower().partition(":")[0].strip() == "dfa"


def _is_layer(module: nn.Module) -> bool:
    """A single (non-ensemble) linear or convolution layer, plain or surrogate."""
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, SurrogateMixin)) and \
        not getattr(module, "is_ensemble", False)


class _DFAInput:
    """The ``Learned`` ``grad_input`` of one layer: ``(g, x) -> e @ B`` shaped like ``x``."""

    def __init__(self, owner: DirectFeedbackAlignment, layer: nn.Module, index: int) -> None:
        self.owner, self.layer, self.index = owner, layer, index

    def __call__(self, g: Tensor, x: Tensor) -> Tensor:
        return self.owner.grad_input(self.layer, self.index, x)


class DirectFeedbackAlignment:
    """The DFA state of a model converted in place by :func:`dfa` (see the module docstring).

    ``layers``: qualified name -> converted layer; ``error``: the output error ``e`` of the
    latest backward; :meth:`feedback` gives ``B_l``; :meth:`remove` restores exact backprop.
    """

    def __init__(self, model: nn.Module, spec: DFASpec | str = "dfa",
                 generator: torch.Generator | int | None = None,
                 include: str | Sequence[str] | Callable[[str], bool] | None = None) -> None:
        self.spec = spec if isinstance(spec, DFASpec) else DFASpec.parse(spec)
        first = next(iter(model.parameters()), None)
        gen = make_generator(generator, first.device if first is not None else "cpu")
        self.error: Tensor | None = None
        names: list[str] = []
        others: dict[str, str] = {}

        def layer_spec(name: str, module: nn.Module) -> BackwardSpec | None:
            if not _is_layer(module):  # e.g. nn.MultiheadAttention: reported, left as it is
                others[name] = (f"{type(module).__name__} is not a single nn.Linear / nn.Conv "
                                f"layer: dfa leaves its backward as it is (exact)")
                return None
            names.append(name)
            # a surrogate keeps its spec (and state); grad_input is bound to B_l below
            return module.spec if isinstance(module, SurrogateMixin) else BackwardSpec()

        model, self.report = convert_with_report(model, layer_spec, include, None)
        self.report.skipped.update(others)
        modules = dict(model.named_modules())
        self.layers: dict[str, nn.Module] = {n: modules[n] for n in names if n in modules}
        if not self.layers:
            raise ValueError("dfa found no nn.Linear / nn.Conv layer to convert in the model"
                             + ("" if include is None else f" matching include={include!r}"))
        # One seed per layer, drawn now: B_l does not depend on the order layers run.
        seeds = torch.randint(0, 2**62, (len(self.layers),), generator=gen,
                              device=gen.device if gen is not None else "cpu").tolist()
        self._seeds = [int(s) for s in seeds]
        self.model = model
        self._specs = {n: layer.spec for n, layer in self.layers.items()}
        for index, layer in enumerate(self.layers.values()):
            layer.spec = layer.spec.replace(grad_input=Learned(_DFAInput(self, layer, index)))
            layer.register_load_state_dict_pre_hook(_materialise)
        self._hook = model.register_forward_hook(self._on_output)

    # --- output error ----------------------------------------------------------------------
    def _on_output(self, module: nn.Module, args: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            raise ValueError(f"dfa needs a model whose output is one tensor (n, *out); got "
                             f"{type(output).__name__}")
        self.error = None  # a backward without a fresh error fails loudly, never uses a stale one
        if output.requires_grad:
            output.register_hook(self._capture)

    def _capture(self, grad: Tensor) -> None:
        self.error = grad.detach()

    # --- feedback matrices -----------------------------------------------------------------
    def feedback(self, name: str) -> Tensor | None:
        """``B`` of layer ``name`` (k, *in), or ``None`` before its first backward."""
        return getattr(self.layers[name], BUFFER, None)

    def draw(self, index: int, shape: Sequence[int], dtype: torch.dtype,
             device: torch.device) -> Tensor:
        """``B`` for layer ``index`` shaped (k, *in): drawn on a (k, d) view, times ``scale``."""
        k, d = shape[0], int(torch.Size(shape[1:]).numel())
        gen = torch.Generator().manual_seed(self._seeds[index])
        b = draw_init((k, d), self.spec.init, gen, dtype=dtype, device=device)
        return (b * self.spec.scale if self.spec.scale != 1.0 else b).reshape(tuple(shape))

    def grad_input(self, layer: nn.Module, index: int, x: Tensor) -> Tensor:
        """``e @ B_l`` shaped like the layer input ``x`` (n, *in)."""
        e = self.error
        if e is None:
            raise RuntimeError("dfa: no output error captured — backpropagate from the output "
                               "of the model call itself (its forward hook records dL/dy)")
        n = x.shape[0] if x.dim() > 0 else 0
        if e.dim() == 0 or e.shape[0] != n:
            raise RuntimeError(f"dfa: output error shape {tuple(e.shape)} and layer input shape "
                               f"{tuple(x.shape)} disagree on the batch size (dim 0)")
        k = e[0].numel()
        want = (k, *x.shape[1:])
        b = getattr(layer, BUFFER, None)
        if b is None:
            b = self.draw(index, want, layer.weight.dtype, layer.weight.device)
            layer.register_buffer(BUFFER, b, persistent=True)
        elif tuple(b.shape) != want:
            raise RuntimeError(f"dfa: layer input (n, *in) = {tuple(x.shape)} with {k} outputs "
                               f"needs B of shape {want}; the layer has {tuple(b.shape)} "
                               f"(DFA needs a fixed input shape per layer)")
        out = e.reshape(n, k).to(b.dtype) @ b.reshape(k, -1)
        return out.reshape(x.shape).to(x.dtype)

    def remove(self) -> nn.Module:
        """Undo :func:`dfa`: the layers' specs from before (exact for layers it converted), no
        hook, no ``B`` buffers. Returns the model."""
        self._hook.remove()
        for name, layer in self.layers.items():
            layer.spec = self._specs[name]
            if hasattr(layer, BUFFER):
                delattr(layer, BUFFER)
        return self.model

    def __repr__(self) -> str:
        return f"DirectFeedbackAlignment({self.spec}, layers={list(self.layers)})"


def _materialise(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-time: give a layer whose ``B`` was not drawn yet a buffer to load into."""
    key = prefix + BUFFER
    if key in state_dict and getattr(module, BUFFER, None) is None:
        module.register_buffer(BUFFER, torch.empty_like(state_dict[key],
                                                        device=module.weight.device))


def dfa(model: nn.Module, spec: DFASpec | str = "dfa",
        generator: torch.Generator | int | None = None,
        include: str | Sequence[str] | Callable[[str], bool] | None = None
        ) -> DirectFeedbackAlignment:
    """Convert ``model`` in place for direct feedback alignment; return its handle.

    ``spec``: ``"dfa[:kaiming|xavier][:SCALE]"`` or a :class:`DFASpec`. ``generator``: int
    seed or ``torch.Generator`` (one draw of per-layer seeds now; ``None``: the global RNG).
    ``include``: glob pattern(s) or predicate on layer names, as in ``convert``. Train as
    usual (``loss(model(x), y).backward()``); ``handle.model`` is the converted model.
    """
    return DirectFeedbackAlignment(model, spec, generator, include)


def apply_model_spec(model: nn.Module, spec: BackwardSpec | DFASpec | str,
                     generator: torch.Generator | int | None = None
                     ) -> tuple[nn.Module, DirectFeedbackAlignment | None]:
    """One entry point for configs: a DFA spec (``"dfa..."``) gives ``dfa(model)``, anything
    else ``convert(model, spec)``. Returns the model and the DFA handle (or ``None``)."""
    if is_dfa(spec):
        handle = dfa(model, spec, generator)
        return handle.model, handle
    from .layers import convert
    return convert(model, spec, generator=generator), None
