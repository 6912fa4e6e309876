"""``convert``: swap the weight layers of a model for surrogate layers, through a registry.

:data:`SURROGATES` maps a torch module type to a factory
``factory(module, spec, generator) -> nn.Module | str`` that returns the surrogate (sharing the
module's parameters) or the reason it cannot convert it. :func:`register_surrogate` adds one;
``convert`` picks the most specific registered type of each module (its MRO, so subclasses of
``nn.Linear`` are found; a factory may refuse a subclass with a reason).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from .backward import BackwardSpec
from .layers import (
    SpecLike,
    SurrogateConv1d,
    SurrogateConv2d,
    SurrogateConv3d,
    SurrogateLinear,
    SurrogateMixin,
    make_generator,
)
from .registry import check_choice

__all__ = ["SURROGATES", "ConversionReport", "convert", "convert_with_report", "exact_backward",
           "register_surrogate"]

Factory = Callable[[nn.Module, BackwardSpec, torch.Generator | None], "nn.Module | str"]
#: torch module type -> factory of its surrogate (see :func:`register_surrogate`)
SURROGATES: dict[type[nn.Module], Factory] = {}
Include = str | Sequence[str] | Callable[[str], bool] | None
ON_SKIP: tuple[str, ...] = ("summary", "list", "ignore")
_HOOKS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
          "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def register_surrogate(*types: type[nn.Module]) -> Callable[[Factory], Factory]:
    """Decorator: ``@register_surrogate(nn.Linear)`` makes ``convert`` use the factory for
    modules of these types (and their subclasses, unless a more specific type is registered)."""
    for t in types:
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise ValueError(f"register_surrogate takes nn.Module subclasses; got {t!r}")

    def decorate(factory: Factory) -> Factory:
        for t in types:
            SURROGATES[t] = factory
        return factory

    return decorate


def factory_for(module: nn.Module) -> Factory | None:
    """The factory of the most specific registered type of ``module`` (``None``: none)."""
    for cls in type(module).__mro__:
        if cls in SURROGATES:
            return SURROGATES[cls]
    return None


def _refusal(module: nn.Module, base: type[nn.Module], methods: Sequence[str]) -> str | None:
    """Why ``module`` (an instance of ``base``) cannot become a surrogate, or ``None``."""
    kind = type(module).__name__
    for m in methods:
        if getattr(type(module), m) is not getattr(base, m):
            return (f"{kind} subclasses nn.{base.__name__} but overrides {m}, which a surrogate "
                    f"would lose; register a surrogate for it with register_surrogate")
    if isinstance(getattr(module, "weight", None), nn.parameter.UninitializedParameter):
        return f"{kind} is lazy and not initialised yet: run one forward pass before convert"
    if "weight" not in module._parameters and not parametrize.is_parametrized(module, "weight"):
        hooks = sorted({type(h).__name__ for h in module._forward_pre_hooks.values()})
        how = f"a forward pre-hook ({', '.join(hooks)})" if hooks else "something else"
        hint = (" (the deprecated torch.nn.utils.weight_norm: use "
                "torch.nn.utils.parametrizations.weight_norm, which convert supports)"
                if "WeightNorm" in hooks else "")
        return f"{kind}.weight is not a parameter but set by {how}{hint}"
    own = {*module._parameters, *module._buffers, *module._modules}
    extra = sorted(own - {"weight", "bias", "parametrizations"})
    if extra:  # the surrogate keeps weight and bias only: the rest would vanish from state_dict
        return (f"{kind} subclasses nn.{base.__name__} and adds {', '.join(extra)}, which a "
                f"surrogate would drop; register a surrogate for it with register_surrogate")
    return None


def _adopt(new: SurrogateMixin, module: nn.Module, spec: BackwardSpec) -> SurrogateMixin:
    """Give ``new`` (built on "meta") the tensors, parametrizations and hooks of ``module``."""
    if parametrize.is_parametrized(module):
        parametrize._inject_new_class(new)
        for name in module.parametrizations:
            delattr(new, name)
        new.parametrizations = module.parametrizations  # shared ModuleDict
        for name in module.parametrizations:
            parametrize._inject_property(new, name)
    for name in ("weight", "bias"):
        if name in module._parameters:
            setattr(new, name, module._parameters[name])  # shared: same tensors and dtypes
    for attr in _HOOKS:  # the same dicts: a hook handle removes the hook from both
        if hasattr(module, attr):
            setattr(new, attr, getattr(module, attr))
    new.spec = spec  # draws a fixed feedback matrix (if any) like the real weight
    new.train(module.training)
    return new


@register_surrogate(nn.Linear)
def _linear(module: nn.Linear, spec: BackwardSpec,
            generator: torch.Generator | None) -> nn.Module | str:
    reason = _refusal(module, nn.Linear, ("forward",))
    if reason:
        return reason
    new = SurrogateLinear(module.in_features, module.out_features, module.bias is not None,
                          None, generator, device="meta")
    return _adopt(new, module, spec)


_CONVS = {nn.Conv1d: SurrogateConv1d, nn.Conv2d: SurrogateConv2d, nn.Conv3d: SurrogateConv3d}


@register_surrogate(*_CONVS)
def _conv(module: nn.Module, spec: BackwardSpec,
          generator: torch.Generator | None) -> nn.Module | str:
    base = next(b for b in type(module).__mro__ if b in _CONVS)
    reason = _refusal(module, base, ("forward", "_conv_forward"))
    if reason:
        return reason
    new = _CONVS[base](module.in_channels, module.out_channels, module.kernel_size,
                       module.stride, module.padding, module.dilation, module.groups,
                       module.bias is not None, None, generator, device="meta",
                       padding_mode=module.padding_mode)
    return _adopt(new, module, spec)


@dataclasses.dataclass
class ConversionReport:
    """What ``convert`` did, by qualified module name (JSON-ready: :meth:`to_dict`).

    ``converted``: swapped layers; ``skipped``: layer -> the reason it was left unchanged;
    ``shared``: a second site of a module used twice -> the name it was converted under.
    """

    converted: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    shared: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line: count per layer type without a surrogate, then the other reasons."""
        no_sur = Counter(r.removesuffix(" has no surrogate") for r in self.skipped.values()
                         if r.endswith(" has no surrogate"))
        parts = []
        if no_sur:
            parts.append("left " + ", ".join(f"{n} {t}" for t, n in no_sur.items())
                         + " unchanged (they have no surrogate)")
        other = Counter(r for r in self.skipped.values() if not r.endswith(" has no surrogate"))
        for reason, n in other.items():
            names = [k or "<root>" for k, r in self.skipped.items() if r == reason]
            parts.append(f"left {', '.join(names[:3])}{' ...' if n > 3 else ''} unchanged: "
                         f"{reason}")
        return "; ".join(parts)


