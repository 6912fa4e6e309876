"""The benchmark MLP: ``depth`` hidden ``Linear + act`` layers of ``width``, then
``Linear(width, classes)`` (XOR: 2 inputs, GELU, 2 classes; other tasks pass their sizes).

Every linear layer (the output layer too) is a surrogate layer following the run's backward spec.
Weights are drawn from an explicit generator with ``nn.Linear``'s distribution
(``U(-1/√fan_in, 1/√fan_in)`` for weight and bias), so a model and an ensemble member built from
the same init seed hold the same numbers. :class:`EnsembleXorMLP` stacks ``e`` such models:
weights (e, o, i), input (e, n, i) → logits (e, n, classes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..backward import TARGETS, BackwardSpec, stack_modes
from ..layers import EnsembleSurrogateLinear, SurrogateLinear
from ..registry import lookup

__all__ = ["EnsembleXorMLP", "XorMLP", "activation", "init_params", "layer_names"]

IN_FEATURES, CLASSES = 2, 2


def layer_sizes(depth: int, width: int, in_features: int = IN_FEATURES,
                classes: int = CLASSES) -> list[tuple[int, int]]:
    """(in, out) of each linear layer: ``depth`` hidden layers and the output layer."""
    return [(in_features if k == 0 else width, width) for k in range(depth)] + [(width, classes)]


def layer_names(depth: int) -> list[str]:
    return [f"hidden.{k}" for k in range(depth)] + ["out"]


def init_params(depth: int, width: int, gen: torch.Generator, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None, in_features: int = IN_FEATURES,
                classes: int = CLASSES) -> list[tuple[Tensor, Tensor]]:
    """(weight (o, i), bias (o,)) per layer, ``U(-b, b)`` with ``b = 1/√i``, drawn on CPU."""
    dtype = dtype or torch.get_default_dtype()
    params = []
    for fan_in, fan_out in layer_sizes(depth, width, in_features, classes):
        bound = 1.0 / math.sqrt(fan_in)
        w = (2 * torch.rand(fan_out, fan_in, generator=gen, dtype=dtype) - 1) * bound
        b = (2 * torch.rand(fan_out, generator=gen, dtype=dtype) - 1) * bound
        params.append((w.to(device), b.to(device)))
    return params


def _set_params(layer: nn.Module, weight: Tensor, bias: Tensor, spec: BackwardSpec) -> None:
    layer.weight = nn.Parameter(weight)
    layer.bias = nn.Parameter(bias)
    layer.spec = spec  # after the real weights: draws a feedback matrix for weight='random'


def activation(name: str) -> nn.Module:
    """``gelu`` (XOR) or ``relu`` (the MNIST-1D authors' MLP)."""
    return lookup({"gelu": nn.GELU, "relu": nn.ReLU}, name, "activation")()


class XorMLP(nn.Module):
    """One model. Input ``x`` (n, i) → logits (n, classes); sizes from ``params``."""

    def __init__(self, params: Sequence[tuple[Tensor, Tensor]], spec: BackwardSpec | str,
                 generator: torch.Generator | None = None, act: str = "gelu"):
        super().__init__()
        spec = BackwardSpec.coerce(spec)
        layers = []
        for w, b in params:
            layer = SurrogateLinear(w.shape[1], w.shape[0], True, None, generator, device="meta")
            _set_params(layer, w.clone(), b.clone(), spec)
            layers.append(layer)
        self.hidden = nn.ModuleList(layers[:-1])
        self.out = layers[-1]
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden:
            x = self.act(layer(x))
        return self.out(x)


class EnsembleXorMLP(nn.Module):
    """``e`` models in one computation. Input (e, n, 2) or shared (n, 2) → logits (e, n, 2).

    ``params[e]`` and ``specs[e]`` are member ``e``'s init and backward spec; ``generators[e]``
    its backward-noise generator (the same object every layer of that member uses).
    """

    def __init__(self, params: Sequence[Sequence[tuple[Tensor, Tensor]]],
                 specs: Sequence[BackwardSpec | str],
                 generators: Sequence[torch.Generator] | None = None, act: str = "gelu"):
        super().__init__()
        if len(params) != len(specs) or (generators is not None and len(generators) != len(specs)):
            raise ValueError(f"need one init, spec and generator per member; got {len(params)} "
                             f"inits, {len(specs)} specs, "
                             f"{None if generators is None else len(generators)} generators")
        self.ensemble = len(specs)
        specs = [BackwardSpec.coerce(s) for s in specs]
        spec = BackwardSpec(**{t: stack_modes([getattr(s, t) for s in specs]) for t in TARGETS})
        gens = list(generators) if generators is not None else None
        layers = []
        for k in range(len(params[0])):
            w = torch.stack([p[k][0] for p in params])
            b = torch.stack([p[k][1] for p in params])
            layer = EnsembleSurrogateLinear(self.ensemble, w.shape[2], w.shape[1], True, None,
                                            gens, device="meta")
            _set_params(layer, w, b, spec)
            layers.append(layer)
        self.hidden = nn.ModuleList(layers[:-1])
        self.out = layers[-1]
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.expand(self.ensemble, *x.shape)
        for layer in self.hidden:
            x = self.act(layer(x))
        return self.out(x)
