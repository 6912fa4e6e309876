"""Small reference models built in the repo (no torchvision download), for tests and benchmarks.

Every builder returns a plain ``nn.Module`` made of stock torch layers, so ``convert`` sees the
same modules a user's model has. Shapes use ``n`` batch, ``c`` channels, ``t`` tokens.

* :func:`resnet18_like` — BasicBlock ResNet; at ``width=64, blocks=(2, 2, 2, 2)`` and 1000
  classes it has torchvision ``resnet18``'s layer shapes and 11,689,512 parameters;
* :func:`transformer_encoder` — token + learned position embeddings, ``nn.TransformerEncoder``
  (``batch_first``), mean-pool or CLS head;
* :func:`transformer_decoder_layer_model` — one encoder layer + one ``nn.TransformerDecoderLayer``
  (encoder-decoder with a causal target mask);
* :func:`depthwise_separable_cnn` — MobileNet-style depthwise + pointwise blocks;
* :func:`mlp`, :func:`cnn1d`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .registry import check_choice, check_int, lookup

__all__ = ["ACTIVATIONS", "BasicBlock", "Seq2Seq", "TokenClassifier", "cnn1d",
           "depthwise_separable_cnn", "mlp", "resnet18_like", "transformer_decoder_layer_model",
           "transformer_encoder"]

#: activation names accepted by :func:`mlp` and :func:`cnn1d`
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
    "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "identity": nn.Identity,
}


def _act(activation: str | Callable[[], nn.Module]) -> nn.Module:
    return activation() if callable(activation) else lookup(ACTIVATIONS, activation, "activation")()


def _layers(dims: int) -> tuple[type, type, type, type]:
    check_choice(dims, (1, 2, 3), "dims")
    return ({1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims],
            {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims],
            {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims],
            {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[dims])


class BasicBlock(nn.Module):
    """ResNet BasicBlock: ``relu(bn(conv3(relu(bn(conv3(x))))) + shortcut(x))``.

    ``x``: (n, c_in, *spatial) -> (n, c_out, *spatial / stride). The shortcut is a 1x1 conv +
    BatchNorm when the stride or the channel count changes, else the identity.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dims: int = 2) -> None:
        super().__init__()
        conv, bn, _, _ = _layers(dims)
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = bn(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False),
                                            bn(c_out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def resnet18_like(num_classes: int = 10, in_channels: int = 3, width: int = 64,
                  blocks: Sequence[int] = (2, 2, 2, 2), dims: int = 2,
                  stem: str = "imagenet") -> nn.Sequential:
    """A BasicBlock ResNet; the defaults (with ``num_classes=1000``) are torchvision's resnet18.

    ``x``: (n, in_channels, *spatial) with ``dims`` spatial axes -> logits (n, num_classes).
    Stage ``k`` has ``width * 2**k`` channels and ``blocks[k]`` blocks; every stage after the
    first starts with a stride-2 block whose shortcut is a 1x1 conv + BatchNorm.
    ``stem="imagenet"``: 7x7 stride-2 conv + 3x3 stride-2 max-pool (input /4, e.g. 64x64 -> 16x16);
    ``stem="cifar"``: 3x3 stride-1 conv, no pool (for 32x32 inputs; different parameter count).
    """
    check_int(num_classes, "num_classes", low=1)
    check_int(in_channels, "in_channels", low=1)
    check_int(width, "width", low=1)
    if not blocks or any(not isinstance(b, int) or b < 1 for b in blocks):
        raise ValueError(f"blocks must be a non-empty sequence of positive ints; got {blocks!r}")
    conv, bn, pool, avg = _layers(dims)
    check_choice(stem, ("imagenet", "cifar"), "stem")
    if stem == "imagenet":
        layers: list[nn.Module] = [conv(in_channels, width, 7, stride=2, padding=3, bias=False),
                                   bn(width), nn.ReLU(inplace=True),
                                   pool(kernel_size=3, stride=2, padding=1)]
    else:
        layers = [conv(in_channels, width, 3, stride=1, padding=1, bias=False), bn(width),
                  nn.ReLU(inplace=True)]
    c_in = width
    for k, n_blocks in enumerate(blocks):
        c_out = width * 2 ** k
        stage = [BasicBlock(c_in, c_out, stride=1 if k == 0 else 2, dims=dims)]
        stage += [BasicBlock(c_out, c_out, dims=dims) for _ in range(n_blocks - 1)]
        layers.append(nn.Sequential(*stage))
        c_in = c_out
    layers += [avg(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


class TokenClassifier(nn.Module):
    """Token + learned position embeddings -> ``nn.TransformerEncoder`` -> pooled linear head.

    ``tokens``: (n, t) int64 with ``t <= max_len``; ``padding_mask``: optional (n, t) bool, True
    at padding. Returns logits (n, num_classes). ``pool="mean"`` averages the non-padded
    positions; ``pool="cls"`` prepends a learned CLS token and reads its output.
    ``causal=True`` applies a causal (upper-triangular -inf) attention mask.
    """

    def __init__(self, vocab: int, d_model: int, nhead: int, num_layers: int,
                 dim_feedforward: int, num_classes: int, max_len: int, dropout: float,
                 causal: bool, pool: str) -> None:
        super().__init__()
        self.pool = check_choice(pool, ("mean", "cls"), "pool")
        self.causal = causal
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(1, max_len + (pool == "cls"), d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if pool == "cls" else None
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        x = self.embed(tokens)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
            if padding_mask is not None:
                padding_mask = torch.cat([padding_mask.new_zeros(x.shape[0], 1), padding_mask], 1)
        x = x + self.pos[:, : x.shape[1]]
        t = x.shape[1]
        mask = (torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
                if self.causal else None)
        x = self.norm(self.encoder(x, mask=mask, src_key_padding_mask=padding_mask,
                                   is_causal=self.causal if mask is not None else False))
        if self.cls is not None:
            return self.head(x[:, 0])
        if padding_mask is None:
            return self.head(x.mean(1))
        keep = (~padding_mask).unsqueeze(-1).to(x.dtype)
        return self.head((x * keep).sum(1) / keep.sum(1).clamp_min(1.0))


def transformer_encoder(vocab: int = 64, d_model: int = 64, nhead: int = 4, num_layers: int = 4,
                        dim_feedforward: int = 128, num_classes: int = 10, max_len: int = 128,
                        dropout: float = 0.1, causal: bool = False,
                        pool: str = "mean") -> TokenClassifier:
    """A Transformer encoder classifier (see :class:`TokenClassifier`).

    ``tokens`` (n, t) int64 -> logits (n, num_classes); ``nn.TransformerEncoderLayer`` with
    ``batch_first=True`` (post-norm, ReLU feed-forward, torch's defaults).
    """
    for name, v in (("vocab", vocab), ("d_model", d_model), ("nhead", nhead),
                    ("num_layers", num_layers), ("dim_feedforward", dim_feedforward),
                    ("num_classes", num_classes), ("max_len", max_len)):
        check_int(v, name, low=1)
    if d_model % nhead:
        raise ValueError(f"d_model={d_model} must be divisible by nhead={nhead}")
    return TokenClassifier(vocab, d_model, nhead, num_layers, dim_feedforward, num_classes,
                           max_len, dropout, causal, pool)


class Seq2Seq(nn.Module):
    """One ``nn.TransformerEncoderLayer`` over the source, one ``nn.TransformerDecoderLayer``.

    ``src``: (n, s) int64, ``tgt``: (n, t) int64 -> next-token logits (n, t, vocab). The target
    self-attention is causal; ``src_padding_mask`` (n, s) bool (True = padding) is optional.
    """

    def __init__(self, vocab: int, d_model: int, nhead: int, dim_feedforward: int,
                 max_len: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(1, max_len, d_model))
        self.encoder = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                                  batch_first=True)
        self.decoder = nn.TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout,
                                                  batch_first=True)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, src: Tensor, tgt: Tensor, src_padding_mask: Tensor | None = None) -> Tensor:
        memory = self.encoder(self.embed(src) + self.pos[:, : src.shape[1]],
                              src_key_padding_mask=src_padding_mask)
        y = self.embed(tgt) + self.pos[:, : tgt.shape[1]]
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1], device=y.device,
                                                              dtype=y.dtype)
        y = self.decoder(y, memory, tgt_mask=mask, tgt_is_causal=True,
                         memory_key_padding_mask=src_padding_mask)
        return self.head(y)