def _matches(name: str, include: Include) -> bool:
    """True when ``name`` or one of its parents (``a`` and ``a.b`` for ``a.b.c``) matches."""
    if include is None:
        return True
    parts = name.split(".")
    prefixes = [".".join(parts[: k + 1]) for k in range(len(parts))]
    if callable(include):
        return any(bool(include(p)) for p in prefixes)
    patterns = [include] if isinstance(include, str) else list(include)
    return any(fnmatch.fnmatchcase(p, pat) for p in prefixes for pat in patterns)


def _parts_matched(module: nn.Module, name: str, include: Include) -> list[str]:
    """Names of the layers inside ``module`` (named ``name``) that ``include`` matches (a
    registered type, e.g. the ``out_proj`` of an attention module)."""
    if include is None or not name:
        return []
    subs = [n for n, m in module.named_modules(prefix=name, remove_duplicate=False)
            if m is not module and factory_for(m) is not None]
    if callable(include):
        return [n for n in subs if include(n)]
    patterns = [include] if isinstance(include, str) else list(include)
    return [n for n in subs if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]


def _check_include(model: nn.Module, include: Include) -> None:
    """``ValueError`` naming an ``include`` pattern (or predicate) that matches no module."""
    if include is None:
        return
    names = [n for n, _ in model.named_modules(remove_duplicate=False)]
    example = ", ".join(repr(n) for n in names[1:6])
    if callable(include):
        if not any(include(n) for n in names):
            raise ValueError(f"include predicate {include!r} matches no module of the model "
                             f"(module names look like {example})")
        return
    for pat in [include] if isinstance(include, str) else list(include):
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            raise ValueError(f"include pattern {pat!r} matches no module of the model "
                             f"(module names look like {example})")


def _respec(module: SurrogateMixin, spec: BackwardSpec,
            generator: torch.Generator | None) -> SurrogateMixin:
    module.set_spec(spec, generator)  # a new weight mode or generator redraws the state
    return module


