"""Tests of backbones-resnet: the conformance kit, parity with transformers 5.23, behaviour, config errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from transformers.activations import ACT2FN

from backbones import AutoBackbone, testing
from backbones.testing import BackboneConformance, TransformersParity, assert_close_maps, randomize_weights_
from backbones_resnet import ResNetBackbone, ResNetConfig
from backbones_resnet._config import ACTIVATIONS
from backbones_resnet.blocks import _make_activation

TINY: dict[str, Any] = {"embedding_size": 8, "hidden_sizes": [8, 16, 24], "depths": [1, 1, 2]}
# Four stages, as real ResNets have, for parity; still a few thousand parameters.
SMALL: dict[str, Any] = {"embedding_size": 8, "hidden_sizes": [8, 16, 24, 32], "depths": [1, 2, 1, 1]}
ALL_STAGES = [0, 1, 2, 3, 4]


# -- conformance ------------------------------------------------------------------------------------


class _TinyResNetConformance(BackboneConformance):
    model_type = "resnet"
    layer_type: ClassVar[str] = ""
    # 50 and 38 are not multiples of the strides, so the rounding below is really exercised.
    input_sizes = ((64, 64), (50, 38))
    # Every stride-2 convolution and the max-pool pad by kernel // 2, so each halving is ceil(size / 2).
    spatial_rounding = "ceil"
    # Any size exports: padding is static. The lower end is the deepest stride (16) + 1, so that every map
    # is 2 pixels or more: torch.export specialises a size of 1 (it broadcasts), not a limit of ResNet's.
    export_range = (17, 4096)
    channel_error_name = "ResNet"
    bad_config_value = ("layer_type", "wide", r"layer_type 'wide' is not supported")

    def make_config(self, **overrides: Any) -> ResNetConfig:
        return ResNetConfig(**TINY, layer_type=self.layer_type, **overrides)


class TestBasicConformance(_TinyResNetConformance):
    layer_type = "basic"
    # The same operations as bottleneck blocks (convolution, BatchNorm, ReLU, residual add), only fewer
    # of them: the bottleneck class's export, ONNX and DDP/FSDP2 checks cover this code path.
    deployment_checks = False


class TestBottleneckConformance(_TinyResNetConformance):
    layer_type = "bottleneck"


# -- parity with transformers -----------------------------------------------------------------------


class TestResNetParity(TransformersParity):
    backbone_class = ResNetBackbone
    reference_task_class = "ResNetForImageClassification"
    config = SMALL
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "basic": {"layer_type": "basic"},
        "bottleneck": {"layer_type": "bottleneck"},
        "bottleneck-downsample-first-stage": {"layer_type": "bottleneck", "downsample_in_first_stage": True},
        "bottleneck-downsample-in-bottleneck": {"layer_type": "bottleneck", "downsample_in_bottleneck": True},
        # gelu shows that hidden_act reaches the stem and block outputs but not the inner activations.
        "basic-downsample-first-stage-gelu": {
            "layer_type": "basic",
            "downsample_in_first_stage": True,
            "hidden_act": "gelu",
        },
    }
    input_sizes = ((56, 40),)
    out_indices = (tuple(ALL_STAGES), (-1,), (1, 3), (0,), (2, -1))
    hidden_state_count = 5
    task_variants = ("basic", "bottleneck-downsample-in-bottleneck")
    task_out_indices = tuple(ALL_STAGES)
    task_unused_keys = ("classifier.1.bias", "classifier.1.weight")
    task_prefix = "'resnet.' removed"
    round_trip_out_indices = (0, 2, 4)
    # Same weights and operations; only the stem's memory layout (see _Stem) can move the last bit, and only
    # for activations such as gelu whose vectorised kernels round differently per layout.
    round_trip_tolerance = 1e-5

    def test_metadata_matches_oracle_shapes(
        self, tmp_path_factory: pytest.TempPathFactory, parity_variant: str
    ) -> None:
        directory, oracle = self.reference_checkpoint(parity_variant, tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory)
        first = 8 if self.variants[parity_variant].get("downsample_in_first_stage") else 4
        assert model.reductions == [4, first, first * 2, first * 4, first * 8]
        assert model.num_features == oracle.num_features == [8, 8, 16, 24, 32]
        with torch.no_grad():
            states = oracle(self.pixels(), output_hidden_states=True).hidden_states
        for state, reduction in zip(states, model.reductions):
            assert tuple(state.shape[2:]) == (math.ceil(56 / reduction), math.ceil(40 / reduction))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_match_transformers(name: str) -> None:
    values = torch.linspace(-6, 6, 241)
    ours = _make_activation(name)(values.clone())
    assert (ours - ACT2FN[name](values)).abs().max().item() <= 1e-6


def pixels(batch: int = 2, height: int = 56, width: int = 40) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


# -- behaviour --------------------------------------------------------------------------------------


def test_channels_last_input_gives_the_same_maps() -> None:
    model = randomize_weights_(AutoBackbone.from_config(ResNetConfig(**SMALL, out_indices=ALL_STAGES))).eval()
    with torch.no_grad():
        reference = model(pixels()).feature_maps
        ours = model(pixels().to(memory_format=torch.channels_last)).feature_maps
    assert_close_maps(ours, reference, atol=1e-5)


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = AutoBackbone.from_config(ResNetConfig(**SMALL))
    norm = model.encoder.stages[3].layers[0].layer[1].normalization
    assert torch.equal(norm.weight, torch.ones(8)) and torch.equal(norm.bias, torch.zeros(8))
    assert torch.equal(norm.running_mean, torch.zeros(8)) and torch.equal(norm.running_var, torch.ones(8))
    conv = model.encoder.stages[3].layers[0].shortcut.convolution.weight  # 32 x 24 x 1 x 1
    fan_out = conv.shape[0] * conv.shape[2] * conv.shape[3]
    assert conv.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.15)


def test_missing_checkpoint_weight_is_initialised(tmp_path: Path) -> None:
    model = randomize_weights_(AutoBackbone.from_config(ResNetConfig(**TINY, layer_type="basic")))
    model.save_pretrained(tmp_path)
    key = "encoder.stages.2.layers.1.layer.1.convolution.weight"  # 24 x 24 x 3 x 3
    testing.edit_checkpoint(tmp_path, tmp_path, lambda state: state.pop(key))
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == [key]
    weight = loaded.get_parameter(key)
    assert weight.device.type == "cpu"
    assert weight.std().item() == pytest.approx(math.sqrt(2 / (24 * 9)), rel=0.15)


def test_forward_stops_at_the_deepest_requested_stage() -> None:
    model = AutoBackbone.from_config(ResNetConfig(**TINY, out_indices=[1])).eval()
    ran: list[int] = []
    for number, stage in enumerate(model.encoder.stages, start=1):
        stage.register_forward_hook(lambda *_, number=number: ran.append(number))
    with torch.no_grad():
        model(pixels())
        assert ran == [1]
        model(pixels(), output_hidden_states=True)
    assert ran == [1, 1, 2, 3]


@pytest.mark.slow
def test_resnet50_shapes_at_224() -> None:
    testing.assert_maps_at_size(
        ResNetConfig(out_indices=[1, 2, 3, 4]),
        [
            (1, 256, 56, 56),
            (1, 512, 28, 28),
            (1, 1024, 14, 14),
            (1, 2048, 7, 7),
        ],
    )


# -- config errors ----------------------------------------------------------------------------------


def test_unknown_layer_type_lists_the_valid_ones() -> None:
    message = r"layer_type 'wide' is not supported; set layer_type to one of \['basic', 'bottleneck'\]"
    with pytest.raises(ValueError, match=message):
        ResNetConfig(layer_type="wide")
    config = ResNetConfig()
    with pytest.raises(ValueError, match=message):
        config.layer_type = "wide"
    assert config.layer_type == "bottleneck"


def test_unknown_activation_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"hidden_act 'swishy' is not supported; set hidden_act to one of \[.*'relu'"):
        ResNetConfig(hidden_act="swishy")


def test_one_hidden_size_per_stage() -> None:
    with pytest.raises(
        ValueError, match=r"hidden_sizes has 2 entries but depths has 3; .*len\(hidden_sizes\) == len\(depths\)"
    ):
        ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1, 1])


def test_depths_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"depths must list one positive integer per stage, got \[1, 0\]"):
        ResNetConfig(hidden_sizes=[8, 16], depths=[1, 0])
