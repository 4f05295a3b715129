"""Tests of backbones-focalnet: the conformance kit, parity with transformers, a default-size shape check."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import transformers
from transformers.activations import ACT2FN

from backbones import AutoBackbone, Backbone, ConfigError, testing
from backbones.activations import make_activation
from backbones.testing import TransformersParity, edit_checkpoint, randomize_weights_
from backbones.testing.cnn import (
    CNNConformance,
    ConfigRefusals,
    assert_patch_size_must_be_square,
    map_shapes,
    non_positive_depths_refusal,
    unknown_activation_refusal,
)
from backbones_focalnet import FocalNetBackbone, FocalNetConfig
from backbones_focalnet._config import ACTIVATIONS

# Every option that changes the math, switched on at once: the conformance kit then checks the
# compile, gradient and pruning paths of all of them together.
ALL_OPTIONS: dict[str, Any] = {
    "use_conv_embed": True,
    "use_post_layernorm": True,
    "use_layerscale": True,
    "normalize_modulator": True,
    "use_post_layernorm_in_modulation": True,
}
TINY: dict[str, Any] = {
    "embed_dim": 8,
    "depths": [1, 1, 1],
    "focal_levels": [2, 1, 3],
    "focal_windows": [3, 1, 3],
    "drop_path_rate": 0.0,
}
# Four stages, as real FocalNets have (the last two maps share a stride), still tiny.
SMALL: dict[str, Any] = {"embed_dim": 8, "depths": [1, 1, 2, 1], "drop_path_rate": 0.0}
ALL_STAGES = [0, 1, 2, 3, 4]


# -- conformance ------------------------------------------------------------------------------------


class TestFocalNetConformance(CNNConformance):
    """The stem and every downsampling pad (bottom, right) to a multiple of their stride first, as transformers
    does, so each map is ceil(size / stride)."""

    config_class = FocalNetConfig
    config = TINY
    # Any input size works (every stride pads); exported from 32 (twice the deepest stride, so every map
    # is at least 2 wide: torch.export specialises sizes of 1) to 1024, every size in between.
    export_range = (32, 1024)
    channel_error_name = "FocalNet"
    bad_config_value = ("hidden_act", "geluu", "hidden_act 'geluu' is not supported")


class TestFocalNetAllOptionsConformance(TestFocalNetConformance):
    # The options add no size-dependent code (the same padding helper and modulation, other convolution
    # kernels and norms): the slow distributed, export and ONNX checks run in the class above only. Its
    # export and ONNX were checked by hand over the same range when the options were made export-ready.
    deployment_checks = False
    config = {**TINY, **ALL_OPTIONS}


# -- parity with transformers -----------------------------------------------------------------------


class TestFocalNetParity(TransformersParity):
    backbone_class = FocalNetBackbone
    # The bare trunk saves its keys without the "focalnet." prefix.
    reference_task_classes = ("FocalNetForImageClassification", "FocalNetForMaskedImageModeling", "FocalNetModel")
    # Every per-stage value is given as a list: transformers 5.23's default FocalNetConfig holds tuples,
    # and FocalNetBackbone(FocalNetConfig()) raises "can only concatenate list (not "tuple") to list".
    config = {**SMALL, "focal_levels": [2, 2, 2, 2], "focal_windows": [3, 3, 3, 3]}
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "srf": {},
        "conv-embed": {"use_conv_embed": True},
        "post-layernorm": {"use_post_layernorm": True},
        "layerscale": {"use_layerscale": True, "layerscale_value": 0.5},
        "normalize-modulator": {"normalize_modulator": True},
        "post-layernorm-in-modulation": {"use_post_layernorm_in_modulation": True},
        # FocalNet-L/XL/H style: every option of the large models, three levels from a 5x5 window.
        "large-style": {**ALL_OPTIONS, "focal_levels": [3, 3, 3, 3], "focal_windows": [5, 5, 5, 5]},
        # Levels from 0 (global context only) to 4, windows 1 to 5, another patch size, MLP width and activation.
        "mixed-levels": {
            "focal_levels": [0, 1, 3, 4],
            "focal_windows": [1, 3, 5, 3],
            "patch_size": 2,
            "mlp_ratio": 2.5,
            "hidden_act": "gelu_new",
            "normalize_modulator": True,
            "use_post_layernorm_in_modulation": True,
        },
    }
    # 37 x 50 is no multiple of any stride: the stem pads, and so do the downsamplings of odd maps.
    input_sizes = ((37, 50),)
    # Every variant with every stage selected; the selection logic, which no option changes, with two of them.
    out_indices = (tuple(ALL_STAGES), (-1,), (1, 3), (0,), (2, -1))
    selection_variants = ("srf", "large-style")
    # transformers' backbone holds the final norm of FocalNetModel but never applies it.
    backbone_unused_keys = ("focalnet.layernorm.bias", "focalnet.layernorm.weight")
    # Token sequences (batch, height * width, channels), as transformers returns them.
    hidden_state_count = 5
    task_variants = ("srf", "large-style")
    task_out_indices = tuple(ALL_STAGES)
    round_trip_out_indices = (0, 2, 4)
    # Only the final norm that transformers builds and its backbone never applies. Our config.json carries
    # the real hidden_sizes, so transformers reports the right channels.
    round_trip_missing_keys = ("focalnet.layernorm.bias", "focalnet.layernorm.weight")

    def reference_config(self, variant: str, **extra: Any) -> Any:
        # transformers builds the widths from embed_dim and reads hidden_sizes only to report channels.
        width = SMALL["embed_dim"]
        return super().reference_config(variant, hidden_sizes=[width * 2, width * 4, width * 8, width * 8], **extra)

    def expected_task_report(self, task_class: str, variant: str, model: Backbone) -> tuple[list[str], list[str]]:
        unused = {
            "FocalNetForImageClassification": [
                "classifier.bias",
                "classifier.weight",
                "focalnet.layernorm.bias",
                "focalnet.layernorm.weight",
            ],
            "FocalNetForMaskedImageModeling": [
                "decoder.0.bias",
                "decoder.0.weight",
                "focalnet.embeddings.mask_token",
                "focalnet.layernorm.bias",
                "focalnet.layernorm.weight",
            ],
            "FocalNetModel": ["layernorm.bias", "layernorm.weight"],
        }
        return [], unused[task_class]

    def expected_task_prefix(self, task_class: str) -> str:
        return "'focalnet.' added" if task_class == "FocalNetModel" else ""

    def test_metadata_matches_oracle_shapes(
        self, tmp_path_factory: pytest.TempPathFactory, parity_variant: str
    ) -> None:
        directory, oracle = self.reference_checkpoint(parity_variant, tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory, out_indices=ALL_STAGES)
        patch = self.variants[parity_variant].get("patch_size", 4)
        assert model.reductions == [patch, patch * 2, patch * 4, patch * 8, patch * 8]
        assert model.num_features == oracle.num_features == [8, 16, 32, 64, 64]
        with torch.no_grad():
            reference = oracle(self.pixels()).feature_maps
        for fmap, reduction in zip(reference, model.out_reductions):
            assert tuple(fmap.shape[2:]) == (math.ceil(37 / reduction), math.ceil(50 / reduction))


def pixels(batch: int = 2, height: int = 37, width: int = 50) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_match_transformers(name: str) -> None:
    values = torch.linspace(-6, 6, 241)
    ours = make_activation(name)(values.clone())
    assert (ours - ACT2FN[name](values)).abs().max().item() <= 1e-6


def test_default_config_matches_transformers() -> None:
    ours = FocalNetConfig().to_dict()
    # transformers' defaults are tuples; compared as lists. hidden_sizes is ours derived from embed_dim.
    theirs = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in transformers.FocalNetConfig().to_dict().items()
    }
    for key in FocalNetConfig.model_fields:
        if key in theirs:
            assert ours[key] == theirs[key], key
    assert ours["hidden_sizes"] == theirs["hidden_sizes"] == [192, 384, 768, 768]
    assert ours["stage_names"] == theirs["stage_names"]


# -- behaviour --------------------------------------------------------------------------------------


def test_stale_hidden_sizes_are_replaced_by_the_real_channels(tmp_path: Path) -> None:
    # The conversion script left focalnet-tiny's hidden_sizes in the configs of the larger models.
    config = FocalNetConfig.from_dict(
        {"model_type": "focalnet", "embed_dim": 128, "hidden_sizes": [192, 384, 768, 768]}
    )
    assert config.hidden_sizes == [256, 512, 1024, 1024]
    assert config.to_dict()["hidden_sizes"] == [256, 512, 1024, 1024]
    with pytest.raises(AttributeError):
        config.hidden_sizes = [1, 2, 3, 4]  # type: ignore[misc]


def test_default_config_builds_and_reports_focalnet_tiny_stages() -> None:
    model = FocalNetBackbone(FocalNetConfig(out_indices=ALL_STAGES))
    assert model.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert model.num_features == [96, 192, 384, 768, 768]
    assert model.reductions == [4, 8, 16, 32, 32]
    # transformers' FocalNetBackbone has 27,658,116: the same plus its unused final norm (2 x 768).
    assert sum(p.numel() for p in model.parameters()) == 27_656_580


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    config = FocalNetConfig(**SMALL, use_layerscale=True, layerscale_value=0.25, use_post_layernorm_in_modulation=True)
    model = AutoBackbone.from_config(config)
    block = model.focalnet.encoder.stages[2].layers[1]
    assert torch.equal(block.gamma_1, torch.full((32,), 0.25)) and torch.equal(block.gamma_2, torch.full((32,), 0.25))
    norm = block.modulation.layernorm
    assert torch.equal(norm.weight, torch.ones(32)) and torch.equal(norm.bias, torch.zeros(32))
    linear = block.mlp.fc1  # 128 x 32
    assert torch.equal(linear.bias, torch.zeros(128))
    assert linear.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_missing_checkpoint_weight_is_initialised(tmp_path: Path) -> None:
    model = randomize_weights_(AutoBackbone.from_config(FocalNetConfig(**TINY, use_layerscale=True)))
    model.save_pretrained(tmp_path)
    key = "focalnet.encoder.stages.1.layers.0.gamma_2"
    edit_checkpoint(tmp_path, tmp_path, lambda state: state.pop(key))
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == [key]
    assert torch.equal(loaded.get_parameter(key), torch.full((16,), 1e-4))
    # Its sibling came from the checkpoint, not from the initialisation.
    sibling = key.replace("gamma_2", "gamma_1")
    assert torch.equal(loaded.get_parameter(sibling), model.get_parameter(sibling))


def test_pruning_keeps_the_downsampling_that_makes_the_last_kept_stage() -> None:
    model = AutoBackbone.from_config(FocalNetConfig(**SMALL, out_indices=[2]))
    assert model.prune_unused_stages() == ["stage3", "stage4"]
    stages = model.focalnet.encoder.stages
    assert len(stages) == 2 and stages[1].downsample is not None
    with torch.no_grad():
        (fmap,) = model(pixels()).feature_maps
    assert tuple(fmap.shape) == (2, 32, 3, 4)  # stride 16 on 37 x 50


@pytest.mark.slow
def test_focalnet_tiny_shapes_at_224() -> None:
    testing.assert_maps_at_size(
        FocalNetConfig(out_indices=ALL_STAGES), map_shapes(1, [96, 192, 384, 768, 768], [56, 28, 14, 7, 7])
    )


# -- config errors ----------------------------------------------------------------------------------


def test_even_focal_window_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"focal_windows must hold odd kernel sizes >= 1, got \[3, 2\]"):
        FocalNetConfig(depths=[1, 1], focal_levels=[2, 2], focal_windows=[3, 2])


def test_negative_focal_level_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"focal_levels must be >= 0 .*got \[2, -1, 2, 2\]"):
        FocalNetConfig(focal_levels=[2, -1, 2, 2])


@pytest.mark.parametrize("name", ["focal_levels", "focal_windows"])
def test_one_focal_value_per_stage(name: str) -> None:
    message = rf"{name} has 2 entries but depths has 3 stages; give {name} one value per stage"
    with pytest.raises(ValueError, match=message):
        FocalNetConfig(depths=[1, 1, 1], **{name: [3, 3]})
    config = FocalNetConfig(depths=[1, 1])
    with pytest.raises(ValueError, match=r"focal_levels has 4 entries but depths has 5 stages"):
        config.depths = [1, 1, 1, 1, 1]
    assert config.depths == [1, 1]


def test_conv_embed_needs_patch_size_4() -> None:
    with pytest.raises(ValueError, match=r"use_conv_embed=True .* patch_size must be 4 \(got 2\); set patch_size=4"):
        FocalNetConfig(use_conv_embed=True, patch_size=2)


class TestFocalNetConfigRefusals(ConfigRefusals):
    config_class = FocalNetConfig
    refusals = (unknown_activation_refusal("gelu"), non_positive_depths_refusal())


def test_non_square_patches_are_rejected() -> None:
    assert_patch_size_must_be_square(FocalNetConfig)


def test_empty_mlp_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"mlp_ratio=0.1 leaves the MLP of the first stage with no hidden unit"):
        FocalNetConfig(embed_dim=8, mlp_ratio=0.1)


def test_out_of_range_numbers_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"embed_dim=0: Input should be greater than or equal to 1"):
        FocalNetConfig(embed_dim=0)
    with pytest.raises(ConfigError, match=r"drop_path_rate=1.5: Input should be less than 1"):
        FocalNetConfig(drop_path_rate=1.5)
