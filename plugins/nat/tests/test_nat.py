"""Tests of backbones-nat: the conformance kit, parity with transformers 4.53.3's NAT, a default-size check."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from backbones import AutoBackbone, testing
from backbones.testing import ConfigErrors, assert_close_maps, randomize_weights_
from backbones_nat import NatBackbone, NatConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nat_oracle import CLASSIFIER_LAYOUT, NatFamilyConformance, NatFamilyRecordedParity

# Two stages; kernel 5 makes the second stage's map (4 x 4 at 32 px) smaller than the window (padded).
TINY: dict[str, Any] = {"embed_dim": 16, "depths": [1, 2], "num_heads": [2, 4], "kernel_size": 5, "drop_path_rate": 0.0}
# Three stages for the oracle: at 64 px the maps are 16, 8 and 4 wide, the last one padded to the window.
SMALL: dict[str, Any] = {**TINY, "depths": [1, 2, 1], "num_heads": [2, 2, 4]}
# A task checkpoint with layer scales, another kernel and MLP width.
CLASSIFIER: dict[str, Any] = {**SMALL, **CLASSIFIER_LAYOUT, "kernel_size": 3, "num_labels": 5}


class TestNatConformance(NatFamilyConformance):
    config_class = NatConfig
    config = TINY


# -- parity with transformers 4.53.3 --------------------------------------------------------------


class TestNatRecordedParity(NatFamilyRecordedParity):
    backbone_class = NatBackbone
    small = SMALL
    classifier = CLASSIFIER
    saved_out_indices = (0, 2, 3)
    classifier_fields = {"layer_scale_init_value": 0.5, "kernel_size": 3, "out_features": ["stage3"]}
    # Every stage's last layer, over the padded map in the last stage (4 x 4 padded to the 5 x 5 window).
    attention_shapes = ((2, 2, 16, 16, 25), (2, 2, 8, 8, 25), (2, 4, 5, 5, 25))
    task_out_indices = (1, 2, 3)

    def test_saved_config_has_transformers_fields(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        config = json.loads((self.recording(tmp_path_factory) / "ours" / "config.json").read_text())
        assert (config["hidden_size"], config["num_layers"]) == (64, 3)


# -- model behaviour ------------------------------------------------------------------------------


def test_drop_path_schedule_and_training_only() -> None:
    config = NatConfig(**{**SMALL, "drop_path_rate": 0.5, "depths": [2, 2, 1]})
    model = randomize_weights_(NatBackbone(config))
    rates = [layer.drop_path for level in model.encoder.levels for layer in level.layers]
    assert rates == torch.linspace(0, 0.5, 5).tolist()
    assert rates[-1] == 0.5 and rates[0] == 0.0
    pixels = torch.randn(2, 3, 32, 32)
    testing.assert_random_only_in_training(model, pixels)


def test_layer_scale_parameters_follow_the_config() -> None:
    plain = NatBackbone(NatConfig(**TINY))
    assert not any("layer_scale" in key for key in plain.state_dict())
    scaled = NatBackbone(NatConfig(**{**TINY, "layer_scale_init_value": 1e-2}))
    scales = scaled.encoder.levels[1].layers[0].layer_scale_parameters
    assert scales is not None and scales.shape == (2, 32) and torch.equal(scales, torch.full((2, 32), 1e-2))


def test_missing_layer_scales_are_initialised_as_the_reference(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = randomize_weights_(NatBackbone(NatConfig(**{**TINY, "layer_scale_init_value": 0.25})))
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["encoder.levels.1.layers.1.layer_scale_parameters"], state["encoder.levels.0.layers.0.attention.self.rpb"]
    save_file(state, tmp_path / "model.safetensors")
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == [
        "encoder.levels.0.layers.0.attention.self.rpb",
        "encoder.levels.1.layers.1.layer_scale_parameters",
    ]
    assert torch.equal(loaded.encoder.levels[1].layers[1].layer_scale_parameters, torch.full((2, 32), 0.25))
    assert torch.equal(loaded.encoder.levels[0].layers[0].attention.self.rpb, torch.zeros(2, 9, 9))
    # Loaded neighbours in the same modules keep their checkpoint values.
    assert torch.equal(
        loaded.encoder.levels[0].layers[0].attention.self.query.weight,
        model.encoder.levels[0].layers[0].attention.self.query.weight,
    )


def test_reassigning_out_features_follows_norms() -> None:
    model = randomize_weights_(NatBackbone(NatConfig(**SMALL))).eval()
    model.out_indices = [1, 2]
    assert sorted(model.hidden_states_norms) == ["stage1", "stage2"]
    fresh = NatBackbone(NatConfig(out_indices=[1, 2], **SMALL)).eval()
    fresh.load_state_dict(model.state_dict())  # strict: the keys of a model built for [1, 2]
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert_close_maps(model(pixels).feature_maps, fresh(pixels).feature_maps, atol=0.0)


def test_pruning_drops_unused_levels() -> None:
    model = NatBackbone(NatConfig(out_indices=[1], **SMALL))
    assert model.prune_unused_stages() == ["stage2", "stage3"]
    assert len(model.encoder.levels) == 1 and model.encoder.levels[0].downsample is None
    stem_only = NatBackbone(NatConfig(out_indices=[0], **SMALL))
    stem_only.prune_unused_stages()
    assert len(stem_only.encoder.levels) == 0
    with torch.no_grad():
        (fmap,) = stem_only(torch.randn(1, 3, 32, 32)).feature_maps
    assert fmap.shape == (1, 16, 8, 8)


# -- config ---------------------------------------------------------------------------------------


class TestNatConfigErrors(ConfigErrors):
    config_class = NatConfig
    config = TINY
    errors = {
        "patch_size": ({"patch_size": 2}, "patch_size must be 4: the stem is two stride-2 convolutions"),
        "even_kernel": (
            {"kernel_size": 6},
            r"kernel_size must be odd, so that the neighbourhood is centred on its query; got 6 \(use 5 or 7\)",
        ),
        "heads_per_stage": ({"num_heads": [2, 4, 8]}, "num_heads has 3 entries but depths has 2"),
        "heads_divide_width": (
            {"embed_dim": 18, "num_heads": [4, 4]},
            r"num_heads\[0\]=4 must be a positive divisor of stage 1's width",
        ),
        "no_stage": ({"depths": []}, "depths must list at least one stage"),
        "empty_stage": (
            {"depths": [1, 0]},
            "depths must list at least one stage, each with one layer or more; got \\[1, 0\\]",
        ),
        "activation": ({"hidden_act": "swishy"}, "hidden_act 'swishy' is not supported"),
        "mlp_ratio": ({"mlp_ratio": 0.01}, "mlp_ratio=0.01 leaves the first stage's MLP with no hidden units"),
    }
    invalid_values = (("kernel_size", 0, "greater than or equal to 1"), ("drop_path_rate", 1.0, "less than 1"))


def test_config_derived_values() -> None:
    config = NatConfig()
    assert config.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert (config.hidden_size, config.num_layers) == (512, 4)
    assert config.layer_dilations == [[1, 1, 1], [1, 1, 1, 1], [1] * 6, [1] * 5]
    data = config.to_dict()
    assert (data["hidden_size"], data["num_layers"]) == (512, 4)
    assert NatConfig.from_dict({**data, "hidden_size": 7}).hidden_size == 512  # derived, never read back
