"""Inference reparameterisation of the three PP-LCNet versions: folded outputs equal unfolded ones, the folded
model exports (torch.export with dynamic H x W, ONNX), and it refuses to train or be saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from backbones import AutoBackbone, Backbone, BackboneConfig, ReparameterizedError
from backbones.layers import FrozenBatchNorm2d
from backbones.testing import assert_exports_with_dynamic_size, assert_parity, randomize_weights_
from backbones_pp_lcnet import PPLCNetConfig, PPLCNetV3Config, PPLCNetV4Config
from backbones_pp_lcnet.blocks import LearnableRepLayer

BLOCKS = [
    [[3, 8, 8, 1, False]],
    [[3, 8, 16, 2, False]],
    [[3, 16, 16, 2, False], [5, 16, 16, 1, True]],
    [[3, 16, 24, 2, True]],
    [[5, 24, 32, 2, True], [3, 32, 32, 1, False]],
]
V4_BLOCKS = [
    [[3, 16, 16, 1, True]],
    [[3, 16, 24, 2, False], [3, 24, 24, 1, False]],
    [[5, 24, 32, 2, False], [3, 32, 32, 1, True]],
    [[3, 32, 40, 2, False]],
]
CONFIGS: dict[str, BackboneConfig] = {
    "pp_lcnet": PPLCNetConfig(stem_channels=8, block_configs=BLOCKS),
    "pp_lcnet_v3": PPLCNetV3Config(stem_channels=8, block_configs=BLOCKS, conv_symmetric_num=3),
    "pp_lcnet_v4": PPLCNetV4Config(stem_channels=[3, 8, 16], block_configs=V4_BLOCKS, use_learnable_affine_block=True),
    "pp_lcnet_v4-small": PPLCNetV4Config(stem_channels=[3, 8, 16], block_configs=V4_BLOCKS, stem_type="small"),
}
# How many blocks each folds: every Conv->BatchNorm pair, and for V3 each LearnableRepLayer after its branches.
FOLDED = {
    "pp_lcnet": 1 + 7 * 2,  # the stem, a depthwise and a pointwise pair in each of the 7 blocks
    # The stem; per block a depthwise layer (3 k x k branches, a 1x1, itself) and a pointwise one (3 + itself).
    "pp_lcnet_v3": 1 + 7 * (5 + 4),
    # Five stem layers; two channel-mixer pairs in each of the 6 blocks; the token mixer of the 3 strided ones.
    "pp_lcnet_v4": 5 + 6 * 2 + 3,
    "pp_lcnet_v4-small": 2 + 6 * 2 + 3,
}
SIZES = ((64, 64), (50, 38))


def build(name: str, seed: int = 0) -> Backbone:
    config = CONFIGS[name].model_copy(deep=True)
    config.out_indices = list(range(len(config.stage_names)))
    model = AutoBackbone.from_config(config)
    return randomize_weights_(model, seed).eval()


def pixels(size: tuple[int, int], seed: int = 3) -> torch.Tensor:
    return torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def folded(request: pytest.FixtureRequest) -> tuple[str, Backbone, Backbone]:
    """``(name, unfolded, folded)``: the same randomised model twice, the second reparameterised."""
    name = request.param
    plain, model = build(name), build(name)
    assert model.supports_reparameterize and not model.is_reparameterized
    assert model.reparameterize() == FOLDED[name]
    return name, plain, model


def test_folded_outputs_equal_unfolded(folded: tuple[str, Backbone, Backbone]) -> None:
    _, plain, model = folded
    assert model.is_reparameterized and not model.training
    assert not any(isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)) for module in model.modules())
    for size in SIZES:
        batch = pixels(size)
        with torch.no_grad():
            expected = plain(batch, output_hidden_states=True)
            got = model(batch, output_hidden_states=True)
        assert_parity(got.feature_maps, expected.feature_maps, 1e-5)
        assert_parity(got.hidden_states, expected.hidden_states, 1e-5)


def test_v3_layers_become_one_convolution_each() -> None:
    plain, model = build("pp_lcnet_v3"), build("pp_lcnet_v3")
    model.reparameterize()
    layers = [module for module in model.modules() if isinstance(module, LearnableRepLayer)]
    assert len(layers) == 2 * 7
    for layer in layers:
        assert isinstance(layer.folded, nn.Conv2d) and layer.folded.bias is not None
        assert [child for child, _ in layer.named_children()] == ["act", "folded"]
    # A depthwise 5x5 with its 1x1 and identity branches: one 5x5 depthwise convolution.
    depthwise = model.encoder.blocks[2].layers[1].depthwise_convolution.folded
    assert (depthwise.kernel_size, depthwise.groups, depthwise.padding) == ((5, 5), 16, (2, 2))
    parameters = sum(parameter.numel() for parameter in model.parameters())
    assert parameters < sum(parameter.numel() for parameter in plain.parameters()) / 2


def test_folded_model_exports_with_dynamic_size(folded: tuple[str, Backbone, Backbone], tmp_path: Path) -> None:
    _, _, model = folded
    inputs = [pixels(size, seed=5) for size in SIZES]
    assert_exports_with_dynamic_size(
        model, pixels(SIZES[0]), inputs, size_range=(33, 1024), onnx_path=tmp_path / "folded.onnx", scaled=True
    )


def test_folded_model_refuses_training_and_saving(folded: tuple[str, Backbone, Backbone], tmp_path: Path) -> None:
    _, _, model = folded
    with pytest.raises(
        ReparameterizedError, match="reparameterised for inference .* cannot train; load the checkpoint"
    ):
        model.train()
    assert not model.training
    with pytest.raises(ReparameterizedError, match="save the model before calling reparameterize"):
        model.save_pretrained(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_frozen_batch_norm_folds_too(name: str) -> None:
    plain, model = build(name, seed=1), build(name, seed=1)
    model.freeze_batch_norm()
    model.reparameterize()
    batch = pixels(SIZES[1])
    with torch.no_grad():
        assert_parity(model(batch).feature_maps, plain(batch).feature_maps, 1e-5)


def test_reparameterize_puts_a_training_model_in_eval_mode() -> None:
    model = build("pp_lcnet_v3").train()
    batch = pixels(SIZES[0])
    model.eval()
    with torch.no_grad():
        expected = model(batch).feature_maps
    model.train()
    model.reparameterize()  # folds with the running statistics, as evaluation mode uses them
    assert not model.training
    with torch.no_grad():
        assert_parity(model(batch).feature_maps, expected, 1e-5)
