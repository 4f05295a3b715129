"""Tests of the pp_lcnet_v3 model type: the conformance kit, parity with transformers 5.23 (the backbone and the
PP-OCRv5 mobile detector and recogniser that hold it), real sizes, config errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import transformers

from backbones.testing import TransformersParity, assert_maps_at_size
from backbones.testing.cnn import (
    CNNConformance,
    ConfigRefusals,
    HeldBackbone,
    SavedModelsHoldingBackbone,
    assert_config_file_refused,
    assert_config_json_round_trips,
    assert_map_shapes,
    build_on_meta_like_transformers,
    map_shapes,
    with_height_only_strides,
)
from backbones_pp_lcnet import SCALES, PPLCNetV3Backbone, PPLCNetV3Config

BLOCKS: list[list[list[Any]]] = [
    [[3, 8, 8, 1, False]],
    [[3, 8, 16, 2, False]],
    [[3, 16, 16, 2, False], [5, 16, 16, 1, False]],
    [[3, 16, 24, 2, True]],
    [[5, 24, 32, 2, True], [3, 32, 32, 1, False]],
]
# Five stages as the real network: 3x3 and 5x5 depthwise layers with and without the identity branch, pointwise
# layers that keep or change the width, squeeze-excitation, two k x k branches per layer.
SMALL: dict[str, Any] = {"stem_channels": 8, "block_configs": BLOCKS, "conv_symmetric_num": 2}
# PP-OCRv5's recogniser halves only the height in its last stages.
REC_BLOCKS = with_height_only_strides(BLOCKS, (3, 4))
ALL_STAGES = [0, 1, 2, 3, 4, 5]
DETECTOR_PREFIX = "model.backbone."


# -- conformance ------------------------------------------------------------------------------------


class TestConformance(CNNConformance):
    """Every convolution pads by kernel // 2: a stage of stride s is ceil(size / s) wide."""

    config_class = PPLCNetV3Config
    config = SMALL
    deepest_stride = 32
    channel_error_name = "PP-LCNetV3"
    bad_config_value = ("conv_symmetric_num", 0, r"conv_symmetric_num=0 must be at least 1")


# -- parity with transformers -----------------------------------------------------------------------


class TestPPLCNetV3Parity(TransformersParity):
    backbone_class = PPLCNetV3Backbone
    config = SMALL
    variants = {
        "plain": {},
        # One k x k branch, ReLU, and PP-OCRv5's divisor of 16 (8 -> 16 wide).
        "one-branch-relu-divisor16": {"conv_symmetric_num": 1, "hidden_act": "relu", "divisor": 16},
    }
    # 640: PP-OCRv5's detection size; 50x38 exercises the ceil rounding.
    input_sizes = ((640, 640), (50, 38))
    batch_size = 1
    out_indices = ((1, 2, 3, 4), (2,), (-1,), (0, 1, 2, 3, 4, 5))
    selection_variants = ("plain",)
    hidden_state_count = 6
    round_trip_out_indices = (0, 2, 5)
    round_trip_variants = ("plain",)  # transformers reports stem_channels as the stem's width, not 16


class TestRecognitionParity(TestPPLCNetV3Parity):
    """The recogniser's layout: height-only strides in the last two stages, at its 48x320 input."""

    variants = {"rec": {"block_configs": REC_BLOCKS}}
    input_sizes = ((48, 320), (32, 100))
    out_indices = ((1, 2, 3, 4), (-1,))
    hidden_state_shapes = map_shapes(
        1, [8, 8, 16, 16, 24, 32], [(24, 160), (24, 160), (12, 80), (6, 40), (3, 40), (2, 40)]
    )
    round_trip_variants = ("rec",)


def test_unrun_affine_of_a_strided_layer_is_kept_but_not_trained() -> None:
    # transformers' stride-2 layers hold an activation affine they never run; its keys load and save, untrained.
    model = PPLCNetV3Backbone(PPLCNetV3Config(**SMALL))
    layer = model.encoder.blocks[1].layers[0].depthwise_convolution
    assert not layer.activated
    assert [name for name, _ in layer.act.named_buffers()] == ["lab.scale", "lab.bias"]
    assert list(layer.act.parameters()) == []
    key = "encoder.blocks.1.layers.0.depthwise_convolution.act.lab.scale"
    assert key in model.state_dict() and key not in dict(model.named_parameters())


def test_recognition_reductions() -> None:
    model = PPLCNetV3Backbone(PPLCNetV3Config(**{**SMALL, "block_configs": REC_BLOCKS}))
    assert model.reductions_hw == [(2, 2), (2, 2), (4, 4), (8, 8), (16, 8), (32, 8)]
    assert model.reductions == [2, 2, 4, 8, 16, 32]


