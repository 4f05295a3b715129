"""Tests of backbones-hgnet-v2: the conformance kit, parity with transformers 5.23, behaviour, config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from torch import nn

from backbones import AutoBackbone, ConfigError
from backbones.detection_processing import RTDetrImageProcessor
from backbones.testing import (
    ProcessorParity,
    TransformersParity,
    assert_exports_with_dynamic_size,
    assert_frozen_norm_round_trip,
    randomize_weights_,
)
from backbones.testing.cnn import (
    CNNConformance,
    HeldBackbone,
    SavedModelsHoldingBackbone,
    assert_map_shapes,
    assert_reparameterize_folds_norms,
    build_on_meta_like_transformers,
    detr_detector,
)
from backbones.testing.stages import assert_runs_up_to_deepest_selected_stage
from backbones_hgnet_v2 import VARIANTS, HGNetV2Backbone, HGNetV2Config

# Four stages as the real networks, each feature of the architecture present, a few thousand parameters:
# stage 1 without downsampling, plain blocks in stages 1-2, light (depthwise) blocks in 3-4, two blocks in
# stage 3 (the residual path), an odd kernel other than 3.
SMALL: dict[str, Any] = {
    "stem_channels": [3, 8, 8],
    "stage_in_channels": [8, 16, 16, 24],
    "stage_mid_channels": [8, 8, 8, 8],
    "stage_out_channels": [16, 16, 24, 32],
    "stage_num_blocks": [1, 1, 2, 1],
    "stage_downsample": [False, True, True, True],
    "stage_downsample_strides": [2, 2, 2, 2],
    "stage_light_block": [False, False, True, True],
    "stage_kernel_size": [3, 3, 5, 3],
    "stage_numb_of_layers": [2, 2, 2, 2],
    "depths": [1, 1, 2, 1],
    # What transformers reports as the widths; the real ones here, as in a consistent config.
    "embedding_size": 8,
    "hidden_sizes": [16, 16, 24, 32],
}
TINY: dict[str, Any] = {
    "stem_channels": [3, 8, 8],
    "stage_in_channels": [8, 16, 16],
    "stage_mid_channels": [8, 8, 8],
    "stage_out_channels": [16, 16, 24],
    "stage_num_blocks": [1, 1, 2],
    "stage_downsample": [False, True, True],
    "stage_downsample_strides": [2, 2, 2],
    "stage_light_block": [False, False, True],
    "stage_kernel_size": [3, 3, 3],
    "stage_numb_of_layers": [2, 1, 2],
    "depths": [1, 1, 2],
    "hidden_sizes": [16, 16, 24],
}
ALL_STAGES = [0, 1, 2, 3, 4]


# -- conformance ------------------------------------------------------------------------------------


class _TinyConformance(CNNConformance):
    """Every strided convolution pads by (kernel - 1) // 2 and the stem pads its 2x2 branch: ceil(size / stride)."""

    config_class = HGNetV2Config
    deepest_stride = 16
    # The stem's first convolution reads the image: stem_channels[0] follows num_channels.
    image_channels_field = "stem_channels"


class TestConformance(_TinyConformance):
    config = {**TINY, "use_learnable_affine_block": False}
    channel_error_name = "HGNetV2"
    bad_config_value = ("stage_kernel_size", [3, 3, 2], r"stage_kernel_size\[2\]=2 must be odd")


class TestLearnableAffineConformance(_TinyConformance):
    config = {**TINY, "use_learnable_affine_block": True}
    # The same convolutions, norms and activations plus a scalar multiply-add: the class above's export,
    # ONNX and DDP/FSDP2 checks cover these code paths.
    deployment_checks = False


# -- parity with transformers -----------------------------------------------------------------------


