"""Tests of the pp_lcnet model type: the conformance kit, parity with transformers 5.23, real sizes, config errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from backbones.testing import (
    TransformersParity,
    assert_maps_at_size,
    assert_nested_checkpoint,
    assert_parity,
    random_pixels,
    randomize_weights_,
)
from backbones.testing.cnn import (
    CNNConformance,
    ConfigRefusals,
    assert_config_file_refused,
    assert_config_json_round_trips,
    assert_map_shapes,
    build_on_meta_like_transformers,
    map_shapes,
    save_randomized,
    with_height_only_strides,
)
from backbones.testing.stages import assert_runs_up_to_deepest_selected_stage
from backbones_pp_lcnet import SCALES, PPLCNetBackbone, PPLCNetConfig

# Five stages as the real network, a few thousand parameters: a 5x5 kernel, squeeze-excitation in the last two
# stages, a stage that keeps the width, strides 1 and 2.
SMALL: dict[str, Any] = {
    "stem_channels": 8,
    "block_configs": [
        [[3, 8, 8, 1, False]],
        [[3, 8, 16, 2, False]],
        [[3, 16, 16, 2, False], [5, 16, 16, 1, False]],
        [[3, 16, 24, 2, True]],
        [[5, 24, 32, 2, True], [3, 32, 32, 1, False]],
    ],
}
ALL_STAGES = [0, 1, 2, 3, 4, 5]


# -- conformance ------------------------------------------------------------------------------------


class TestConformance(CNNConformance):
    """Every convolution pads by kernel // 2: a stage of stride s is ceil(size / s) wide."""

    config_class = PPLCNetConfig
    config = SMALL
    deepest_stride = 32
    channel_error_name = "PP-LCNet"
    bad_config_value = ("scale", 0, r"scale=0 must be a positive number")


# -- parity with transformers -----------------------------------------------------------------------


class TestPPLCNetParity(TransformersParity):
    backbone_class = PPLCNetBackbone
    reference_task_class = "PPLCNetForImageClassification"
    config = SMALL
    # 224: the ImageNet training size of the PP-LCNet classifiers; 50x38 exercises the ceil rounding.
    input_sizes = ((224, 224), (50, 38))
    batch_size = 1
    out_indices = ((1, 2, 3, 4), (2,), (-1,), (0, 1, 2, 3, 4, 5))
    hidden_state_count = 6
    hidden_state_shapes = map_shapes(1, [8, 8, 16, 16, 24, 32], [112, 112, 56, 28, 14, 7])
    task_out_indices = (1, 2, 3, 4)
    task_unused_keys = ("head.bias", "head.weight", "last_convolution.weight")
    round_trip_out_indices = (0, 2, 5)


class TestScaledParity(TestPPLCNetParity):
    """A width multiplier whose widths round (x0.75: 6 -> 8, 12 -> 16, 18 -> 24), ReLU, a stride-1 stem."""

    variants = {"scaled-relu": {"scale": 0.75, "hidden_act": "relu", "stem_stride": 1}}
    out_indices = ((1, 2, 3, 4), (-1,))
    hidden_state_shapes = map_shapes(1, [8, 8, 16, 16, 24, 24], [224, 224, 112, 56, 28, 14])
    # transformers reports int(width * scale) as the channels of a saved model, not the maps' widths.
    reference_reports_channels = False


def test_scaled_channels_are_the_real_widths() -> None:
    # transformers reports [stem_channels, int(out_channels * scale), ...]; the maps have the rounded widths.
    options = {**SMALL, "scale": 0.35, "out_indices": ALL_STAGES}
    reference = transformers.PPLCNetBackbone(transformers.PPLCNetConfig(**options)).eval()
    model = PPLCNetBackbone(PPLCNetConfig(**options)).eval()
    with torch.no_grad():
        maps = reference(random_pixels(64, 48)).feature_maps
    assert [fmap.shape[1] for fmap in maps] == model.channels == [8, 8, 8, 8, 8, 16]
    assert reference.channels == [8, 2, 5, 5, 8, 11]


