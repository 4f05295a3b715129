"""Tests of backbones-resnet: the conformance kit, parity with transformers 5.23, behaviour, config errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers.activations import ACT2FN

from backbones import AutoBackbone, ConfigError
from backbones.testing import BackboneConformance, assert_close_maps, randomize_weights_
from backbones_resnet import ResNetBackbone, ResNetConfig
from backbones_resnet._config import ACTIVATIONS
from backbones_resnet._model import _make_activation

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

VARIANTS: dict[str, dict[str, Any]] = {
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


def pixels(batch: int = 2, height: int = 56, width: int = 40) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


def oracle_config(variant: str, **extra: Any) -> transformers.ResNetConfig:
    return transformers.ResNetConfig(**SMALL, **VARIANTS[variant], out_indices=ALL_STAGES, **extra)


def load_oracle(directory: Path) -> transformers.ResNetBackbone:
    # The concrete class, not transformers.AutoBackbone: in 5.23 AutoBackbone.from_pretrained(local_dir)
    # asks the hub first and fails offline.
    model, info = transformers.ResNetBackbone.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


@pytest.fixture(scope="module", params=list(VARIANTS))
def oracle_checkpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, Any]:
    """A transformers ResNetBackbone with every weight and running statistic randomised, and its checkpoint."""
    oracle = randomize_weights_(transformers.ResNetBackbone(oracle_config(request.param))).eval()
    directory = tmp_path_factory.mktemp(request.param)
    oracle.save_pretrained(directory)
    return request.param, directory, oracle


@pytest.mark.parametrize("out_indices", [ALL_STAGES, [-1], [1, 3], [0], [2, -1]])
def test_backbone_checkpoint_matches_transformers(
    oracle_checkpoint: tuple[str, Path, Any], out_indices: list[int]
) -> None:
    _, directory, oracle = oracle_checkpoint
    model, report = AutoBackbone.from_pretrained(directory, out_indices=out_indices, output_loading_info=True)
    assert isinstance(model, ResNetBackbone)
    assert report.clean, str(report)
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
    with torch.no_grad():
        ours = model(pixels(), output_hidden_states=True)
        reference = oracle(pixels(), output_hidden_states=True)
    assert len(ours.hidden_states) == len(reference.hidden_states) == 5
    assert_close_maps(ours.hidden_states, reference.hidden_states, atol=1e-4)
    assert_close_maps(ours.feature_maps, [reference.hidden_states[1]], atol=1e-4)


def test_metadata_matches_oracle_shapes(oracle_checkpoint: tuple[str, Path, Any]) -> None:
    variant, directory, oracle = oracle_checkpoint
    model = AutoBackbone.from_pretrained(directory)
    first = 8 if VARIANTS[variant].get("downsample_in_first_stage") else 4
    assert model.reductions == [4, first, first * 2, first * 4, first * 8]
    assert model.num_features == oracle.num_features == [8, 8, 16, 24, 32]
    with torch.no_grad():
        states = oracle(pixels(), output_hidden_states=True).hidden_states
    for state, reduction in zip(states, model.reductions):
        assert tuple(state.shape[2:]) == (math.ceil(56 / reduction), math.ceil(40 / reduction))


@pytest.mark.parametrize("variant", ["basic", "bottleneck-downsample-in-bottleneck"])
def test_task_checkpoint_loads_trunk(tmp_path: Path, variant: str) -> None:
    config = oracle_config(variant, num_labels=5)
    classifier = randomize_weights_(transformers.ResNetForImageClassification(config)).eval()
    classifier.save_pretrained(tmp_path)
    model, report = AutoBackbone.from_pretrained(tmp_path, out_indices=ALL_STAGES, output_loading_info=True)
    assert report.missing_keys == []
    assert report.unused_keys == ["classifier.1.bias", "classifier.1.weight"]
    assert "'resnet.' removed" in report.prefix
    oracle = transformers.ResNetBackbone(config).eval()
    trunk = {
        key.removeprefix("resnet."): value
        for key, value in classifier.state_dict().items()
        if key.startswith("resnet.")
    }
    oracle.load_state_dict(trunk, strict=True)
    with torch.no_grad():
        assert_close_maps(model(pixels()).feature_maps, oracle(pixels()).feature_maps, atol=1e-4)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_our_checkpoint_loads_into_transformers(tmp_path: Path, variant: str) -> None:
    config = ResNetConfig(**SMALL, **VARIANTS[variant], out_indices=[0, 2, 4])
    model = randomize_weights_(AutoBackbone.from_config(config)).eval()
    model.save_pretrained(tmp_path)
    oracle = load_oracle(tmp_path)
    assert oracle.out_indices == [0, 2, 4]
    with torch.no_grad():
        # Same weights and operations; only the stem's memory layout (see _Stem) can move the last bit,
        # and only for activations such as gelu whose vectorised kernels round differently per layout.
        assert_close_maps(model(pixels()).feature_maps, oracle(pixels()).feature_maps, atol=1e-5)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_match_transformers(name: str) -> None:
    values = torch.linspace(-6, 6, 241)
    ours = _make_activation(name)(values.clone())
    assert (ours - ACT2FN[name](values)).abs().max().item() <= 1e-6


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
    state = load_file(tmp_path / "model.safetensors")
    del state[key]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
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


def test_wrong_channel_count_is_explained() -> None:
    model = AutoBackbone.from_config(ResNetConfig(**TINY))
    with pytest.raises(
        ValueError, match=r"pixel_values has 1 channels but this ResNet expects 3 \(config.num_channels\)"
    ):
        model(torch.zeros(1, 1, 32, 32))


@pytest.mark.slow
def test_resnet50_shapes_at_224() -> None:
    model = AutoBackbone.from_config(ResNetConfig(out_indices=[1, 2, 3, 4])).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [
        (1, 256, 56, 56),
        (1, 512, 28, 28),
        (1, 1024, 14, 14),
        (1, 2048, 7, 7),
    ]
    assert model.channels == [256, 512, 1024, 2048]
    assert model.out_reductions == [4, 8, 16, 32]


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


def test_bad_config_file_names_the_file_and_field(tmp_path: Path) -> None:
    ResNetConfig(**TINY).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(path.read_text().replace('"bottleneck"', '"wide"'))
    with pytest.raises(
        ConfigError, match=r"invalid backbone config in .*config.json: .*layer_type 'wide' is not supported"
    ):
        AutoBackbone.from_pretrained(tmp_path)
