"""Tests of backbones-resnet: the conformance kit, parity with transformers 5.23, behaviour, config errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from transformers.activations import ACT2FN

from backbones import AutoBackbone, ConfigError, testing
from backbones.layers import FrozenBatchNorm2d
from backbones.testing import (
    TransformersParity,
    assert_close_maps,
    assert_exports_with_dynamic_size,
    assert_parity,
    randomize_weights_,
)
from backbones.testing.cnn import (
    SMALL_CNN,
    TINY_CNN,
    CNNConformance,
    ConfigRefusals,
    assert_refuses_unlisted_choice,
    assert_reparameterize_folds_norms,
    assert_same_maps_at_sizes,
    dilated_backbone,
    map_shapes,
    stage_list_refusals,
)
from backbones.testing.stages import assert_runs_up_to_deepest_selected_stage
from backbones_resnet import ResNetBackbone, ResNetConfig
from backbones_resnet._config import ACTIVATIONS
from backbones_resnet.blocks import _make_activation

TINY: dict[str, Any] = {"embedding_size": 8, **TINY_CNN}
SMALL: dict[str, Any] = {"embedding_size": 8, **SMALL_CNN}
ALL_STAGES = [0, 1, 2, 3, 4]


# -- conformance ------------------------------------------------------------------------------------


class _TinyResNetConformance(CNNConformance):
    """Every stride-2 convolution and the max-pool pad by kernel // 2, so each halving is ceil(size / 2)."""

    config_class = ResNetConfig
    deepest_stride = 16
    channel_error_name = "ResNet"
    bad_config_value = ("layer_type", "wide", r"layer_type 'wide' is not supported")


class TestBasicConformance(_TinyResNetConformance):
    config = {**TINY, "layer_type": "basic"}
    # The same operations as bottleneck blocks (convolution, BatchNorm, ReLU, residual add), only fewer
    # of them: the bottleneck class's export, ONNX and DDP/FSDP2 checks cover this code path.
    deployment_checks = False


class TestBottleneckConformance(_TinyResNetConformance):
    config = {**TINY, "layer_type": "bottleneck"}


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
    assert_runs_up_to_deepest_selected_stage(model, model.encoder.stages, pixels())


@pytest.mark.slow
def test_resnet50_shapes_at_224() -> None:
    testing.assert_maps_at_size(
        ResNetConfig(out_indices=[1, 2, 3, 4]), map_shapes(1, [256, 512, 1024, 2048], [56, 28, 14, 7])
    )


# -- config errors ----------------------------------------------------------------------------------


def test_unknown_layer_type_lists_the_valid_ones() -> None:
    assert_refuses_unlisted_choice(ResNetConfig, "layer_type", "wide", ["basic", "bottleneck"], "bottleneck")


class TestResNetConfigRefusals(ConfigRefusals):
    config_class = ResNetConfig
    refusals = stage_list_refusals("relu")


# -- output stride by dilation ----------------------------------------------------------------------

# timm's ResNet with the same layout: a 64-wide 7x7 stem, bottleneck middles of a quarter of the output.
TIMM_LIKE: dict[str, Any] = {"embedding_size": 64, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 2, 2, 2]}


def _timm_resnet_key(key: str) -> str:
    """Our ResNet key as timm's ``ResNet`` names it (``conv1``/``bn1`` stem, ``layerN.B.convK``/``bnK``,
    ``downsample.0``/``.1``)."""
    if key.startswith("embedder.embedder."):
        part, leaf = key.removeprefix("embedder.embedder.").split(".", 1)
        return ("conv1." if part == "convolution" else "bn1.") + leaf
    _, _, stage, _, block, rest = key.split(".", 5)
    prefix = f"layer{int(stage) + 1}.{block}."
    if rest.startswith("shortcut."):
        part, leaf = rest.removeprefix("shortcut.").split(".", 1)
        return prefix + ("downsample.0." if part == "convolution" else "downsample.1.") + leaf
    _, index, part, leaf = rest.split(".", 3)
    return prefix + ("conv" if part == "convolution" else "bn") + f"{int(index) + 1}.{leaf}"


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_output_stride_matches_timm(output_stride: int) -> None:
    timm = pytest.importorskip("timm")
    model = dilated_backbone(ResNetConfig(**TIMM_LIKE, output_stride=output_stride, out_indices=[1, 2, 3, 4]))
    reference = timm.create_model(
        "resnet50",
        pretrained=False,
        layers=[1, 2, 2, 2],
        channels=(4, 8, 16, 32),
        output_stride=output_stride,
        features_only=True,
        out_indices=(1, 2, 3, 4),
    ).eval()
    assert reference.feature_info.reduction() == model.reductions[1:]
    state = {_timm_resnet_key(key): value for key, value in model.state_dict().items()}
    reference.load_state_dict(state, strict=True)
    sizes = [(64, 64), (50, 38)]
    for (height, width), ours in zip(
        sizes, assert_same_maps_at_sizes(lambda x: model(x).feature_maps, reference, sizes)
    ):
        assert [tuple(fmap.shape[2:]) for fmap in ours] == [
            (math.ceil(height / r), math.ceil(width / r)) for r in model.reductions[1:]
        ]


