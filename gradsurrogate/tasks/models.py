"""Models of the non-MLP tasks, built from torch modules and converted to surrogate layers.

Weights are torch's default inits drawn under the config's init seed (``torch.random.fork_rng``:
the global RNG is left untouched), then :func:`gradsurrogate.convert` swaps every layer it
supports for its surrogate following the run's spec (all sharing the run's noise generator).

* :class:`Mnist1dCNN` — the MNIST-1D authors' CNN: ``Conv1d(1, w, 5, stride 2, padding 1)``,
  then ``depth - 1`` × ``Conv1d(w, w, 3, stride 2, padding 1)``, ReLU after each, flatten,
  ``Linear(w · L', 10)`` (``w = 25``, depth 3: lengths 40 → 19 → 10 → 5, 125 features).
  Input (n, 40) → logits (n, 10).
  :class:`EnsembleMnist1dCNN` stacks ``e`` of them (one grouped convolution per layer) for
  vectorised grids.
* :class:`SortTransformer` — token + learned position embeddings (``width``), ``depth``
  ``nn.TransformerEncoderLayer`` (4 heads, feed-forward ``2·width``, no dropout, batch first),
  ``Linear(width, 10)`` per token. Input (n, 8) int64 → logits (n, 8, 10).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..backward import TARGETS, BackwardSpec, stack_modes
from ..layers import EnsembleSurrogateConv1d, EnsembleSurrogateLinear
from ..xor.data import derive_seed
from .data import SORT_LENGTH, SORT_VOCAB

if TYPE_CHECKING:
    from ..xor.config import XorConfig

__all__ = ["EnsembleMnist1dCNN", "Mnist1dCNN", "SortTransformer", "build_cnn",
           "build_cnn_ensemble", "build_transformer", "cnn_example_floats"]


class Mnist1dCNN(nn.Module):
    """Input (n, length) → logits (n, classes); see the module docstring."""

    def __init__(self, depth: int = 3, channels: int = 25, length: int = 40,
                 classes: int = 10):
        super().__init__()
        convs, c_in, n = [], 1, length
        for k in range(depth):
            kernel = 5 if k == 0 else 3
            convs.append(nn.Conv1d(c_in, channels, kernel, stride=2, padding=1))
            n = (n + 2 - kernel) // 2 + 1
            if n < 1:
                raise ValueError(f"depth {depth} shrinks length {length} below 1 after "
                                 f"{k + 1} stride-2 convs; use depth <= {k}")
            c_in = channels
        self.convs = nn.ModuleList(convs)
        self.linear = nn.Linear(channels * n, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = x.reshape(-1, 1, x.shape[-1])
        for conv in self.convs:
            h = torch.relu(conv(h))
        return self.linear(h.flatten(1))


class EnsembleMnist1dCNN(nn.Module):
    """``e`` :class:`Mnist1dCNN` in one computation: input (e, n, length) or shared (n, length)
    → logits (e, n, classes). ``members[k]`` gives member ``k``'s weights (copied), ``specs[k]``
    its backward and ``generators[k]`` its noise: the numbers of ``members[k]`` converted alone
    with that generator (feedback matrices drawn in the same layer order)."""

    def __init__(self, members: Sequence[Mnist1dCNN], specs: Sequence[BackwardSpec | str],
                 generators: Sequence[torch.Generator] | None = None):
        super().__init__()
        if not members or len(members) != len(specs):
            raise ValueError(f"need one spec per member; got {len(members)} members and "
                             f"{len(specs)} specs")
        self.ensemble = len(members)
        coerced = [BackwardSpec.coerce(s) for s in specs]
        spec = BackwardSpec(**{t: stack_modes([getattr(s, t) for s in coerced])
                               for t in TARGETS})
        gens = list(generators) if generators is not None else None
        self.convs = nn.ModuleList(
            EnsembleSurrogateConv1d.from_convs([m.convs[k] for m in members], spec, gens)
            for k in range(len(members[0].convs)))
        self.linear = EnsembleSurrogateLinear.from_linears([m.linear for m in members], spec,
                                                           gens)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.expand(self.ensemble, *x.shape)
        h = x.reshape(self.ensemble, -1, 1, x.shape[-1])
        for conv in self.convs:
            h = torch.relu(conv(h))
        return self.linear(h.flatten(2))


class SortTransformer(nn.Module):
    """Input tokens (n, L) → logits (n, L, vocab); see the module docstring."""

    def __init__(self, depth: int = 2, width: int = 32, vocab: int = SORT_VOCAB,
                 length: int = SORT_LENGTH, heads: int = 4):
        super().__init__()
        if width % heads:
            raise ValueError(f"the sort-transformer width must be a multiple of {heads} "
                             f"(attention heads); got {width}")
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0,
                                           batch_first=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "enable_nested_tensor is True, but ..."
            self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(self.embed(x) + self.pos))


def _init_model(cls: type[nn.Module], config: XorConfig, dtype: torch.dtype,
                device: torch.device) -> nn.Module:
    """``cls(depth, width)`` initialised from the config's init seed (the global RNG is left
    as it was), moved to ``device``/``dtype``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.init_seed, "init"))
        model = cls(config.depth, config.width)
    return model.to(device=device, dtype=dtype)


def _build(cls: type[nn.Module], config: XorConfig, noise: torch.Generator, dtype: torch.dtype,
           device: torch.device) -> nn.Module:
    """:func:`_init_model` converted with the config's spec; layers without a surrogate keep
    the exact backward (not warned about)."""
    from ..convert import convert

    model = _init_model(cls, config, dtype, device)
    return convert(model, config.backward_spec(), generator=noise, on_skip="ignore")


def build_cnn(config: XorConfig, noise: torch.Generator, dtype: torch.dtype,
              device: torch.device) -> nn.Module:
    """:class:`Mnist1dCNN` (``depth`` convs of ``width`` channels) with surrogate layers."""
    return _build(Mnist1dCNN, config, noise, dtype, device)


def build_cnn_ensemble(configs: Sequence[XorConfig], generators: Sequence[torch.Generator],
                       dtype: torch.dtype, device: torch.device) -> EnsembleMnist1dCNN:
    """The CNNs of ``configs`` (one group: same depth and width) as one ensemble."""
    members = [_init_model(Mnist1dCNN, c, dtype, device) for c in configs]
    return EnsembleMnist1dCNN(members, [c.backward_spec() for c in configs], generators)


def cnn_example_floats(config: XorConfig, length: int = 40) -> int:
    """Floats of the CNN's widest activation per example: the first conv's output."""
    return config.width * ((length + 2 - 5) // 2 + 1)


def build_transformer(config: XorConfig, noise: torch.Generator, dtype: torch.dtype,
                      device: torch.device) -> nn.Module:
    """:class:`SortTransformer` (``depth`` layers of ``width``) with surrogate layers."""
    return _build(SortTransformer, config, noise, dtype, device)