class TestHGNetV2Parity(TransformersParity):
    backbone_class = HGNetV2Backbone
    reference_task_class = "HGNetV2ForImageClassification"
    config = SMALL
    variants = {
        "plain": {},
        # gelu reaches the stem only (the blocks are ReLU in transformers); LAB after every activation.
        "affine-gelu": {"use_learnable_affine_block": True, "hidden_act": "gelu"},
    }
    # 224: the ImageNet training size of HGNetV2's classifiers; 50x38 exercises the ceil rounding.
    input_sizes = ((224, 224), (50, 38))
    batch_size = 1
    out_indices = ((1, 2, 3, 4), (2,), (-1,))
    hidden_state_count = 5
    hidden_state_shapes = ((1, 8, 56, 56), (1, 16, 56, 56), (1, 16, 28, 28), (1, 24, 14, 14), (1, 32, 7, 7))
    task_variants = ("plain", "affine-gelu")
    task_out_indices = (1, 2, 3, 4)
    task_unused_keys = ("fc.bias", "fc.weight")
    round_trip_out_indices = (0, 2, 4)


class TestStridedParity(TestHGNetV2Parity):
    """A downsampling first stage, stride 3 in a stage, a stride-1 stem3 with a stride-2 stem4."""

    variants = {
        "strides": {
            "stage_downsample": [True, True, False, True],
            "stage_downsample_strides": [2, 3, 2, 2],
            "stem_strides": [2, 1, 1, 1, 2],
        },
    }
    out_indices = ((1, 2, 3, 4), (-1,))
    hidden_state_shapes = ((1, 8, 56, 56), (1, 16, 28, 28), (1, 16, 10, 10), (1, 24, 10, 10), (1, 32, 5, 5))
    reference_task_class = ""


def pixels(height: int = 64, width: int = 48, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


def test_strided_variant_reductions() -> None:
    model = HGNetV2Backbone(HGNetV2Config(**{**SMALL, **TestStridedParity.variants["strides"]}))
    assert model.reductions == [4, 8, 24, 24, 48]
    assert model.num_features == [8, 16, 16, 24, 32]


# -- the D-FINE detector's backbone -----------------------------------------------------------------


def _dfine_detector() -> Any:
    """A tiny D-FINE detector on the SMALL HGNetV2 (frozen BatchNorm, as D-FINE trains)."""
    backbone = transformers.HGNetV2Config(**SMALL, use_learnable_affine_block=True, out_indices=[2, 3, 4])
    return detr_detector("DFine", backbone, hidden_expansion=0.5, encoder_layers=1, decoder_n_points=[1, 1, 1])


class TestDFineDetector(SavedModelsHoldingBackbone):
    """D-FINE freezes the backbone's BatchNorm, which then has no num_batches_tracked; ours keeps the counter.
    Outside the prefix: the hybrid encoder, the decoder and the heads. D-FINE's training size, and another."""

    backbone_class = HGNetV2Backbone
    models = {
        "DFineForObjectDetection": HeldBackbone(
            _dfine_detector,
            "model.backbone.model",
            "model.backbone.model.",
            [2, 3, 4],  # the selection saved in backbone_config
            ((640, 640), (96, 64)),
            min_unused=50,
            missing_counters=True,
        ),
    }


class TestHGNetV2ProcessorParity(ProcessorParity):
    """D-FINE checkpoints name RT-DETR's processor (core's family, which this plugin declares for hgnet_v2 folders
    whose preprocessor_config.json names no type)."""

    model_type = "hgnet_v2"
    processor_class = RTDetrImageProcessor
    preprocessor = {"image_processor_type": "RTDetrImageProcessor", "size": {"height": 64, "width": 48}}
    image_sizes = ((37, 53),)
    expected_shape = (1, 3, 64, 48)
    tolerance = 1e-6


# -- transformers' config.json in, ours out ---------------------------------------------------------


def test_transformers_config_json_round_trips(tmp_path: Path) -> None:
    reference = transformers.HGNetV2Config(**SMALL, out_features=["stage2", "stage4"])
    reference.save_pretrained(tmp_path)
    config = HGNetV2Config.from_pretrained(tmp_path)
    assert config.out_features == ["stage2", "stage4"] and config.out_indices == [2, 4]
    assert config.stage_out_channels == SMALL["stage_out_channels"]
    out = tmp_path / "ours"
    config.save_pretrained(out)
    back = transformers.HGNetV2Config.from_pretrained(out)
    assert back.stage_names == config.stage_names
    assert back.out_features == ["stage2", "stage4"]
    for name, value in SMALL.items():
        read = getattr(back, name)
        assert (list(read) if isinstance(value, list) else read) == value, name


def test_freeze_fields_round_trip_through_both_libraries(tmp_path: Path) -> None:
    config = HGNetV2Config(**SMALL, freeze_at=1, freeze_stem_only=False, freeze_norm=True)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["freeze_at"], saved["freeze_stem_only"], saved["freeze_norm"]) == (1, False, True)
    again = HGNetV2Config.from_pretrained(tmp_path)
    assert (again.freeze_at, again.freeze_stem_only, again.freeze_norm) == (1, False, True)
    # transformers keeps them as attributes (the way PP-DocLayout's HGNetV2 configs carry them).
    reference = transformers.HGNetV2Config.from_pretrained(tmp_path)
    assert (reference.freeze_at, reference.freeze_stem_only, reference.freeze_norm) == (1, False, True)