def test_output_stride_loads_the_same_weights(tmp_path: Path) -> None:
    randomize_weights_(AutoBackbone.from_config(ResNetConfig(**SMALL))).save_pretrained(tmp_path)
    model, report = AutoBackbone.from_pretrained(tmp_path, output_stride=8, output_loading_info=True)
    assert (report.missing_keys, report.unused_keys, report.unknown_config_fields) == ([], [], {})
    assert model.reductions == [4, 4, 8, 8, 8]
    blocks = model.encoder.stages[3].layers
    # Stage 4 dilates by 4; its first block keeps stage 3's dilation (2) on its 3x3 convolution.
    assert [block.layer[1].convolution.dilation for block in blocks] == [(2, 2)]
    assert [block.layer[1].convolution.dilation for block in model.encoder.stages[2].layers] == [(1, 1)]


def test_output_stride_with_downsampling_first_stage() -> None:
    # 32 dilates nothing (stride 64 as in transformers); 16 caps every later stage.
    for output_stride, reductions in [(32, [4, 8, 16, 32, 64]), (16, [4, 8, 16, 16, 16])]:
        config = ResNetConfig(**SMALL, downsample_in_first_stage=True, output_stride=output_stride)
        assert AutoBackbone.from_config(config).reductions == reductions


def test_output_stride_round_trips_and_transformers_reads_it(tmp_path: Path) -> None:
    import transformers

    config = ResNetConfig(**SMALL, output_stride=16)
    config.save_pretrained(tmp_path)
    assert ResNetConfig.from_pretrained(tmp_path).output_stride == 16
    theirs = transformers.ResNetConfig.from_pretrained(tmp_path)
    assert (theirs.hidden_sizes, theirs.output_stride) == ([8, 16, 24, 32], 16)


@pytest.mark.parametrize("value", [4, 12, 64])
def test_output_stride_lists_the_valid_values(value: int) -> None:
    with pytest.raises(
        ConfigError, match=rf"output_stride={value}: output_stride must be one of \[8, 16, 32\] .*got {value}"
    ):
        ResNetConfig(output_stride=value)


# -- reparameterisation -----------------------------------------------------------------------------


@pytest.mark.parametrize("layer_type", ["basic", "bottleneck"])
def test_reparameterize_folds_every_batch_norm(layer_type: str) -> None:
    config = ResNetConfig(**SMALL, layer_type=layer_type, output_stride=16, out_indices=ALL_STAGES)
    model = randomize_weights_(AutoBackbone.from_config(config)).eval()
    inputs = [pixels(height=height, width=width) for height, width in [(56, 40), (33, 47)]]
    assert_reparameterize_folds_norms(model, (torch.nn.BatchNorm2d,), inputs)  # one ConvNormLayer per BatchNorm


def test_reparameterize_folds_frozen_batch_norms() -> None:
    model = randomize_weights_(AutoBackbone.from_config(ResNetConfig(**TINY, out_indices=[3]))).eval()
    model.freeze_batch_norm()
    with torch.no_grad():
        expected = model(pixels()).feature_maps
        model.reparameterize()
        assert not any(isinstance(module, FrozenBatchNorm2d) for module in model.modules())
        assert_parity(model(pixels()).feature_maps, expected, tolerance=1e-5)


def test_folded_model_exports_with_dynamic_size_and_to_onnx(tmp_path: Path) -> None:
    config = ResNetConfig(**SMALL, output_stride=8, out_indices=ALL_STAGES)
    model = randomize_weights_(AutoBackbone.from_config(config)).eval()
    model.reparameterize()
    inputs = [pixels(height=height, width=width) for height, width in [(56, 40), (33, 71)]]
    assert_exports_with_dynamic_size(model, pixels(), inputs, size_range=(17, 1024), onnx_path=tmp_path / "model.onnx")