def transformer_decoder_layer_model(vocab: int = 32, d_model: int = 32, nhead: int = 4,
                                    dim_feedforward: int = 64, max_len: int = 64,
                                    dropout: float = 0.1) -> Seq2Seq:
    """A small encoder-decoder (see :class:`Seq2Seq`) covering ``nn.TransformerDecoderLayer``."""
    for name, v in (("vocab", vocab), ("d_model", d_model), ("nhead", nhead),
                    ("dim_feedforward", dim_feedforward), ("max_len", max_len)):
        check_int(v, name, low=1)
    if d_model % nhead:
        raise ValueError(f"d_model={d_model} must be divisible by nhead={nhead}")
    return Seq2Seq(vocab, d_model, nhead, dim_feedforward, max_len, dropout)


def depthwise_separable_cnn(num_classes: int = 10, in_channels: int = 3,
                            widths: Sequence[int] = (32, 64, 128), dims: int = 2) -> nn.Sequential:
    """MobileNet-style CNN: stem conv, then per width a depthwise + pointwise block.

    ``x``: (n, in_channels, *spatial) -> (n, num_classes). Stem: 3x3 stride-2 conv to
    ``widths[0]``; block ``k``: depthwise 3x3 conv (``groups=c``, stride 2 for ``k > 0``) + BN +
    ReLU, then pointwise 1x1 conv to ``widths[k]`` + BN + ReLU; global average pool + linear.
    """
    check_int(num_classes, "num_classes", low=1)
    check_int(in_channels, "in_channels", low=1)
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be a non-empty sequence of positive ints; got {widths!r}")
    conv, bn, _, avg = _layers(dims)
    c = widths[0]
    layers: list[nn.Module] = [conv(in_channels, c, 3, stride=2, padding=1, bias=False), bn(c),
                               nn.ReLU(inplace=True)]
    for k, w in enumerate(widths):
        layers += [conv(c, c, 3, stride=1 if k == 0 else 2, padding=1, groups=c, bias=False),
                   bn(c), nn.ReLU(inplace=True),
                   conv(c, w, 1, bias=False), bn(w), nn.ReLU(inplace=True)]
        c = w
    layers += [avg(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


def mlp(sizes: Sequence[int], activation: str | Callable[[], nn.Module] = "relu",
        bias: bool = True) -> nn.Sequential:
    """``Linear(sizes[0], sizes[1]) - act - ... - Linear(sizes[-2], sizes[-1])`` (no final act).

    ``x``: (n, sizes[0]) -> (n, sizes[-1]); ``activation`` is a name in :data:`ACTIVATIONS` or a
    module class / zero-argument factory.
    """
    if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"sizes must list at least two positive ints; got {sizes!r}")
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(itertools.pairwise(sizes)):
        if k:
            layers.append(_act(activation))
        layers.append(nn.Linear(a, b, bias=bias))
    return nn.Sequential(*layers)


class _AddChannel(nn.Module):
    """(n, length) -> (n, 1, length); (n, c, length) passes through."""

    def forward(self, x: Tensor) -> Tensor:
        return x.unsqueeze(1) if x.dim() == 2 else x


def cnn1d(num_classes: int = 10, in_channels: int = 1, channels: Sequence[int] = (16, 32),
          kernel_size: int = 5,
          activation: str | Callable[[], nn.Module] = "relu") -> nn.Sequential:
    """A 1-d CNN (e.g. for MNIST-1D): per channel count a Conv1d (same padding) + act + max-pool 2.

    ``x``: (n, in_channels, length) or (n, length) when ``in_channels == 1`` -> (n, num_classes);
    global average pool + linear head, so any ``length >= 2**len(channels)`` works.
    """
    check_int(num_classes, "num_classes", low=1)
    check_int(in_channels, "in_channels", low=1)
    check_int(kernel_size, "kernel_size", low=1)
    if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
        raise ValueError(f"channels must be a non-empty sequence of positive ints; "
                         f"got {channels!r}")
    layers: list[nn.Module] = [_AddChannel()]
    c = in_channels
    for w in channels:
        layers += [nn.Conv1d(c, w, kernel_size, padding=kernel_size // 2), _act(activation),
                   nn.MaxPool1d(2)]
        c = w
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)
