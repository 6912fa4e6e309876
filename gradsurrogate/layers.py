"""Drop-in surrogate layers and :func:`convert`.

:class:`SurrogateLinear` and :class:`SurrogateConv2d` subclass ``nn.Linear`` / ``nn.Conv2d``:
same parameters, same ``state_dict`` keys, same initialisation and forward numbers; only the
backward follows their ``spec``. :class:`EnsembleSurrogateLinear` stacks ``e`` linear layers
into one batched computation (weights (e, o, i)) for vectorised sweeps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import math
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from .backward import BackwardSpec, FeedbackMode, Generators
from .functional import Recorder, surrogate_conv2d, surrogate_linear
from .registry import check_int

__all__ = [
    "ConversionReport",
    "EnsembleSurrogateLinear",
    "SurrogateConv2d",
    "SurrogateLinear",
    "SurrogateMixin",
    "convert",
    "convert_with_report",
    "exact_backward",
]

SpecLike = BackwardSpec | str | dict


def make_generator(seed: int | torch.Generator | None,
                   device: torch.device | str = "cpu") -> torch.Generator | None:
    """``None`` → global RNG; an int → a fresh seeded generator; a generator is kept."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"generator must be None, an int seed or a torch.Generator; got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


class SurrogateMixin(nn.Module):
    """Shared state of surrogate layers: ``spec``, ``generator``, fixed ``feedback``, recorder.

    ``feedback`` is a non-persistent buffer (the ``state_dict`` stays that of the torch layer);
    it is drawn once from ``generator`` when a spec with ``weight='random'`` is set.
    """

    weight: Tensor
    feedback: Tensor | None
    #: dim 0 of ``weight`` indexes ensemble members
    is_ensemble: bool = False

    def _init_surrogate(self, spec: SpecLike | None, generator: Generators | int) -> None:
        if isinstance(generator, (list, tuple)):
            if not all(isinstance(g, torch.Generator) for g in generator):
                raise ValueError(
                    f"a generator sequence must hold torch.Generators; got {generator!r}"
                )
            self.generator: Generators = list(generator)
        else:  # an int seed makes a generator on the weight's device (CPU while on "meta")
            device = self.weight.device if self.weight.device.type != "meta" else "cpu"
            self.generator = make_generator(generator, device)
        self.register_buffer("feedback", None, persistent=False)
        self.recorder: Recorder | None = None
        self.spec = spec  # type: ignore[assignment]

    @property
    def spec(self) -> BackwardSpec:
        return self._spec

    @spec.setter
    def spec(self, value: SpecLike | None) -> None:
        spec = BackwardSpec.coerce(value)
        self._spec = spec
        if isinstance(spec.weight, FeedbackMode) and (
            self.feedback is None or self.feedback.shape != self.weight.shape
        ):
            self.feedback = spec.weight.init_state(self.weight, self.generator, self.is_ensemble)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, spec={self.spec}"


class SurrogateLinear(SurrogateMixin, nn.Linear):
    """``nn.Linear`` whose backward follows ``spec``. Input (*, i) → output (*, o)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 spec: SpecLike | None = None, generator: torch.Generator | int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        self._init_surrogate(spec, generator)

    def forward(self, x: Tensor) -> Tensor:
        return surrogate_linear(x, self.weight, self.bias, self.spec, self.generator,
                                self.feedback, self.recorder)


class SurrogateConv2d(SurrogateMixin, nn.Conv2d):
    """``nn.Conv2d`` (zero padding, integer padding) whose backward follows ``spec``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 spec: SpecLike | None = None, generator: torch.Generator | int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        if isinstance(padding, str):
            raise ValueError(f"SurrogateConv2d needs integer padding; got {padding!r}")
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                           dilation, groups, bias, device=device, dtype=dtype)
        self._init_surrogate(spec, generator)

    def forward(self, x: Tensor) -> Tensor:
        return surrogate_conv2d(x, self.weight, self.bias, self.spec, self.generator,
                                self.feedback, self.recorder, self.stride, self.padding,
                                self.dilation, self.groups)


class EnsembleSurrogateLinear(SurrogateMixin):
    """``e`` independent linear layers in one batched computation.

    ``weight`` (e, o, i), ``bias`` (e, o); input (e, *, i) → output (e, *, o). Member ``k`` is
    initialised like ``nn.Linear`` and, given one generator per member, draws its backward noise
    from ``generator[k]`` — the same numbers as ``e`` separate :class:`SurrogateLinear` layers
    seeded alike. Flip/blend parameters may be (e,) tensors (one value per member).
    """

    is_ensemble = True

    def __init__(self, ensemble: int, in_features: int, out_features: int, bias: bool = True,
                 spec: SpecLike | None = None, generator: Generators | int = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        check_int(ensemble, "ensemble", low=1)
        check_int(in_features, "in_features")
        check_int(out_features, "out_features")
        if isinstance(generator, Sequence) and len(generator) != ensemble:
            raise ValueError(f"need one generator per member ({ensemble}); got {len(generator)}")
        self.in_features, self.out_features, self.ensemble = in_features, out_features, ensemble
        kw = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(ensemble, out_features, in_features, **kw))
        self.bias = nn.Parameter(torch.empty(ensemble, out_features, **kw)) if bias else None
        self.reset_parameters()
        self._init_surrogate(spec, generator)

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.in_features)  # nn.Linear's kaiming_uniform(a=√5) bound
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linears(cls, layers: Sequence[nn.Linear], spec: SpecLike | None = None,
                     generator: Generators | int = None) -> EnsembleSurrogateLinear:
        """Stack the parameters of ``layers`` (copied) into one ensemble layer."""
        if not layers:
            raise ValueError("from_linears needs at least one nn.Linear layer; got none")
        first = layers[0]
        out = cls(len(layers), first.in_features, first.out_features, first.bias is not None,
                  spec, generator, first.weight.device, first.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(torch.stack([m.weight for m in layers]))
            if out.bias is not None:
                out.bias.copy_(torch.stack([m.bias for m in layers]))
        return out

    def forward(self, x: Tensor) -> Tensor:
        return surrogate_linear(x, self.weight, self.bias, self.spec, self.generator,
                                self.feedback, self.recorder)

    def extra_repr(self) -> str:
        return (f"ensemble={self.ensemble}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}, spec={self.spec}")


@dataclasses.dataclass
class ConversionReport:
    """Names of the layers ``convert`` swapped, and of the parameterised layers it left alone."""

    converted: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)