# -- real sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_build_at_real_size(variant: str) -> None:
    fields = {**VARIANTS[variant], "out_indices": [1, 2, 3, 4]}
    model, maps = build_on_meta_like_transformers(HGNetV2Backbone, HGNetV2Config, fields, (640, 640))
    out = fields["stage_out_channels"]
    assert_map_shapes(maps, 1, out, [160, 80, 40, 20])
    assert model.channels == out and model.out_reductions == [4, 8, 16, 32]


def test_default_config_shapes_at_224() -> None:
    with torch.device("meta"):
        model = HGNetV2Backbone(HGNetV2Config(out_indices=[0, 1, 2, 3, 4]))
        maps = model(torch.empty(2, 3, 224, 224)).feature_maps
    assert_map_shapes(maps, 2, [48, 128, 512, 1024, 2048], [56, 56, 28, 14, 7])


# -- behaviour --------------------------------------------------------------------------------------


def test_channels_are_the_real_widths_where_transformers_reports_the_config() -> None:
    # The hub's B0-B3 configs leave embedding_size and hidden_sizes at their defaults; transformers reports
    # those, we report the widths of the maps.
    fields = {**SMALL, "embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048]}
    reference = transformers.HGNetV2Backbone(transformers.HGNetV2Config(**fields, out_indices=[0, 4])).eval()
    model = HGNetV2Backbone(HGNetV2Config(**fields, out_indices=[0, 4])).eval()
    with torch.no_grad():
        maps = reference(pixels()).feature_maps
    assert [fmap.shape[1] for fmap in maps] == model.channels == [8, 32]
    assert reference.channels == [64, 2048]


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = HGNetV2Backbone(HGNetV2Config(**SMALL, use_learnable_affine_block=True))
    block = model.encoder.stages[2].blocks[1]
    norm = block.aggregation[0].normalization
    assert torch.equal(norm.weight, torch.ones(12)) and torch.equal(norm.bias, torch.zeros(12))
    assert torch.equal(norm.running_mean, torch.zeros(12)) and torch.equal(norm.running_var, torch.ones(12))
    lab = block.layers[0].conv2.lab
    assert lab.scale.tolist() == [1.0] and lab.bias.tolist() == [0.0]
    weight = model.embedder.stem3.convolution.weight  # 8 x 16 x 3 x 3
    assert weight.std().item() == pytest.approx(0.02, rel=0.15)


def test_forward_stops_at_the_deepest_requested_stage() -> None:
    model = HGNetV2Backbone(HGNetV2Config(**SMALL, out_indices=[2])).eval()
    assert len(model.encoder.stages) == 4
    assert_runs_up_to_deepest_selected_stage(model, model.encoder.stages, pixels())


@pytest.mark.parametrize(
    ("freeze_at", "stem_only", "frozen"),
    [
        (-1, True, []),
        (-1, False, []),
        (0, True, ["stem"]),
        (3, True, ["stem"]),
        (0, False, ["stem", "stage1"]),
        (2, False, ["stem", "stage1", "stage2", "stage3"]),
        (3, False, ["stem", "stage1", "stage2", "stage3", "stage4"]),
    ],
)
def test_freeze_at_maps_onto_freeze_stages(freeze_at: int, stem_only: bool, frozen: list[str]) -> None:
    config = HGNetV2Config(**SMALL, freeze_at=freeze_at, freeze_stem_only=stem_only)
    model = HGNetV2Backbone(config)
    assert model.frozen_stages == frozen
    expected = HGNetV2Backbone(HGNetV2Config(**SMALL))
    assert expected.freeze_stages(len(frozen)) == frozen
    assert [name for name, p in model.named_parameters() if not p.requires_grad] == [
        name for name, p in expected.named_parameters() if not p.requires_grad
    ]
    model.train()
    assert model.embedder.training == (not frozen)


def test_freeze_norm_is_freeze_batch_norm(tmp_path: Path) -> None:
    reference = randomize_weights_(transformers.HGNetV2Backbone(transformers.HGNetV2Config(**SMALL))).eval()
    reference.save_pretrained(tmp_path)
    assert sum(key.endswith("num_batches_tracked") for key in reference.state_dict()) == 34
    reference.out_indices = ALL_STAGES
    model = assert_frozen_norm_round_trip(
        tmp_path, reference, "HGNetV2Backbone", pixels(), freeze_at=0, out_indices=ALL_STAGES
    )
    assert model.frozen_stages == ["stem"]
    assert model.config.freeze_norm is True


# -- config errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"stage_kernel_size": [3, 3, 4, 3]},
            r"stage_kernel_size\[2\]=4 must be odd: an even kernel shrinks the map",
        ),
        (
            {"stage_mid_channels": [8, 8, 8]},
            r"stage_mid_channels has 3 entries but stage_in_channels has 4; give every stage_\* field one entry",
        ),
        ({"depths": [1, 1, 1]}, r"depths has 3 entries but there are 4 stages \(len\(stage_in_channels\)\)"),
        ({"stage_in_channels": [8, 16, 20, 24]}, r"stage_in_channels\[2\]=20 must equal stage_out_channels\[1\]=16"),
        ({"stage_in_channels": [4, 16, 16, 24]}, r"stage_in_channels\[0\]=4 must equal stem_channels\[2\]=8"),
        ({"stem_strides": [2, 2, 1, 2, 1]}, r"stem_strides\[1\] and stem_strides\[2\] must be 1"),
        ({"stem_strides": [2, 1, 1, 2]}, r"stem_strides must have 5 entries"),
        ({"stem_channels": [1, 8, 8]}, r"stem_channels\[0\]=1 must equal num_channels=3"),
        ({"stage_num_blocks": [1, 0, 1, 1]}, r"stage_num_blocks must be a non-empty list of positive integers"),
        ({"stage_downsample_strides": [2, [2, 1], 2, 2]}, r"stage_downsample_strides\[1\]=\[2, 1\]: only square"),
        ({"freeze_at": 5}, r"freeze_at=5: must be an int between -1 \(freeze nothing\) and 4 \(the stages after"),
        ({"freeze_at": -2}, r"freeze_at=-2: must be an int between -1 .* and 4"),
        ({"hidden_act": "swishy"}, r"hidden_act 'swishy' is not supported"),
    ],
)
def test_bad_configs_name_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HGNetV2Config(**{**SMALL, **overrides})


