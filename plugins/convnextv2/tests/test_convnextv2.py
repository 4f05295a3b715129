"""Tests of backbones-convnextv2: the conformance kit, parity with transformers, a default-size shape check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from transformers.models.convnextv2.modeling_convnextv2 import ConvNextV2GRN

from backbones import AutoBackbone, ConfigError
from backbones.testing import BackboneConformance, assert_close_maps, randomize_weights_
from backbones_convnext import ConvNextBackbone, ConvNextBlock, ConvNextConfig
from backbones_convnext._model import ChannelsFirstLayerNorm
from backbones_convnextv2 import ConvNextV2Backbone, ConvNextV2Config
from backbones_convnextv2._model import ConvNextV2Block, GlobalResponseNorm

TINY: dict[str, Any] = {"hidden_sizes": [8, 16, 24], "depths": [1, 1, 2]}
# Four stages, as real ConvNeXt V2s have, for parity; still a few thousand parameters.
SMALL: dict[str, Any] = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 2, 1, 1]}
ALL_STAGES = [0, 1, 2, 3, 4]
NAMES = ["stem", "stage1", "stage2", "stage3", "stage4"]


def norm_keys(*stages: str) -> list[str]:
    return sorted(f"hidden_states_norms.{stage}.{param}" for stage in stages for param in ("weight", "bias"))


# -- conformance ------------------------------------------------------------------------------------


class TestConvNextV2Conformance(BackboneConformance):
    model_type = "convnextv2"
    # 50 and 38 are not multiples of the strides, so the rounding below is really exercised.
    input_sizes = ((64, 64), (50, 38))
    # The patch embedding and the 2x2 downsampling convolutions do not pad: each drops the remainder.
    spatial_rounding = "floor"
    # Any size exports. The lower end is twice the deepest stride (16), so that every map is 2 pixels or
    # more: torch.export specialises a size of 1 (it broadcasts), not a limit of ConvNeXt V2's. The
    # deployment checks stay on: GRN (a global reduction over the map) and the block without layer scale
    # are code paths that backbones-convnext's class does not cover.
    export_range = (32, 4096)

    def make_config(self, **overrides: Any) -> ConvNextV2Config:
        return ConvNextV2Config(**TINY, **overrides)


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

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "patch-2-gelu-tanh": {"patch_size": 2, "hidden_act": "gelu_pytorch_tanh"},
}


def pixels(batch: int = 2, height: int = 67, width: int = 45) -> torch.Tensor:
    # 67 x 45 is no multiple of any stride, so every unpadded convolution drops a remainder.
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


def oracle_config(variant: str, **extra: Any) -> transformers.ConvNextV2Config:
    # Lists, not transformers' defaults: in 5.23 ConvNextV2Backbone(ConvNextV2Config()) raises
    # "TypeError: can only concatenate list (not "tuple") to list" because the default sizes are tuples.
    return transformers.ConvNextV2Config(**SMALL, num_stages=4, **VARIANTS[variant], **extra)


@pytest.fixture(scope="module", params=list(VARIANTS))
def oracle_checkpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, Any]:
    """A transformers ConvNextV2Backbone with every output norm and every weight (GRN included) randomised."""
    oracle = transformers.ConvNextV2Backbone(oracle_config(request.param, out_indices=ALL_STAGES))
    oracle = randomize_weights_(oracle).eval()
    directory = tmp_path_factory.mktemp(request.param)
    oracle.save_pretrained(directory)
    return request.param, directory, oracle


@pytest.mark.parametrize("out_indices", [ALL_STAGES, [-1], [1, 3], [0], [2, -1]])
def test_backbone_checkpoint_matches_transformers(
    oracle_checkpoint: tuple[str, Path, Any], out_indices: list[int]
) -> None:
    _, directory, oracle = oracle_checkpoint
    model, report = AutoBackbone.from_pretrained(directory, out_indices=out_indices, output_loading_info=True)
    assert isinstance(model, ConvNextV2Backbone)
    assert report.missing_keys == []
    unselected = [name for name in NAMES if name not in model.out_features]
    assert report.unused_keys == norm_keys(*unselected)
    oracle.out_indices = out_indices
    with torch.no_grad():
        ours = model(pixels()).feature_maps
        reference = oracle(pixels()).feature_maps
    assert len(ours) == len(out_indices)
    assert_close_maps(ours, reference, atol=1e-4)
    assert model.channels == oracle.channels


def test_hidden_states_match_transformers(oracle_checkpoint: tuple[str, Path, Any]) -> None:
    _, directory, oracle = oracle_checkpoint
    model = AutoBackbone.from_pretrained(directory, out_indices=[1])
    oracle.out_indices = ALL_STAGES  # the fixture is shared; earlier tests changed the selection
    with torch.no_grad():
        ours = model(pixels(), output_hidden_states=True)
        reference = oracle(pixels(), output_hidden_states=True)
    assert len(ours.hidden_states) == len(reference.hidden_states) == 5
    assert_close_maps(ours.hidden_states, reference.hidden_states, atol=1e-4)
    assert_close_maps(ours.feature_maps, [reference.feature_maps[1]], atol=1e-4)


def test_task_checkpoint_loads_trunk(tmp_path: Path) -> None:
    config = oracle_config("default", num_labels=5)
    classifier = randomize_weights_(transformers.ConvNextV2ForImageClassification(config)).eval()
    classifier.save_pretrained(tmp_path)
    model, report = AutoBackbone.from_pretrained(tmp_path, out_indices=[0, 2, 4], output_loading_info=True)
    # The task model has no output norms (initialised as transformers does: weight 1, bias 0) and a
    # pooled LayerNorm and classifier that a backbone never runs.
    assert report.missing_keys == norm_keys("stem", "stage2", "stage4")
    assert report.unused_keys == [
        "classifier.bias",
        "classifier.weight",
        "convnextv2.layernorm.bias",
        "convnextv2.layernorm.weight",
    ]
    assert "'convnextv2.' removed" in report.prefix
    oracle = transformers.ConvNextV2Backbone(oracle_config("default", out_indices=[0, 2, 4])).eval()
    trunk = {
        key.removeprefix("convnextv2."): value
        for key, value in classifier.state_dict().items()
        if key.startswith("convnextv2.") and not key.startswith("convnextv2.layernorm.")
    }
    missing, unexpected = oracle.load_state_dict(trunk, strict=False)
    assert sorted(missing) == norm_keys("stem", "stage2", "stage4") and unexpected == []
    with torch.no_grad():
        assert_close_maps(model(pixels()).feature_maps, oracle(pixels()).feature_maps, atol=1e-4)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_our_checkpoint_loads_into_transformers(tmp_path: Path, variant: str) -> None:
    config = ConvNextV2Config(**SMALL, **VARIANTS[variant], out_indices=[1, 2, 4])
    model = randomize_weights_(AutoBackbone.from_config(config)).eval()
    model.save_pretrained(tmp_path)
    # The concrete class, not transformers.AutoBackbone: in 5.23 AutoBackbone.from_pretrained(local_dir)
    # asks the hub first and fails offline.
    oracle, info = transformers.ConvNextV2Backbone.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert oracle.out_indices == [1, 2, 4]
    with torch.no_grad():
        assert_close_maps(model(pixels()).feature_maps, oracle.eval()(pixels()).feature_maps, atol=1e-5)


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
    model = AutoBackbone.from_config(ConvNextV2Config(out_indices=[1, 2, 3, 4])).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [(1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14), (1, 768, 7, 7)]
    assert model.channels == [96, 192, 384, 768]
    assert model.out_reductions == [4, 8, 16, 32]


# -- config errors ----------------------------------------------------------------------------------


def test_config_has_no_layer_scale_field() -> None:
    assert "layer_scale_init_value" not in ConvNextV2Config.model_fields
    assert "layer_scale_init_value" not in ConvNextV2Config(**TINY).to_dict()


def test_shared_validation_messages() -> None:
    with pytest.raises(
        ValueError, match=r"hidden_sizes has 2 entries but depths has 3; .*len\(hidden_sizes\) == len\(depths\)"
    ):
        ConvNextV2Config(hidden_sizes=[8, 16], depths=[1, 1, 1])
    with pytest.raises(ValueError, match=r"hidden_act 'swishy' is not supported; set hidden_act to one of"):
        ConvNextV2Config(hidden_act="swishy")
    with pytest.raises(ConfigError, match=r"invalid ConvNextV2Config: num_stages=2: it must equal len\(depths\) = 3"):
        ConvNextV2Config(**TINY, num_stages=2)


def test_rejects_a_convnext_config() -> None:
    with pytest.raises(
        ConfigError, match=r"ConvNextV2Config is for model_type 'convnextv2', but the config says 'convnext'"
    ):
        ConvNextV2Config(model_type="convnext")
    with pytest.raises(TypeError, match="ConvNextV2Backbone needs a ConvNextV2Config"):
        ConvNextV2Backbone(ConvNextConfig(**TINY))