def _matches(name: str, include: str | Sequence[str] | Callable[[str], bool] | None) -> bool:
    """True when ``name`` or one of its parents (``a`` and ``a.b`` for ``a.b.c``) matches."""
    if include is None:
        return True
    parts = name.split(".")
    prefixes = [".".join(parts[: k + 1]) for k in range(len(parts))]
    if callable(include):
        return any(bool(include(p)) for p in prefixes)
    patterns = [include] if isinstance(include, str) else list(include)
    return any(fnmatch.fnmatchcase(p, pat) for p in prefixes for pat in patterns)


def _surrogate_of(module: nn.Module, spec: BackwardSpec,
                  generator: torch.Generator | None) -> nn.Module | str:
    """A surrogate copy of ``module`` sharing its parameters, or why there is none."""
    if isinstance(module, SurrogateMixin):
        module.spec = spec
        return module
    # Built on the meta device (no RNG draws, no memory), then given the module's own tensors.
    if type(module) is nn.Linear:
        new = SurrogateLinear(module.in_features, module.out_features, module.bias is not None,
                              None, generator, device="meta")
    elif type(module) is nn.Conv2d:
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return f"Conv2d with padding={module.padding!r}, padding_mode={module.padding_mode!r}"
        new = SurrogateConv2d(module.in_channels, module.out_channels, module.kernel_size,
                              module.stride, module.padding, module.dilation, module.groups,
                              module.bias is not None, None, generator, device="meta")
    else:
        return f"{type(module).__name__} has no surrogate (only nn.Linear and nn.Conv2d)"
    new.weight, new.bias = module.weight, module.bias  # shared: same tensors, devices, dtypes
    new.spec = spec  # draws a random feedback matrix (if any) like the real weight
    new.train(module.training)
    return new


def convert_with_report(
    model: nn.Module,
    spec: SpecLike | Callable[[str, nn.Module], SpecLike | None],
    include: str | Sequence[str] | Callable[[str], bool] | None = None,
    generator: torch.Generator | int | None = None,
) -> tuple[nn.Module, ConversionReport]:
    """Like :func:`convert`, and also return a :class:`ConversionReport`."""
    first = next(iter(model.parameters()), None)
    generator = make_generator(generator, first.device if first is not None else "cpu")
    report = ConversionReport()
    if isinstance(model, (nn.Linear, nn.Conv2d)) and _matches("", include):
        layer_spec = spec("", model) if callable(spec) else spec
        new = _surrogate_of(model, BackwardSpec.coerce(layer_spec), generator)
        if isinstance(new, str):
            report.skipped[""] = new
            return model, report
        report.converted.append("")
        return new, report
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if not _matches(full, include):
                continue
            is_layer = isinstance(child, (nn.Linear, nn.Conv2d, SurrogateMixin))
            if not is_layer:
                if any(True for _ in child.parameters(recurse=False)):
                    report.skipped[full] = f"{type(child).__name__} has no surrogate"
                continue
            layer_spec = spec(full, child) if callable(spec) else spec
            if layer_spec is None:
                continue
            new = _surrogate_of(child, BackwardSpec.coerce(layer_spec), generator)
            if isinstance(new, str):
                report.skipped[full] = new
                continue
            setattr(module, child_name, new)
            report.converted.append(full)
    return model, report


def convert(
    model: nn.Module,
    spec: SpecLike | Callable[[str, nn.Module], SpecLike | None],
    include: str | Sequence[str] | Callable[[str], bool] | None = None,
    generator: torch.Generator | int | None = None,
) -> nn.Module:
    """Swap every ``nn.Linear`` / ``nn.Conv2d`` of ``model`` (in place) for its surrogate.

    ``spec``: a :class:`BackwardSpec`, its string or dict form, or ``f(name, module)`` returning
    one (or ``None`` to keep that layer). ``include``: glob pattern(s) on qualified layer names
    (``"layers.0"``, ``"encoder.*"``) or a predicate. Weights are shared, not copied, so devices,
    dtypes and optimizer references survive. Parameterised layers without a surrogate are left
    alone and listed in a warning (use :func:`convert_with_report` to get the list). Returns the
    model (a new module only when ``model`` itself is a bare layer).
    """
    model, report = convert_with_report(model, spec, include, generator)
    if report.skipped:
        listing = "; ".join(f"{n or '<root>'}: {why}" for n, why in report.skipped.items())
        warnings.warn(f"convert left these layers unchanged: {listing}", stacklevel=2)
    return model


@contextlib.contextmanager
def exact_backward(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every surrogate layer of ``model`` backpropagates exactly.

    Specs are restored afterwards; fixed feedback matrices are kept, not redrawn.
    """
    layers = [m for m in model.modules() if isinstance(m, SurrogateMixin)]
    specs = [m.spec for m in layers]
    try:
        for m in layers:
            m.spec = BackwardSpec()
        yield model
    finally:
        for m, spec in zip(layers, specs):
            m.spec = spec