# -- the PP-OCRv5 models' backbone ------------------------------------------------------------------


def _detector() -> Any:
    backbone = transformers.PPLCNetV3Config(**SMALL, out_indices=[2, 3, 4, 5])
    config = transformers.PPOCRV5MobileDetConfig(backbone_config=backbone, neck_out_channels=16)
    return transformers.PPOCRV5MobileDetForObjectDetection(config)


def _recogniser() -> Any:
    backbone = transformers.PPLCNetV3Config(**{**SMALL, "block_configs": REC_BLOCKS}, out_indices=[5])
    config = transformers.PPOCRV5MobileRecConfig(
        backbone_config=backbone, hidden_size=16, head_out_channels=10, num_attention_heads=2, depth=1
    )
    return transformers.PPOCRV5MobileRecForTextRecognition(config)


class TestOCRModels(SavedModelsHoldingBackbone):
    """Outside the prefix: the neck and the head. The selection is the one saved in backbone_config."""

    backbone_class = PPLCNetV3Backbone
    models = {
        "PPOCRV5MobileDetForObjectDetection": HeldBackbone(
            _detector, "model.backbone", DETECTOR_PREFIX, [2, 3, 4, 5], ((640, 640), (64, 48)), 10
        ),
        "PPOCRV5MobileRecForTextRecognition": HeldBackbone(
            _recogniser, "model.backbone", DETECTOR_PREFIX, [5], ((48, 320), (32, 100)), 10
        ),
    }


# -- transformers' config.json in, ours out ---------------------------------------------------------


def test_transformers_config_json_round_trips(tmp_path: Path) -> None:
    fields = {**SMALL, "scale": 0.75, "divisor": 16}
    assert_config_json_round_trips(PPLCNetV3Config, "PPLCNetV3Config", fields, ["stage2", "stage5"], tmp_path)


# -- real sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "divisor"), [(scale, 8) for scale in SCALES] + [(0.75, 16)])
def test_every_scale_builds_at_real_size(scale: float, divisor: int) -> None:
    options = {"scale": scale, "divisor": divisor, "out_indices": ALL_STAGES}
    model, maps = build_on_meta_like_transformers(PPLCNetV3Backbone, PPLCNetV3Config, options, (640, 640))
    # The real widths, read off the BatchNorms: the stem's, and each stage's last pointwise branch's.
    state = model.state_dict()
    pointwise = "pointwise_convolution.conv_symmetric.0.normalization.weight"
    widths = [state["encoder.convolution.normalization.weight"].shape[0]] + [
        state[f"encoder.blocks.{stage}.layers.{depth - 1}.{pointwise}"].shape[0]
        for stage, depth in enumerate((1, 2, 2, 5, 4))
    ]
    assert_map_shapes(maps, 1, widths, [320, 320, 160, 80, 40, 20])
    assert model.channels == widths


def test_default_config_shapes_at_640() -> None:
    shapes = map_shapes(1, [16, 32, 64, 128, 256, 512], [320, 320, 160, 80, 40, 20])
    model = assert_maps_at_size(PPLCNetV3Config(out_indices=ALL_STAGES), shapes, size=640)
    assert type(model) is PPLCNetV3Backbone


# -- config errors ----------------------------------------------------------------------------------


class TestPPLCNetV3ConfigRefusals(ConfigRefusals):
    config_class = PPLCNetV3Config
    config = SMALL
    refusals = (
        ({"conv_symmetric_num": 0}, r"conv_symmetric_num=0 must be at least 1: a pointwise layer"),
        ({"scale": 0.0}, r"scale=0.0 must be a positive number \(the width multiplier"),
        ({"scale": "big"}, r"scale='big' must be a positive number"),
        ({"block_configs": BLOCKS[:3]}, r"block_configs must have 5 stages \(one list of blocks each\), got 3"),
        (
            {"stem_channels": 16},
            r"block_configs\[0\]\[0\]: in_channels=8 is 8 channels .* but stem_channels=16 gives 16",
        ),
        ({"divisor": -8}, r"divisor=-8 must be a positive int"),
    )


def test_bad_config_file_names_the_file_and_field(tmp_path: Path) -> None:
    def zero_stride(data: dict[str, Any]) -> None:
        data["block_configs"][4][0][3] = [2, 0]

    message = r"config.json: .*block_configs\[4\]\[0\]: stride=\[2, 0\] must be a positive"
    assert_config_file_refused(PPLCNetV3Config(**SMALL), zero_stride, message, tmp_path)
