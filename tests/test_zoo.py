"""Shapes and parameter counts of the in-repo model zoo."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradsurrogate import zoo


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet18_like_matches_torchvision_resnet18_parameter_count():
    model = zoo.resnet18_like(num_classes=1000)
    assert n_params(model) == 11_689_512
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # stem + 16 block convs + 3 downsample 1x1 convs, as torchvision's resnet18
    assert len(convs) == 20
    assert sum(m.kernel_size == (1, 1) and m.stride == (2, 2) for m in convs) == 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20


@pytest.mark.parametrize(("dims", "shape"), [(1, (2, 3, 32)), (2, (2, 3, 32, 32)),
                                             (3, (2, 3, 8, 8, 8))])
def test_resnet18_like_shapes(dims, shape):
    torch.manual_seed(0)
    model = zoo.resnet18_like(num_classes=5, width=4, blocks=(1, 1), dims=dims).eval()
    assert model(torch.randn(shape)).shape == (2, 5)
    cifar = zoo.resnet18_like(num_classes=5, width=4, blocks=(1, 1), dims=dims, stem="cifar")
    assert cifar(torch.randn(shape)).shape == (2, 5)
    # the cifar stem is a 3x3 stride-1 conv: 3 * 4 * 3**dims weights instead of 7**dims
    assert n_params(model) - n_params(cifar) == 3 * 4 * (7**dims - 3**dims)


def test_resnet18_like_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dims"):
        zoo.resnet18_like(dims=4)
    with pytest.raises(ValueError, match="blocks"):
        zoo.resnet18_like(blocks=())
    with pytest.raises(ValueError, match="stem"):
        zoo.resnet18_like(stem="tiny")


@pytest.mark.parametrize("pool", ["mean", "cls"])
@pytest.mark.parametrize("causal", [False, True])
def test_transformer_encoder_shapes_and_padding(pool, causal):
    torch.manual_seed(0)
    model = zoo.transformer_encoder(vocab=20, d_model=16, nhead=2, num_layers=2,
                                    dim_feedforward=32, num_classes=3, max_len=12, pool=pool,
                                    causal=causal).eval()
    tokens = torch.randint(0, 20, (4, 10))
    assert model(tokens).shape == (4, 3)
    layers = [m for m in model.modules() if isinstance(m, nn.TransformerEncoderLayer)]
    assert len(layers) == 2 and all(m.self_attn.batch_first for m in layers)
    # padding: the logits of a padded sequence do not depend on the padded tokens
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[:, 7:] = True
    other = tokens.clone()
    other[:, 7:] = (other[:, 7:] + 1) % 20
    torch.testing.assert_close(model(tokens, mask), model(other, mask))


def test_transformer_encoder_causal_mean_pool_prefix():
    # causal: the output at position k sees only tokens <= k, so changing the last token
    # changes the mean-pooled logits only through the last position
    torch.manual_seed(0)
    model = zoo.transformer_encoder(vocab=20, d_model=16, nhead=2, num_layers=1,
                                    dim_feedforward=32, num_classes=3, causal=True,
                                    pool="cls").eval()
    tokens = torch.randint(0, 20, (2, 6))
    other = tokens.clone()
    other[:, -1] = (other[:, -1] + 1) % 20
    # CLS sits at position 0 and, being causal, sees nothing but itself
    torch.testing.assert_close(model(tokens), model(other))
    with pytest.raises(ValueError, match="divisible"):
        zoo.transformer_encoder(d_model=10, nhead=3)
    with pytest.raises(ValueError, match="pool"):
        zoo.transformer_encoder(pool="max")


def test_transformer_decoder_layer_model_is_causal():
    torch.manual_seed(0)
    model = zoo.transformer_decoder_layer_model(vocab=16, d_model=16, nhead=2,
                                                dim_feedforward=32).eval()
    assert any(isinstance(m, nn.TransformerDecoderLayer) for m in model.modules())
    src, tgt = torch.randint(0, 16, (2, 7)), torch.randint(0, 16, (2, 5))
    out = model(src, tgt)
    assert out.shape == (2, 5, 16)
    changed = tgt.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 16
    torch.testing.assert_close(model(src, changed)[:, :-1], out[:, :-1])


def test_depthwise_separable_cnn():
    model = zoo.depthwise_separable_cnn(num_classes=7, widths=(8, 16)).eval()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)
    depthwise = [m for m in model.modules()
                 if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    assert [m.in_channels for m in depthwise] == [8, 8]
    # stem 3*8*9, dw 8*9 + pw 8*8, dw 8*9 + pw 8*16, 2 BN per block + stem BN, head 16*7+7
    bn = 2 * (8 + 8 + 8 + 8 + 16)
    assert n_params(model) == 3 * 8 * 9 + 8 * 9 + 64 + 8 * 9 + 128 + bn + 16 * 7 + 7


def test_mlp_and_cnn1d():
    model = zoo.mlp([4, 8, 3], "tanh")
    assert [type(m) for m in model] == [nn.Linear, nn.Tanh, nn.Linear]
    assert n_params(model) == 4 * 8 + 8 + 8 * 3 + 3
    assert zoo.mlp([4, 3], nn.GELU)(torch.randn(5, 4)).shape == (5, 3)
    with pytest.raises(ValueError, match="activation"):
        zoo.mlp([4, 3, 2], "swishy")
    with pytest.raises(ValueError, match="sizes"):
        zoo.mlp([4])
    net = zoo.cnn1d(num_classes=10, channels=(4, 8), kernel_size=5)
    assert net(torch.randn(3, 40)).shape == (3, 10)
    assert net(torch.randn(3, 1, 40)).shape == (3, 10)
    assert sum(isinstance(m, nn.Conv1d) for m in net.modules()) == 2