def convert_with_report(
    model: nn.Module,
    spec: SpecLike | Callable[[str, nn.Module], SpecLike | None],
    include: Include = None,
    generator: torch.Generator | int | None = None,
) -> tuple[nn.Module, ConversionReport]:
    """Like :func:`convert`, and also return a :class:`ConversionReport`."""
    _check_include(model, include)
    first = next(iter(model.parameters()), None)
    generator = make_generator(generator, first.device if first is not None else "cpu")
    report = ConversionReport()
    seen: dict[int, tuple[str, nn.Module | None]] = {}

    def visit(module: nn.Module, name: str) -> nn.Module | None:
        """The replacement of ``module`` (``None``: keep it); recurses into containers."""
        factory = _respec if isinstance(module, SurrogateMixin) else factory_for(module)
        if factory is None:
            own = any(True for _ in module.parameters(recurse=False))
            if name and own and _matches(name, include):  # the root's own tensors: not a layer
                report.skipped[name] = f"{type(module).__name__} has no surrogate"
            walk(module, name)
            return None
        if not _matches(name, include):  # a layer's factory owns all its weights: no descent
            parts = _parts_matched(module, name, include)
            if parts:  # e.g. include="*.out_proj" inside an nn.MultiheadAttention
                report.skipped[name] = (
                    f"{type(module).__name__} converts as one layer and include matches only "
                    f"its part(s) {', '.join(parts)}: include {name!r} to convert it")
            return None
        layer_spec = spec(name, module) if callable(spec) else spec
        if layer_spec is None:
            return None
        new = factory(module, BackwardSpec.coerce(layer_spec), generator)
        if isinstance(new, str):
            report.skipped[name] = new
            return None
        report.converted.append(name)
        return new

    def walk(parent: nn.Module, prefix: str) -> None:
        for child_name, child in list(parent._modules.items()):  # named_children dedups
            if child is None:
                continue
            full = f"{prefix}.{child_name}" if prefix else child_name
            if id(child) in seen:  # the same module at a second site: same replacement
                first_name, new = seen[id(child)]
                if new is not None:
                    setattr(parent, child_name, new)
                    report.shared[full] = first_name
                continue
            new = visit(child, full)
            seen[id(child)] = (full, new)
            if new is not None and new is not child:
                setattr(parent, child_name, new)

    root = visit(model, "")
    return (model if root is None else root), report


def convert(
    model: nn.Module,
    spec: SpecLike | Callable[[str, nn.Module], SpecLike | None],
    include: Include = None,
    generator: torch.Generator | int | None = None,
    on_skip: str = "summary",
) -> nn.Module:
    """Swap every weight layer of ``model`` (in place) for its surrogate.

    Converted: ``nn.Linear`` and its subclasses that keep its forward, ``nn.Conv1d/2d/3d``
    (every ``padding``, ``padding_mode``, ``groups``), weight-parametrised versions of these,
    and every type added with :func:`register_surrogate`. ``spec``: a :class:`BackwardSpec`,
    its string or dict form, or ``f(name, module)`` returning one (or ``None`` to keep that
    layer). ``include``: glob pattern(s) on qualified names (``"layers.0"``, ``"encoder.*"``)
    or a predicate; one that matches no module is a ``ValueError``, one that matches only a part
    of a layer converted as a whole (``*.out_proj`` of an attention) reports it skipped.
    Weights are shared, not copied, so devices, dtypes and optimizer references survive; a
    module used at two places is converted once and stays shared. Layers with parameters that
    stay unchanged are reported in one warning: ``on_skip="summary"`` (count per type),
    ``"list"`` (every name and reason) or ``"ignore"``. ``generator`` (int seed or generator)
    is shared by every converted layer; converting a converted layer sets its new spec and,
    given a generator, redraws its fixed state. Returns the model (a new module when
    ``model`` is a bare layer).
    """
    check_choice(on_skip, ON_SKIP, "on_skip")
    model, report = convert_with_report(model, spec, include, generator)
    if report.skipped and on_skip != "ignore":
        if on_skip == "list":
            text = "left these layers unchanged: " + "; ".join(
                f"{n or '<root>'}: {why}" for n, why in report.skipped.items())
        else:
            text = report.summary()
        warnings.warn(f"convert {text} (on_skip='list' names every layer, 'ignore' silences "
                      f"this)", stacklevel=2)
    return model


@contextlib.contextmanager
def exact_backward(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every surrogate layer of ``model`` backpropagates exactly.

    Specs are restored afterwards; fixed feedback matrices are kept, never redrawn.
    """
    layers = [m for m in model.modules() if isinstance(m, SurrogateMixin)]
    specs = [m._spec for m in layers]
    try:
        for m in layers:
            m._spec = BackwardSpec()  # bypasses the setter: the state stays as it is
        yield model
    finally:
        for m, spec in zip(layers, specs):
            m._spec = spec
