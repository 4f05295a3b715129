"""Tests of the pp_lcnet_v4 model type: the conformance kit, parity with transformers 5.23 (the backbone and the
PP-OCRv6 detector and recogniser that hold it), real sizes, config errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers

from backbones.testing import TransformersParity, random_pixels
from backbones.testing.cnn import (
    CNNConformance,
    ConfigRefusals,
    HeldBackbone,
    SavedModelsHoldingBackbone,
    assert_config_json_round_trips,
    assert_map_shapes,
    assert_same_state_shapes,
    with_height_only_strides,
)
from backbones_pp_lcnet import PPLCNetV4Backbone, PPLCNetV4Config

# Four stages as the real network: blocks that keep their shape (plain depthwise token mixer with bias, residual)
# and blocks that stride or widen (depthwise conv-BN, no residual), squeeze-excitation, a 5x5 kernel.
BLOCKS: list[list[list[Any]]] = [
    [[3, 16, 16, 1, True]],
    [[3, 16, 24, 2, False], [3, 24, 24, 1, False]],
    [[5, 24, 32, 2, False], [3, 32, 32, 1, True]],
    [[3, 32, 40, 2, False]],
]
SMALL: dict[str, Any] = {"stem_channels": [3, 8, 16], "block_configs": BLOCKS}
# PP-OCRv6's layout: the last two stages halve the height only.
REC_BLOCKS = with_height_only_strides(BLOCKS, (2, 3))
ALL_STAGES = [0, 1, 2, 3, 4]
OCR_PREFIX = "model.backbone."


# -- conformance ------------------------------------------------------------------------------------


class _Conformance(CNNConformance):
    """Every strided layer pads (the stem's 2x2 branch pads right and bottom): ceil(size / stride)."""

    config_class = PPLCNetV4Config
    deepest_stride = 32
    channel_error_name = "PP-LCNetV4"
    bad_config_value = ("stem_type", "medium", r"stem_type='medium': Input should be 'large' or 'small'")
    image_channels_field = "stem_channels"


class TestConformance(_Conformance):
    config = {**SMALL, "use_learnable_affine_block": True}


class TestSmallStemConformance(_Conformance):
    config = {**SMALL, "stem_type": "small"}
    # The same blocks, conv-BN layers and GELU as the class above: its export, ONNX and DDP/FSDP2 checks cover them.
    deployment_checks = False


# -- parity with transformers -----------------------------------------------------------------------


class TestPPLCNetV4Parity(TransformersParity):
    backbone_class = PPLCNetV4Backbone
    config = SMALL
    variants = {
        "large": {},
        "large-affine-hardswish": {"use_learnable_affine_block": True, "hidden_act": "hardswish"},
        "small": {"stem_type": "small"},
    }
    # 640: PP-OCRv6's detection size; 50x38 exercises the ceil rounding.
    input_sizes = ((640, 640), (50, 38))
    batch_size = 1
    out_indices = ((1, 2, 3, 4), (2,), (-1,), (0, 1, 2, 3, 4))
    selection_variants = ("large",)
    hidden_state_count = 5
    round_trip_out_indices = (1, 2, 4)  # transformers reports its stem_channels list as the stem's width


class TestRecognitionParity(TestPPLCNetV4Parity):
    """PP-OCRv6's recognition layout (height-only strides) at the recogniser's 48x320 input."""

    variants = {"rec": {"block_configs": REC_BLOCKS}}
    input_sizes = ((48, 320), (32, 100))
    out_indices = ((1, 2, 3, 4), (-1,))
    hidden_state_shapes = ((1, 16, 12, 80), (1, 16, 12, 80), (1, 24, 6, 40), (1, 32, 3, 40), (1, 40, 2, 40))
    round_trip_variants = ("rec",)


class TestStemStridesParity(TestRecognitionParity):
    """A [height, width] stride in the stem (stem3 at [3, 1])."""

    variants = {"rec-stem-strides": {"block_configs": REC_BLOCKS, "stem_strides": [2, 1, 1, [3, 1], 1]}}
    out_indices = ((1, 2, 3, 4),)
    hidden_state_shapes = ((1, 16, 8, 160), (1, 16, 8, 160), (1, 24, 4, 80), (1, 32, 2, 80), (1, 40, 1, 80))
    round_trip_variants = ("rec-stem-strides",)


def test_default_config_is_the_recognition_layout() -> None:
    model = PPLCNetV4Backbone(PPLCNetV4Config(out_indices=ALL_STAGES)).eval()
    assert model.reductions_hw == [(4, 4), (4, 4), (4, 4), (8, 4), (16, 4)]
    assert model.reductions == [4, 4, 4, 8, 16]
    assert model.channels == [96, 96, 96, 192, 384]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 48, 320)).feature_maps
    assert_map_shapes(maps, 1, [96, 96, 96, 192, 384], [(12, 80), (12, 80), (12, 80), (6, 80), (3, 80)])
    assert_same_state_shapes(
        model, transformers.PPLCNetV4Backbone(transformers.PPLCNetV4Config(out_indices=ALL_STAGES))
    )


