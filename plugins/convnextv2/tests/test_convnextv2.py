"""Tests of backbones-convnextv2: the conformance kit, parity with transformers, a default-size shape check."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from transformers.models.convnextv2.modeling_convnextv2 import ConvNextV2GRN

from backbones import AutoBackbone, ConfigError, testing
from backbones.testing import assert_close_maps, randomize_weights_
from backbones.testing.cnn import (
    SMALL_CNN,
    TINY_CNN,
    ConfigRefusals,
    ConvNextStyleConformance,
    ConvNextStyleParity,
    assert_dilation_matches_timm_convnext,
    stage_list_refusals,
)
from backbones_convnext import ConvNextBackbone, ConvNextBlock, ConvNextConfig
from backbones_convnext.blocks import ChannelsFirstLayerNorm
from backbones_convnextv2 import ConvNextV2Backbone, ConvNextV2Config
from backbones_convnextv2._model import ConvNextV2Block, GlobalResponseNorm

TINY: dict[str, Any] = {**TINY_CNN}
SMALL: dict[str, Any] = {**SMALL_CNN}
ALL_STAGES = [0, 1, 2, 3, 4]


# -- conformance ------------------------------------------------------------------------------------


class TestConvNextV2Conformance(ConvNextStyleConformance):
    """The deployment checks stay on: GRN (a global reduction over the map) and the block without layer scale
    are code paths that backbones-convnext's class does not cover."""

    config_class = ConvNextV2Config


# -- reuse of backbones-convnext ----------------------------------------------------------------------


def test_builds_on_convnext() -> None:
    model = AutoBackbone.from_config(ConvNextV2Config(**TINY, out_indices=[0, 3]))
    assert isinstance(model, ConvNextBackbone) and type(model) is ConvNextV2Backbone
    blocks = [block for stage in model.encoder.stages for block in stage.layers]
    assert all(type(block) is ConvNextV2Block and isinstance(block, ConvNextBlock) for block in blocks)
    assert all(block.layer_scale_parameter is None for block in blocks)
    assert isinstance(model.hidden_states_norms["stage3"], ChannelsFirstLayerNorm)
    assert not any("layer_scale" in key for key in model.state_dict())
    assert model.state_dict()["encoder.stages.2.layers.1.grn.weight"].shape == (1, 1, 1, 96)


# -- parity with transformers -----------------------------------------------------------------------


class TestConvNextV2Parity(ConvNextStyleParity):
    backbone_class = ConvNextV2Backbone
    reference_task_class = "ConvNextV2ForImageClassification"
    trunk_prefix = "convnextv2"
    # Every output norm and every weight, GRN included, is randomised.
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "default": {},
        "patch-2-gelu-tanh": {"patch_size": 2, "hidden_act": "gelu_pytorch_tanh"},
    }
    task_out_indices = (0, 2, 4)
    round_trip_out_indices = (1, 2, 4)


def test_grn_matches_transformers() -> None:
    ours, reference = GlobalResponseNorm(12), ConvNextV2GRN(12)
    randomize_weights_(reference)
    ours.load_state_dict(reference.state_dict())
    features = torch.randn(3, 5, 7, 12, generator=torch.Generator().manual_seed(3))
    features[1] = 0.0  # an all-zero map: eps keeps it finite
    worst = assert_close_maps([ours(features)], [reference(features)], atol=1e-6)
    assert worst <= 1e-6


# -- behaviour --------------------------------------------------------------------------------------


def test_fresh_grn_is_the_identity() -> None:
    torch.manual_seed(0)
    model = AutoBackbone.from_config(ConvNextV2Config(**SMALL))
    grn = model.encoder.stages[1].layers[1].grn
    assert torch.equal(grn.weight, torch.zeros(1, 1, 1, 64)) and torch.equal(grn.bias, torch.zeros(1, 1, 1, 64))
    features = torch.randn(2, 3, 4, 64)
    assert torch.equal(grn(features), features)
    assert model.encoder.stages[1].layers[1].pwconv1.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_missing_grn_is_initialised_at_zero(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = randomize_weights_(AutoBackbone.from_config(ConvNextV2Config(**TINY)))
    model.save_pretrained(tmp_path)
    key = "encoder.stages.2.layers.1.grn.weight"
    state = load_file(tmp_path / "model.safetensors")
    bias = state["encoder.stages.2.layers.1.grn.bias"].clone()
    del state[key]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == [key]
    grn = loaded.encoder.stages[2].layers[1].grn
    assert torch.equal(grn.weight, torch.zeros(1, 1, 1, 96)) and torch.equal(grn.bias, bias)


@pytest.mark.slow
def test_convnextv2_tiny_shapes_at_224() -> None:
    testing.assert_maps_at_size(
        ConvNextV2Config(out_indices=[1, 2, 3, 4]),
        [(1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14), (1, 768, 7, 7)],
    )


# -- config errors ----------------------------------------------------------------------------------


def test_config_has_no_layer_scale_field() -> None:
    assert "layer_scale_init_value" not in ConvNextV2Config.model_fields
    assert "layer_scale_init_value" not in ConvNextV2Config(**TINY).to_dict()


class TestSharedValidationMessages(ConfigRefusals):
    config_class = ConvNextV2Config
    refusals = (
        *stage_list_refusals("gelu"),
        ({**TINY, "num_stages": 2}, r"invalid ConvNextV2Config: num_stages=2: it must equal len\(depths\) = 3"),
    )


def test_rejects_a_convnext_config() -> None:
    with pytest.raises(
        ConfigError, match=r"ConvNextV2Config is for model_type 'convnextv2', but the config says 'convnext'"
    ):
        ConvNextV2Config(model_type="convnext")
    with pytest.raises(TypeError, match="ConvNextV2Backbone needs a ConvNextV2Config"):
        ConvNextV2Backbone(ConvNextConfig(**TINY))


# -- output stride by dilation ----------------------------------------------------------------------


@pytest.mark.parametrize("output_stride", [16, 8])
def test_output_stride_matches_timm(output_stride: int) -> None:
    config = ConvNextV2Config(**SMALL, output_stride=output_stride, out_indices=ALL_STAGES)
    assert_dilation_matches_timm_convnext(config, seed=3, use_grn=True, ls_init_value=None)


def test_output_stride_lists_the_valid_values() -> None:
    with pytest.raises(ConfigError, match=r"output_stride=64: output_stride must be one of \[8, 16, 32\]"):
        ConvNextV2Config(output_stride=64)