# -- SLANet's backbone --------------------------------------------------------------------------------

SLANET_PREFIX = "backbone.vision_backbone."


@pytest.fixture(scope="module")
def slanet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A small SLANet table recogniser on a PP-LCNet, randomised and saved by transformers."""
    backbone = transformers.PPLCNetConfig(**SMALL, out_indices=[2, 3, 4, 5])
    config = transformers.SLANetConfig(backbone_config=backbone, out_channels=12, hidden_size=16, max_text_length=4)
    directory = tmp_path_factory.mktemp("slanet")
    return save_randomized(transformers.SLANetForTableRecognition(config), directory), directory


def test_slanet_checkpoint_loads_with_prefix(slanet_checkpoint: tuple[Any, Path]) -> None:
    table_model, directory = slanet_checkpoint
    # Outside the prefix: the CSP-PAN neck and the table head. SLANet's training size, and another.
    assert_nested_checkpoint(
        directory,
        table_model.backbone.vision_backbone,
        SLANET_PREFIX,
        backbone_class=PPLCNetBackbone,
        out_indices=[2, 3, 4, 5],  # the selection saved in backbone_config
        input_sizes=((488, 488), (64, 48)),
        min_unused=20,
    )


# -- transformers' config.json in, ours out ---------------------------------------------------------


def test_transformers_config_json_round_trips(tmp_path: Path) -> None:
    fields = {**SMALL, "scale": 0.5, "divisor": 4}
    _, back = assert_config_json_round_trips(PPLCNetConfig, "PPLCNetConfig", fields, ["stage2", "stage5"], tmp_path)
    assert back.depths == [1, 1, 2, 1, 2]


# -- real sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
def test_every_published_scale_builds_at_real_size(scale: float) -> None:
    fields = {"scale": scale, "out_indices": ALL_STAGES}
    model, maps = build_on_meta_like_transformers(PPLCNetBackbone, PPLCNetConfig, fields, (224, 224))
    # The real widths, read off transformers' BatchNorms: the stem's, and each stage's last pointwise one.
    state = model.state_dict()
    widths = [state["encoder.convolution.normalization.weight"].shape[0]] + [
        state[f"encoder.blocks.{stage}.layers.{depth - 1}.pointwise_convolution.normalization.weight"].shape[0]
        for stage, depth in enumerate((1, 2, 2, 6, 2))
    ]
    assert_map_shapes(maps, 1, widths, [112, 112, 56, 28, 14, 7])
    assert model.channels == widths and model.out_reductions == [2, 2, 4, 8, 16, 32]


def test_default_config_shapes_at_224() -> None:
    shapes = map_shapes(1, [16, 32, 64, 128, 256, 512], [112, 112, 56, 28, 14, 7])
    model = assert_maps_at_size(PPLCNetConfig(out_indices=ALL_STAGES), shapes)
    assert type(model) is PPLCNetBackbone
    # The trunk of PP-LCNet x1.0 (the paper's 3.0M parameters include the 1280-wide head and classifier).
    assert sum(parameter.numel() for parameter in model.parameters()) == 1_016_160


# -- behaviour --------------------------------------------------------------------------------------


def test_forward_stops_at_the_deepest_requested_stage() -> None:
    model = PPLCNetBackbone(PPLCNetConfig(**SMALL, out_indices=[2])).eval()
    assert_runs_up_to_deepest_selected_stage(model, model.encoder.blocks, random_pixels(64, 48))


def test_rectangular_strides_halve_the_height_only() -> None:
    blocks = with_height_only_strides(SMALL["block_configs"], (3, 4))
    options = {**SMALL, "block_configs": blocks, "out_indices": ALL_STAGES}
    model = PPLCNetBackbone(PPLCNetConfig(**options)).eval()
    reference = randomize_weights_(transformers.PPLCNetBackbone(transformers.PPLCNetConfig(**options))).eval()
    model.load_state_dict(reference.state_dict())
    batch = random_pixels(32, 96)
    with torch.no_grad():
        maps = model(batch).feature_maps
        assert_parity(maps, reference(batch).feature_maps)
    assert model.reductions_hw == [(2, 2), (2, 2), (4, 4), (8, 8), (16, 8), (32, 8)]
    assert [tuple(fmap.shape[2:]) for fmap in maps] == [(16, 48), (16, 48), (8, 24), (4, 12), (2, 12), (1, 12)]
    assert model.reductions == [2, 2, 4, 8, 16, 32]


# -- config errors ----------------------------------------------------------------------------------


def _blocks_with(stage: int, index: int, position: int, value: Any) -> list[list[list[Any]]]:
    blocks = [[list(block) for block in entries] for entries in SMALL["block_configs"]]
    blocks[stage][index][position] = value
    return blocks


class TestPPLCNetConfigRefusals(ConfigRefusals):
    config_class = PPLCNetConfig
    config = SMALL
    refusals = (
        ({"scale": 0}, r"scale=0 must be a positive number \(the width multiplier; the published models use 0.25"),
        ({"scale": -0.5}, r"scale=-0.5 must be a positive number"),
        (
            {"block_configs": SMALL["block_configs"][:4]},
            r"block_configs must have 5 stages \(one list of blocks each\), got 4",
        ),
        (
            {"block_configs": [*SMALL["block_configs"][:4], []]},
            r"block_configs\[4\] must be a non-empty list of blocks",
        ),
        (
            {"block_configs": _blocks_with(2, 1, 0, 4)},
            r"block_configs\[2\]\[1\]: kernel_size=4 must be odd \(3, 5, ...\)",
        ),
        (
            {"block_configs": _blocks_with(2, 0, 1, 24)},
            r"block_configs\[2\]\[0\]: in_channels=24 is 24 channels at scale=1.0 and divisor=8, but "
            r"block_configs\[1\]\[0\] \(out_channels=16\) gives 16",
        ),
        (
            {"block_configs": _blocks_with(0, 0, 1, 16)},
            r"block_configs\[0\]\[0\]: in_channels=16 is 16 channels .* but stem_channels=8 gives 8",
        ),
        (
            {"block_configs": _blocks_with(1, 0, 3, 0)},
            r"block_configs\[1\]\[0\]: stride=0 must be a positive int or a \[height, width\] pair",
        ),
        (
            {"block_configs": _blocks_with(1, 0, 3, [2, 1, 1])},
            r"stride=\[2, 1, 1\] must be a positive int or a \[height, width\] pair",
        ),
        (
            {"block_configs": _blocks_with(1, 0, 4, "yes")},
            r"block_configs\[1\]\[0\]: use_squeeze_excitation='yes' must be true or false",
        ),
        ({"block_configs": _blocks_with(1, 0, 1, 0)}, r"block_configs\[1\]\[0\]: in_channels=0 must be a positive int"),
        (
            {"reduction": 32},
            r"block_configs\[3\]\[0\]: its squeeze-excitation squeezes 16 channels by reduction=32 to none",
        ),
        ({"divisor": 0}, r"divisor=0 must be a positive int"),
        ({"stem_stride": [2]}, r"stem_stride=\[2\] must be a positive int or a \[height, width\] pair"),
        ({"hidden_act": "swishy"}, r"hidden_act 'swishy' is not supported"),
    )


def test_bad_config_file_names_the_file_and_field(tmp_path: Path) -> None:
    def even_kernel(data: dict[str, Any]) -> None:
        data["block_configs"][2][1][0] = 2

    message = r"invalid backbone config in .*config.json: .*kernel_size=2 must be odd"
    assert_config_file_refused(PPLCNetConfig(**SMALL), even_kernel, message, tmp_path)