# -- the PP-OCRv6 models' backbone ------------------------------------------------------------------


def _detector() -> Any:
    backbone = transformers.PPLCNetV4Config(**SMALL, out_indices=[1, 2, 3, 4])
    config = transformers.PPOCRV6SmallDetConfig(
        backbone_config=backbone, layer_list_out_channels=[16, 24, 32, 40], neck_out_channels=16
    )
    return transformers.PPOCRV6SmallDetForObjectDetection(config)


def _recogniser() -> Any:
    backbone = transformers.PPLCNetV4Config(**{**SMALL, "block_configs": REC_BLOCKS}, out_indices=[4])
    config = transformers.PPOCRV6TinyRecConfig(backbone_config=backbone, hidden_size=16, head_out_channels=10)
    return transformers.PPOCRV6TinyRecForTextRecognition(config)


class TestOCRModels(SavedModelsHoldingBackbone):
    """Outside the prefix: the neck and the head. The selection is the one saved in backbone_config."""

    backbone_class = PPLCNetV4Backbone
    models = {
        "PPOCRV6SmallDetForObjectDetection": HeldBackbone(
            _detector, "model.backbone", OCR_PREFIX, [1, 2, 3, 4], ((640, 640), (64, 48)), 10
        ),
        "PPOCRV6TinyRecForTextRecognition": HeldBackbone(
            _recogniser, "model.backbone", OCR_PREFIX, [4], ((48, 320), (32, 100)), 10
        ),
    }


# -- transformers' config.json in, ours out ---------------------------------------------------------


def test_transformers_config_json_round_trips(tmp_path: Path) -> None:
    fields = {**SMALL, "stem_type": "small", "use_learnable_affine_block": True}
    _, back = assert_config_json_round_trips(PPLCNetV4Config, "PPLCNetV4Config", fields, ["stage2", "stage4"], tmp_path)
    assert back.stage_out_channels == [16, 24, 32, 40]


# -- config errors ----------------------------------------------------------------------------------


class TestPPLCNetV4ConfigRefusals(ConfigRefusals):
    config_class = PPLCNetV4Config
    config = SMALL
    refusals = (
        ({"stem_type": "medium"}, r"stem_type='medium': Input should be 'large' or 'small'"),
        ({"block_configs": BLOCKS[:3]}, r"block_configs must have 4 stages \(one list of blocks each\), got 3"),
        ({"stem_channels": [3, 8, 24]}, r"block_configs\[0\]\[0\]: in_channels=16 must equal stem_channels\[2\]=24"),
        ({"stem_channels": [1, 8, 16]}, r"stem_channels\[0\]=1 must equal num_channels=3"),
        ({"stem_channels": [3, 16]}, r"stem_channels must be \[input, middle, output\]"),
        ({"stem_channels": [3, 1, 16]}, r"stem_channels\[1\]=1 must be at least 2 with stem_type='large'"),
        ({"stem_strides": [2, 2, 1, 2, 1]}, r"stem_strides\[1\] and stem_strides\[2\] must be 1"),
        ({"stem_strides": [2, 1, 1, 2]}, r"stem_strides must have 5 entries"),
        (
            {"stem_strides": [2, 1, 1, [2, 0], 1]},
            r"stem_strides\[3\]=\[2, 0\] must be a positive int or a \[height, width\]",
        ),
        ({"scale": 0}, r"scale=0 must be a positive number \(transformers multiplies the widths it reports by it\)"),
        ({"reduction": 0}, r"reduction=0 must be a positive int"),
        ({"reduction": 64}, r"block_configs\[0\]\[0\]: its squeeze-excitation squeezes 16 channels by reduction=64"),
    )


def test_small_stem_accepts_any_middle_width() -> None:
    config = PPLCNetV4Config(**{**SMALL, "stem_channels": [3, 1, 16], "stem_type": "small"})
    model = PPLCNetV4Backbone(config).eval()
    with torch.no_grad():
        assert model(random_pixels(64, 48)).feature_maps[0].shape == (2, 40, 2, 2)
