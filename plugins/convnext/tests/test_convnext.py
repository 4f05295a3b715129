"""Tests of backbones-convnext: the conformance kit, parity with transformers, a default-size shape check."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from transformers.activations import ACT2FN

from backbones import AutoBackbone, ConfigError, testing
from backbones.activations import make_activation
from backbones.testing import assert_close_maps, randomize_weights_
from backbones.testing.cnn import (
    SMALL_CNN,
    TINY_CNN,
    ConfigRefusals,
    ConvNextStyleConformance,
    ConvNextStyleParity,
    assert_dilation_matches_timm_convnext,
    assert_patch_size_must_be_square,
    stage_list_refusals,
)
from backbones_convnext import ConvNextBackbone, ConvNextConfig
from backbones_convnext._config import ACTIVATIONS
from backbones_convnext.blocks import ChannelsFirstLayerNorm

TINY: dict[str, Any] = {**TINY_CNN}
SMALL: dict[str, Any] = {**SMALL_CNN}
ALL_STAGES = [0, 1, 2, 3, 4]


# -- conformance ------------------------------------------------------------------------------------


class TestConvNextConformance(ConvNextStyleConformance):
    config_class = ConvNextConfig
    channel_error_name = "model"


# -- parity with transformers -----------------------------------------------------------------------


class TestConvNextParity(ConvNextStyleParity):
    backbone_class = ConvNextBackbone
    reference_task_class = "ConvNextForImageClassification"
    trunk_prefix = "convnext"
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "layer-scale": {},
        "no-layer-scale": {"layer_scale_init_value": 0.0},
        "patch-2-gelu-tanh": {"patch_size": 2, "hidden_act": "gelu_pytorch_tanh"},
    }
    task_variants = ("layer-scale", "no-layer-scale")
    task_out_indices = (1, 3, 4)
    round_trip_out_indices = (0, 2, 4)

    def test_metadata_matches_oracle_shapes(
        self, tmp_path_factory: pytest.TempPathFactory, parity_variant: str
    ) -> None:
        directory, oracle = self.reference_checkpoint(parity_variant, tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory)
        patch = self.variants[parity_variant].get("patch_size", 4)
        assert model.reductions == [patch, patch, patch * 2, patch * 4, patch * 8]
        assert model.num_features == oracle.num_features == [8, 8, 16, 24, 32]
        with torch.no_grad():
            states = oracle(self.pixels(), output_hidden_states=True).hidden_states
        for state, reduction in zip(states, model.reductions):
            assert tuple(state.shape[2:]) == (67 // reduction, 45 // reduction)


def pixels(batch: int = 2, height: int = 67, width: int = 45) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_match_transformers(name: str) -> None:
    values = torch.linspace(-6, 6, 241)
    assert (make_activation(name)(values) - ACT2FN[name](values)).abs().max().item() <= 1e-6


# -- behaviour --------------------------------------------------------------------------------------


def test_output_norms_follow_the_selection() -> None:
    model = AutoBackbone.from_config(ConvNextConfig(**TINY, out_indices=[0, 2]))
    assert sorted(model.hidden_states_norms) == ["stage2", "stem"]
    model.hidden_states_norms["stage2"].weight.data.fill_(3.0)
    model.out_features = ["stage1", "stage2"]
    assert sorted(model.hidden_states_norms) == ["stage1", "stage2"]
    assert torch.equal(model.hidden_states_norms["stage2"].weight, torch.full((16,), 3.0)), "kept norms keep weights"
    added = model.hidden_states_norms["stage1"]
    assert isinstance(added, ChannelsFirstLayerNorm) and added.eps == 1e-6
    assert torch.equal(added.weight, torch.ones(8)) and torch.equal(added.bias, torch.zeros(8))
    fresh = AutoBackbone.from_config(ConvNextConfig(**TINY, out_indices=[1, 2]))
    assert list(model.state_dict()) == list(fresh.state_dict())


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = AutoBackbone.from_config(ConvNextConfig(**SMALL, initializer_range=0.05, layer_scale_init_value=0.5))
    block = model.encoder.stages[2].layers[0]
    assert torch.equal(block.layer_scale_parameter, torch.full((24,), 0.5))
    assert torch.equal(block.pwconv1.bias, torch.zeros(96))
    assert block.pwconv1.weight.std().item() == pytest.approx(0.05, rel=0.1)
    assert torch.equal(block.layernorm.weight, torch.ones(24)) and torch.equal(block.layernorm.bias, torch.zeros(24))
    assert model.encoder.stages[0].downsampling_layer is None
    assert (
        AutoBackbone.from_config(ConvNextConfig(**SMALL, layer_scale_init_value=0))
        .encoder.stages[0]
        .layers[0]
        .layer_scale_parameter
        is None
    )


def test_drop_path_only_acts_in_training() -> None:
    torch.manual_seed(0)
    model = AutoBackbone.from_config(ConvNextConfig(**TINY, drop_path_rate=0.5, out_indices=[-1]))
    randomize_weights_(model)
    rates = [block.drop_path_rate for stage in model.encoder.stages for block in stage.layers]
    assert rates == pytest.approx([0.0, 0.5 / 3, 1.0 / 3, 0.5])
    with torch.no_grad():
        first, second = model.eval()(pixels()).feature_maps[0], model(pixels()).feature_maps[0]
        assert torch.equal(first, second)
        torch.manual_seed(1)
        trained = model.train()(pixels()).feature_maps[0]
    assert not torch.allclose(trained, first)


def test_channels_last_output_views() -> None:
    model = randomize_weights_(AutoBackbone.from_config(ConvNextConfig(**TINY, out_indices=[0, 1, 2, 3]))).eval()
    with torch.no_grad():
        maps = model(pixels()).feature_maps
        again = model(pixels().contiguous(memory_format=torch.channels_last)).feature_maps
    # Documented in the README: maps are (B, C, H, W) views of channels-last memory, no transposing copy.
    assert all(fmap.is_contiguous(memory_format=torch.channels_last) for fmap in maps)
    assert_close_maps(again, maps, atol=1e-5)


@pytest.mark.slow
def test_convnext_tiny_shapes_at_224() -> None:
    model = testing.assert_maps_at_size(
        ConvNextConfig(out_indices=[1, 2, 3, 4]), [(1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14), (1, 768, 7, 7)]
    )
    assert sum(p.numel() for p in model.parameters()) == 27_818_592 + 2 * (96 + 192 + 384 + 768)


# -- config errors ----------------------------------------------------------------------------------


class TestConvNextConfigRefusals(ConfigRefusals):
    config_class = ConvNextConfig
    refusals = (
        *stage_list_refusals("gelu"),
        ({"drop_path_rate": 1.5}, r"drop_path_rate=1.5: Input should be less than 1"),
    )


def test_num_stages_must_match_depths() -> None:
    assert ConvNextConfig(**TINY, num_stages=3).num_stages == 3
    assert ConvNextConfig(**TINY).to_dict()["num_stages"] == 3
    with pytest.raises(ConfigError, match=r"num_stages=4: it must equal len\(depths\) = 3; drop num_stages"):
        ConvNextConfig(**TINY, num_stages=4)


def test_patch_size_must_be_square() -> None:
    assert_patch_size_must_be_square(ConvNextConfig)


def test_transformers_default_config_loads(tmp_path: Path) -> None:
    # A config.json as transformers writes it (lists, because tuple defaults break its backbone in 5.23).
    TestConvNextParity().reference_config("layer-scale", out_indices=[2, 4]).save_pretrained(tmp_path)
    config = ConvNextConfig.from_pretrained(tmp_path)
    assert (config.hidden_sizes, config.depths, config.out_features) == (
        [8, 16, 24, 32],
        [1, 2, 1, 1],
        ["stage2", "stage4"],
    )
    assert config.layer_norm_eps == 1e-12 and config.layer_scale_init_value == 1e-6


# -- output stride by dilation ----------------------------------------------------------------------


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_output_stride_matches_timm(output_stride: int) -> None:
    assert_dilation_matches_timm_convnext(ConvNextConfig(**SMALL, output_stride=output_stride, out_indices=ALL_STAGES))


def test_dilated_model_loads_the_same_weights_and_exports(tmp_path: Path) -> None:
    from torch.export import Dim

    randomize_weights_(AutoBackbone.from_config(ConvNextConfig(**SMALL, out_indices=ALL_STAGES))).save_pretrained(
        tmp_path
    )
    model, report = AutoBackbone.from_pretrained(tmp_path, output_stride=8, output_loading_info=True)
    assert (report.missing_keys, report.unused_keys, report.unknown_config_fields) == ([], [], {})
    model.eval()
    # Stage 4's 2x2 convolution keeps stage 3's dilation (2), with symmetric padding; stage 3's has
    # dilation 1, padded at the bottom and right only.
    convs = [model.encoder.stages[index].downsampling_layer[1] for index in (2, 3)]
    assert [(conv.stride, conv.dilation, conv.same_padding) for conv in convs] == [
        ((1, 1), (1, 1), (0, 1, 0, 1)),
        ((1, 1), (2, 2), (1, 1, 1, 1)),
    ]
    dims = {2: Dim("height", min=17, max=1024), 3: Dim("width", min=17, max=1024)}
    program = torch.export.export(model, (pixels(),), dynamic_shapes={"pixel_values": dims})
    for height, width in [(67, 45), (40, 33)]:
        images = pixels(height=height, width=width)
        with torch.no_grad():
            maps = model(images).feature_maps
            assert [tuple(fmap.shape[2:]) for fmap in maps][-1] == (height // 8, width // 8)
            assert_close_maps(program.module()(images).feature_maps, maps, atol=1e-5)


def test_output_stride_round_trips_and_transformers_reads_it(tmp_path: Path) -> None:
    import transformers

    ConvNextConfig(**SMALL, output_stride=16).save_pretrained(tmp_path)
    assert ConvNextConfig.from_pretrained(tmp_path).output_stride == 16
    theirs = transformers.ConvNextConfig.from_pretrained(tmp_path)
    assert (theirs.depths, theirs.output_stride) == ([1, 2, 1, 1], 16)


def test_output_stride_lists_the_valid_values() -> None:
    with pytest.raises(ConfigError, match=r"output_stride=4: output_stride must be one of \[8, 16, 32\]"):
        ConvNextConfig(output_stride=4)
    with pytest.raises(ConfigError, match=r"output_stride=8 is below the stem's stride 16, which dilation cannot undo"):
        ConvNextConfig(patch_size=16, output_stride=8)