def test_square_stride_pairs_are_accepted() -> None:
    config = HGNetV2Config(**{**SMALL, "stage_downsample_strides": [2, [2, 2], 2, 2]})
    assert config.stage_downsample_strides == [2, 2, 2, 2]


# -- output stride by dilation ----------------------------------------------------------------------


@pytest.mark.parametrize(("output_stride", "reductions"), [(16, [4, 4, 8, 16, 16]), (8, [4, 4, 8, 8, 8])])
def test_output_stride_dilates_the_last_stages(tmp_path: Path, output_stride: int, reductions: list[int]) -> None:
    randomize_weights_(AutoBackbone.from_config(HGNetV2Config(**SMALL))).save_pretrained(tmp_path)
    model, report = AutoBackbone.from_pretrained(
        tmp_path, output_stride=output_stride, out_indices=ALL_STAGES, output_loading_info=True
    )
    assert (report.missing_keys, report.unused_keys, report.unknown_config_fields) == ([], [], {})
    assert model.reductions == reductions  # known before any forward
    stage4 = model.encoder.stages[3]
    # The downsampling convolution loses its stride and keeps the previous stage's dilation; the blocks'
    # 3x3 depthwise convolutions (light blocks) take the stage's dilation; 1x1 convolutions are unchanged.
    first, dilation = (1, 2) if output_stride == 16 else (2, 4)
    assert (stage4.downsample.convolution.stride, stage4.downsample.convolution.dilation) == ((1, 1), (first, first))
    light = stage4.blocks[0].layers[0]
    assert (light.conv1.convolution.dilation, light.conv2.convolution.dilation) == ((1, 1), (dilation, dilation))
    assert light.conv2.convolution.padding == (dilation, dilation)
    for height, width in [(64, 48), (50, 38)]:
        with torch.no_grad():
            maps = model.eval()(pixels(height=height, width=width)).feature_maps
        # The stem and every strided depthwise convolution pad by one pixel: sizes are ceil(size / stride).
        assert [tuple(fmap.shape[2:]) for fmap in maps] == [(-(-height // r), -(-width // r)) for r in reductions]


def test_output_stride_lists_the_valid_values() -> None:
    with pytest.raises(ConfigError, match=r"output_stride=2: output_stride must be one of \[8, 16, 32\]"):
        HGNetV2Config(**SMALL, output_stride=2)
    with pytest.raises(ConfigError, match=r"output_stride=8 is below the stem's stride 16"):
        HGNetV2Config(**{**SMALL, "stem_strides": [2, 1, 1, 2, 4]}, output_stride=8)


# -- reparameterisation -----------------------------------------------------------------------------


@pytest.mark.parametrize("affine", [False, True])
def test_reparameterize_folds_every_batch_norm(affine: bool) -> None:
    config = HGNetV2Config(**SMALL, use_learnable_affine_block=affine, out_indices=ALL_STAGES)
    model = randomize_weights_(AutoBackbone.from_config(config)).eval()
    affines = [name for name, _ in model.named_parameters() if name.endswith(".lab.scale")]
    assert len(affines) == (25 if affine else 0)
    inputs = [pixels(height=height, width=width) for height, width in [(64, 48), (45, 71)]]
    assert_reparameterize_folds_norms(model, (nn.BatchNorm2d,), inputs)
    # The learnable affines follow an activation: they stay.
    assert [name for name, _ in model.named_parameters() if name.endswith(".lab.scale")] == affines


def test_folded_dilated_model_exports_with_dynamic_size() -> None:
    config = HGNetV2Config(**SMALL, output_stride=8, use_learnable_affine_block=True, out_indices=ALL_STAGES)
    model = randomize_weights_(AutoBackbone.from_config(config)).eval()
    model.reparameterize()
    inputs = [pixels(height=height, width=width) for height, width in [(64, 48), (45, 71)]]
    assert_exports_with_dynamic_size(model, pixels(), inputs, size_range=(17, 1024), scaled=True)
