"""The architecture-neutral blocks and checks that plugins share (backbones.layers, backbones.validation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from backbones.layers import ConvNormActivation, FrozenBatchNorm2d, LearnableAffine, attend
from backbones.validation import check_choice, check_rotary_heads, check_stem_channels


def _randomized(unit: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in [*unit.parameters(), *unit.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return unit


@pytest.mark.parametrize("frozen", [False, True], ids=["batch-norm", "frozen-norm"])
def test_conv_norm_activation_folds_its_norm(frozen: bool) -> None:
    unit = ConvNormActivation(3, 8, 3, 2, activation="hardswish", affine=True)
    if frozen:
        unit.normalization = FrozenBatchNorm2d(8)
    _randomized(unit).eval()
    keys = sorted(unit.state_dict())
    pixels = torch.randn(2, 3, 17, 15, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = unit(pixels)
        unit.reparameterize()
        after = unit(pixels)
    assert before.shape == (2, 8, 9, 8)
    assert unit.normalization is None and unit.convolution.bias is not None
    assert (after - before).abs().max().item() <= 1e-5 * max(1.0, before.abs().max().item())
    assert {key.split(".")[0] for key in keys} == {"convolution", "normalization", "lab"}
    unit.reparameterize()  # nothing left to fold: no change
    with torch.no_grad():
        assert torch.equal(unit(pixels), after)


def test_conv_norm_activation_defaults() -> None:
    unit = ConvNormActivation(4, 6, 3, dilation=2)
    assert unit.convolution.padding == (2, 2) and unit.convolution.bias is None
    assert unit.activation is None and unit.lab is None, "no activation: no affine either"
    assert ConvNormActivation(4, 6, 1, activation="relu", affine=False).lab is None
    assert ConvNormActivation(4, 6, 1, activation="relu").activation.inplace is True  # type: ignore[union-attr]


def test_learnable_affine_parameters_or_buffers() -> None:
    affine = LearnableAffine()
    with torch.no_grad():
        affine.scale.fill_(2.0)
        affine.bias.fill_(-1.0)
    assert torch.equal(affine(torch.tensor([0.0, 1.5])), torch.tensor([-1.0, 2.0]))
    assert sorted(name for name, _ in affine.named_parameters()) == ["bias", "scale"]
    frozen = LearnableAffine(trainable=False)
    assert list(frozen.parameters()) == [] and sorted(frozen.state_dict()) == ["bias", "scale"]


def test_attend_matches_softmax_attention() -> None:
    generator = torch.Generator().manual_seed(2)
    query, key, value = (torch.randn(2, 3, 5, 4, generator=generator) for _ in range(3))
    expected_weights = (query @ key.transpose(-2, -1) / 2.0).softmax(-1)
    context, weights = attend(query, key, value, dropout=0.0, training=False, need_weights=True)
    assert weights is not None and (weights - expected_weights).abs().max().item() <= 1e-6
    assert (context - expected_weights @ value).abs().max().item() <= 1e-5
    fast, none = attend(query, key, value, dropout=0.0, training=False, need_weights=False)
    assert none is None and (fast - context).abs().max().item() <= 1e-5


def test_shared_config_checks_name_the_field_and_the_fix() -> None:
    assert check_choice("layer_type", "basic", ["basic", "bottleneck"], "hint") == "basic"
    with pytest.raises(ValueError, match=r"^layer_type 'wide' is not supported; set layer_type to one of \['basic'"):
        check_choice("layer_type", "wide", ["basic", "bottleneck"], "'basic' for ResNet-18/34")
    check_stem_channels([3, 16, 32], 3)
    with pytest.raises(ValueError, match=r"stem_channels must be \[input, middle, output\] .* got \[3, 16\]"):
        check_stem_channels([3, 16], 3)
    with pytest.raises(ValueError, match=r"stem_channels\[0\]=3 must equal num_channels=1"):
        check_stem_channels([3, 16, 32], 1)
    check_rotary_heads(32, 4)
    with pytest.raises(ValueError, match=r"hidden_size / num_attention_heads = 24 / 4 = 6 must be a multiple of 4"):
        check_rotary_heads(24, 4)
