"""Tests of backbones-pvt-v2: the conformance kit, parity with transformers 5.23 (backbone, PvtV2Model and
PvtV2ForImageClassification checkpoints), the b0-b5 sizes, preprocessing, behaviour, config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import transformers
from torch import Tensor, nn

from backbones import AutoBackbone, Backbone, ConfigError
from backbones.testing import (
    FixedSizeProcessorParity,
    TransformersParity,
    assert_parity,
    assert_random_only_in_training,
    imagenet_preprocessor,
    random_pixels,
    randomize_weights_,
)
from backbones.testing.hierarchical import (
    PYRAMID_REDUCTIONS,
    HierarchicalConformance,
    assert_pyramid_builds_on_meta,
    stage_shapes,
)
from backbones.testing.stages import assert_runs_up_to_deepest_selected_stage
from backbones_pvt_v2 import PvtImageProcessor, PvtV2Backbone, PvtV2Config
from backbones_pvt_v2._model import LINEAR_POOL_SIZE, PvtV2DepthWiseConv, _adaptive_average_matrix

# Four stages as every PVTv2 has, a few thousand parameters. sr_ratios stay transformers' defaults (8, 4, 2, 1)
# in the parity tests, which run at the training size 224.
SMALL: dict[str, Any] = {
    "depths": [1, 2, 1, 1],
    "hidden_sizes": [8, 16, 24, 32],
    "num_attention_heads": [1, 2, 3, 4],
    "mlp_ratios": [2, 2, 2, 2],
}
# The conformance configs reduce less, so that the small test images keep reduced maps of 2 pixels or more.
TINY: dict[str, Any] = {**SMALL, "depths": [1, 1, 1, 1], "sr_ratios": [4, 2, 2, 1]}
ALL_STAGES = [0, 1, 2, 3]


# -- conformance ------------------------------------------------------------------------------------


class TestPvtV2Conformance(HierarchicalConformance):
    config_class = PvtV2Config
    config = TINY
    # 50 and 54 are not multiples of the strides: the padded patch embeddings round up.
    input_sizes = ((64, 64), (50, 54))
    # torch.export specialises a size of 1 (it broadcasts), so one program covers the sizes where every map is
    # 2 pixels or more, the key/value maps too: here stage 3's ceil(size / 16) // sr_ratio 2 >= 2 from 49 on.
    export_range = (49, 1024)
    channel_error_name = "PVTv2"
    bad_config_value = ("num_attention_heads", [1, 2, 3, 5], r"num_attention_heads\[3\]=5 must be a positive divisor")


class TestPvtV2LinearAttentionConformance(TestPvtV2Conformance):
    """PVTv2-Li: keys and values from a 7x7 average pool (written as two matrix products, see
    ``_adaptive_average_matrix``, so export and ONNX keep the input size dynamic)."""

    # The key/value maps are 7x7 whatever the input: from 33 on, the deepest map (stride 32) is 2 pixels or more.
    config = {**TINY, "linear_attention": True}
    export_range = (33, 1024)


# -- parity with transformers -----------------------------------------------------------------------

# transformers' per-block attention probabilities at 224x224: (batch, heads, tokens, reduced tokens), one per block
# of SMALL. Spatial reduction by 8, 4, 2, 1 and PVTv2-Li's 7x7 pool give the same 49 keys at this size.
ATTENTION_SHAPES_224 = tuple(
    (1, heads, (224 // reduction) ** 2, 49)
    for heads, depth, reduction in zip(SMALL["num_attention_heads"], SMALL["depths"], PYRAMID_REDUCTIONS)
    for _ in range(depth)
)


class TestPvtV2Parity(TransformersParity):
    backbone_class = PvtV2Backbone
    reference_task_classes = ("PvtV2ForImageClassification", "PvtV2Model")
    config = SMALL
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "spatial-reduction": {},
        "linear-attention": {"linear_attention": True},
        # relu reaches the MLP's activation only; no bias on query, key and value.
        "relu-no-qkv-bias": {"hidden_act": "relu", "qkv_bias": False},
    }
    # 224: the training size; 50x38 is not a multiple of the strides, and its first stage's key/value map is
    # 1x1 after the reduction by 8.
    input_sizes = ((224, 224), (50, 38))
    batch_size = 1
    out_indices = ((0, 1, 2, 3), (2,), (-1,))
    # Every variant with every stage selected; the single-stage selections with the first variant only.
    selection_variants = ("spatial-reduction",)
    hidden_state_count = 4
    hidden_state_shapes: ClassVar[tuple[tuple[int, ...], ...] | None] = tuple(stage_shapes(SMALL["hidden_sizes"], 224))
    compare_attentions = True
    attention_shapes: ClassVar[tuple[tuple[int, ...], ...] | None] = ATTENTION_SHAPES_224
    task_variants = ("spatial-reduction", "linear-attention")
    task_out_indices = (0, 1, 2, 3)
    round_trip_out_indices = (0, 2, 3)
    compare_gradients = True

    def reference_attentions(self, reference: Any, pixels: Tensor) -> list[Tensor]:
        # transformers' PvtV2Backbone drops the attentions (it always returns None); its encoder, which
        # PvtV2Model returns, nests them per stage and per block. Ours are that nesting flattened.
        with torch.no_grad():
            stages = reference.encoder(pixels, output_attentions=True).attentions
        return [weights for stage in stages for weights in stage]

    def expected_task_report(self, task_class: str, variant: str, model: Backbone) -> tuple[list[str], list[str]]:
        # PvtV2Model's keys are the backbone's; the classifier's head is the only key our backbone leaves.
        unused = ["classifier.bias", "classifier.weight"] if task_class == "PvtV2ForImageClassification" else []
        return [], unused

    def expected_task_prefix(self, task_class: str) -> str | None:
        return "'pvt_v2.' removed" if task_class == "PvtV2ForImageClassification" else ""


def test_classifier_logits_from_our_last_map(tmp_path: Path) -> None:
    """The classification head of PvtV2ForImageClassification on our last map gives transformers' logits."""
    task = randomize_weights_(transformers.PvtV2ForImageClassification(transformers.PvtV2Config(**SMALL, num_labels=3)))
    task.eval().save_pretrained(tmp_path)
    model = AutoBackbone.from_pretrained(tmp_path, out_indices=[-1])
    batch = random_pixels(64, 64, batch=1)
    with torch.no_grad():
        (last,) = model(batch).feature_maps
        logits = task.classifier(last.flatten(2).mean(dim=2))
        assert_parity([logits], [task(batch).logits])


# -- transformers' config.json in, ours out ---------------------------------------------------------


def test_transformers_config_json_round_trips(tmp_path: Path) -> None:
    reference = transformers.PvtV2Config(**SMALL, linear_attention=True, out_features=["stage2", "stage4"])
    reference.save_pretrained(tmp_path)
    config = PvtV2Config.from_pretrained(tmp_path)
    assert config.out_features == ["stage2", "stage4"] and config.out_indices == [1, 3]
    assert config.linear_attention is True and config.hidden_sizes == SMALL["hidden_sizes"]
    assert config.image_size == 224 and config.sr_ratios == [8, 4, 2, 1]
    out = tmp_path / "ours"
    config.save_pretrained(out)
    saved = json.loads((out / "config.json").read_text())
    assert saved["image_size"] == [224, 224] and saved["stage_names"] == ["stage1", "stage2", "stage3", "stage4"]
    back = transformers.PvtV2Config.from_pretrained(out)
    assert back.stage_names == config.stage_names
    assert back.out_features == ["stage2", "stage4"]
    assert (back.linear_attention, list(back.depths), list(back.hidden_sizes)) == (
        True,
        SMALL["depths"],
        SMALL["hidden_sizes"],
    )
    assert tuple(back.image_size) == (224, 224)


# -- real sizes -------------------------------------------------------------------------------------

_B1_WIDTHS = [64, 128, 320, 512]
# The OpenGVLab/pvt_v2_* checkpoints (heads 1, 2, 5, 8 and sr_ratios 8, 4, 2, 1 for all), and their parameter
# counts with a 1000-class head, in millions to one decimal (timm's pvt_v2_b0 ... pvt_v2_b5 have the same).
REAL_SIZES: dict[str, tuple[dict[str, Any], float]] = {
    "b0": ({}, 3.7),
    "b1": ({"hidden_sizes": _B1_WIDTHS}, 14.0),
    "b2": ({"hidden_sizes": _B1_WIDTHS, "depths": [3, 4, 6, 3]}, 25.4),
    "b2-linear": ({"hidden_sizes": _B1_WIDTHS, "depths": [3, 4, 6, 3], "linear_attention": True}, 22.6),
    "b3": ({"hidden_sizes": _B1_WIDTHS, "depths": [3, 4, 18, 3]}, 45.2),
    "b4": ({"hidden_sizes": _B1_WIDTHS, "depths": [3, 8, 27, 3]}, 62.6),
    "b5": ({"hidden_sizes": _B1_WIDTHS, "depths": [3, 6, 40, 3], "mlp_ratios": [4, 4, 4, 4]}, 82.0),
}


@pytest.mark.parametrize("size", list(REAL_SIZES))
def test_real_sizes_build_on_meta(size: str) -> None:
    fields, millions_with_head = REAL_SIZES[size]
    config = PvtV2Config(**fields, out_indices=ALL_STAGES)
    model, count = assert_pyramid_builds_on_meta(
        config, lambda: transformers.PvtV2Model(transformers.PvtV2Config(**fields)), config.hidden_sizes
    )
    assert type(model) is PvtV2Backbone
    head = config.hidden_sizes[-1] * 1000 + 1000
    assert round((count + head) / 1e6, 1) == millions_with_head


def test_default_config_is_b0() -> None:
    config = PvtV2Config()
    reference = transformers.PvtV2Config()
    for name in ("depths", "hidden_sizes", "num_attention_heads", "sr_ratios", "patch_sizes", "strides", "mlp_ratios"):
        assert getattr(config, name) == list(getattr(reference, name)), name
    assert (config.layer_norm_eps, config.drop_path_rate, config.linear_attention) == (1e-6, 0.0, False)
    assert config.stage_names == reference.stage_names == ["stage1", "stage2", "stage3", "stage4"]


# -- behaviour --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(7, 7), (13, 50), (3, 9), (56, 56), (1, 1)])
def test_linear_pool_equals_adaptive_average_pool(size: tuple[int, int]) -> None:
    grid = torch.randn(2, 5, *size, generator=torch.Generator().manual_seed(0))
    rows = _adaptive_average_matrix(size[0], LINEAR_POOL_SIZE, grid)
    columns = _adaptive_average_matrix(size[1], LINEAR_POOL_SIZE, grid)
    expected = nn.AdaptiveAvgPool2d(LINEAR_POOL_SIZE)(grid)
    torch.testing.assert_close(rows @ grid @ columns.T, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3])
def test_depthwise_convolution_runs_on_the_token_memory(batch: int) -> None:
    # The MLP's depth-wise convolution sees the tokens as a channels-last view. At batch 1 its strides are
    # ambiguous, and with the weight in its default layout the convolution copied the whole map into
    # channels-first order and ran the channels-first kernel (20x slower on the first stage): no copy now,
    # and the tokens come back as a view of the convolution's output.
    conv = PvtV2DepthWiseConv(16).eval()
    tokens = torch.randn(batch, 12 * 10, 16, generator=torch.Generator().manual_seed(0))
    with torch.profiler.profile(record_shapes=True) as profile:
        out = conv(tokens, 12, 10)
    copies = [event.input_shapes[0] for event in profile.events() if event.name == "aten::copy_"]
    assert copies == [[16, 1, 3, 3]]  # the weight's, into the channels-last layout
    grid = tokens.transpose(1, 2).reshape(batch, 16, 12, 10).contiguous()
    expected = nn.functional.conv2d(grid, conv.dwconv.weight, conv.dwconv.bias, padding=1, groups=16)
    torch.testing.assert_close(out, expected.flatten(2).transpose(1, 2), rtol=0, atol=1e-6)


def test_forward_stops_at_the_deepest_requested_stage() -> None:
    model = PvtV2Backbone(PvtV2Config(**TINY, out_indices=[1])).eval()
    # PVTv2 has no stem: stage1, at position 0, runs for every selection as a stem would; the check hooks the
    # stages at positions 1 to 3.
    assert_runs_up_to_deepest_selected_stage(model, model.encoder.layers[1:], random_pixels(64, 48))
    model.prune_unused_stages()
    assert len(model.encoder.layers) == 2


@pytest.mark.parametrize(
    ("fields", "minimum"),
    [
        ({}, 29),  # b0-b5: the first stage's map must be 8 pixels for its reduction by 8
        ({"sr_ratios": [4, 2, 2, 1]}, 17),  # the third stage's map must be 2 pixels
        ({"linear_attention": True}, 1),  # a 7x7 pool takes any size
        ({"depths": [0, 2, 2, 2]}, 25),  # a stage without blocks reduces nothing: the second needs 4 pixels
    ],
)
def test_too_small_inputs_are_explained(fields: dict[str, Any], minimum: int) -> None:
    config = PvtV2Config(**fields, out_indices=ALL_STAGES)
    assert config.minimum_input_size == minimum
    model = PvtV2Backbone(config).eval()
    with torch.no_grad():
        maps = model(random_pixels(minimum, minimum + 5, batch=1)).feature_maps
        assert [tuple(fmap.shape[2:]) for fmap in maps] == list(
            zip(config.stage_sizes(minimum), config.stage_sizes(minimum + 5))
        )
        if minimum > 1:
            message = rf"pixel_values of {minimum - 1}x{minimum} pixels is too small for this PvtV2Backbone: .* at least {minimum}x{minimum}"
            with pytest.raises(ValueError, match=message):
                model(random_pixels(minimum - 1, minimum, batch=1))


def test_attention_modules_follow_the_variant() -> None:
    spatial = PvtV2Backbone(PvtV2Config(**SMALL))
    attention = [stage.blocks[0].attention for stage in spatial.encoder.layers]
    kernels = [None if a.spatial_reduction is None else a.spatial_reduction.kernel_size for a in attention]
    assert kernels == [(8, 8), (4, 4), (2, 2), None]  # no reduction (and no norm) at sr_ratio 1
    linear = PvtV2Backbone(PvtV2Config(**SMALL, linear_attention=True))
    attention = [stage.blocks[0].attention for stage in linear.encoder.layers]
    assert [a.spatial_reduction.kernel_size for a in attention] == [(1, 1)] * 4
    assert isinstance(linear.encoder.layers[0].blocks[0].mlp.relu, nn.ReLU)
    assert isinstance(spatial.encoder.layers[0].blocks[0].mlp.relu, nn.Identity)


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = PvtV2Backbone(PvtV2Config(hidden_sizes=[64, 128, 320, 512]))
    block = model.encoder.layers[3].blocks[0]
    dwconv = block.mlp.dwconv.dwconv.weight  # 2048 filters of 3x3, one per group: fan-out 9
    assert dwconv.std().item() == pytest.approx((2 / 9) ** 0.5, rel=0.05)
    proj = model.encoder.layers[0].patch_embedding.proj.weight  # 64 x 3 x 7 x 7: fan-out 49 * 64
    assert proj.std().item() == pytest.approx((2 / (49 * 64)) ** 0.5, rel=0.05)
    query = block.attention.query.weight
    # A normal distribution cut at -2 and 2 (absolute, as transformers calls trunc_normal_): a std of 0.02.
    assert query.std().item() == pytest.approx(0.02, rel=0.05) and abs(query.mean().item()) < 1e-3
    assert torch.equal(block.attention.query.bias, torch.zeros(512))
    norm = block.layer_norm_1
    assert torch.equal(norm.weight, torch.ones(512)) and torch.equal(norm.bias, torch.zeros(512))


def test_dropout_and_drop_path_act_in_training_only() -> None:
    for fields in ({"drop_path_rate": 0.5}, {"hidden_dropout_prob": 0.3}, {"attention_probs_dropout_prob": 0.3}):
        model = PvtV2Backbone(PvtV2Config(**TINY, **fields))
        assert_random_only_in_training(model, random_pixels(64, 48))


def test_drop_path_schedule_is_linear_over_all_blocks() -> None:
    model = PvtV2Backbone(PvtV2Config(**{**SMALL, "depths": [2, 1, 1, 1]}, drop_path_rate=0.4))
    rates = [block.drop_path_rate for stage in model.encoder.layers for block in stage.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_a_stage_without_blocks_matches_transformers(tmp_path: Path) -> None:
    fields = {**SMALL, "depths": [1, 0, 2, 1]}
    reference = randomize_weights_(
        transformers.PvtV2Backbone(transformers.PvtV2Config(**fields, out_indices=ALL_STAGES))
    )
    reference.eval().save_pretrained(tmp_path)
    model, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.clean
    batch = random_pixels(64, 48)
    with torch.no_grad():
        assert_parity(model(batch).feature_maps, reference(batch).feature_maps)


# -- preprocessing ----------------------------------------------------------------------------------

# OpenGVLab/pvt_v2_b0's preprocessor_config.json, with a 64x48 size instead of 224x224.
PREPROCESSOR = imagenet_preprocessor("PvtImageProcessor", size={"height": 64, "width": 48})


class TestPvtV2ProcessorParity(FixedSizeProcessorParity):
    """The hub checkpoints' PvtImageProcessor (and, with no type named, the one this plugin declares)."""

    model_type = "pvt_v2"
    processor_class = PvtImageProcessor
    preprocessor = PREPROCESSOR
    variants = {"bicubic": {"resample": 3}}
    suffixes = ("Fast", "Pil")

    def test_processor_defaults_are_transformers_defaults(self) -> None:
        ours, oracle = PvtImageProcessor(), transformers.PvtImageProcessorPil()
        assert ours.size == dict(oracle.size) == {"height": 224, "width": 224}
        assert ours.resample == int(oracle.resample) == 3
        assert tuple(ours.image_mean) == tuple(oracle.image_mean) and tuple(ours.image_std) == tuple(oracle.image_std)
        image = self.images("named")[0]  # 75 x 101
        expected = oracle(image, return_tensors="pt")["pixel_values"]
        assert (ours(image, return_tensors="pt")["pixel_values"] - expected).abs().max().item() <= 1e-5


# -- config errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"depths": [1, 1, 1]}, r"depths has 3 entries but num_encoder_blocks=4; give depths one value per stage"),
        ({"num_encoder_blocks": 3}, r"depths has 4 entries but num_encoder_blocks=3"),
        ({"sr_ratios": [8, 4, 2]}, r"sr_ratios has 3 entries but num_encoder_blocks=4"),
        ({"depths": [1, -1, 1, 1]}, r"depths\[1\]=-1 must be 0 or more \(blocks in stage 2\)"),
        ({"sr_ratios": [8, 0, 2, 1]}, r"sr_ratios\[1\]=0 must be 1 or more"),
        ({"patch_sizes": [0, 3, 3, 3]}, r"patch_sizes\[0\]=0 must be 1 or more"),
        ({"strides": [4, 2, 0, 2]}, r"strides\[2\]=0 must be 1 or more"),
        ({"hidden_sizes": [8, 0, 24, 32]}, r"hidden_sizes\[1\]=0 must be 1 or more"),
        ({"mlp_ratios": [2, 2, 0, 2]}, r"mlp_ratios\[2\]=0 must be 1 or more"),
        (
            {"num_attention_heads": [1, 3, 3, 4]},
            r"num_attention_heads\[1\]=3 must be a positive divisor of stage 2's width hidden_sizes\[1\]=16",
        ),
        ({"num_attention_heads": [0, 2, 3, 4]}, r"num_attention_heads\[0\]=0 must be a positive divisor"),
        ({"hidden_act": "swiglu"}, r"hidden_act 'swiglu' is not supported; set hidden_act to one of"),
        ({"num_encoder_blocks": 0}, r"num_encoder_blocks=0: Input should be greater than or equal to 1"),
        ({"drop_path_rate": 1.0}, r"drop_path_rate=1.0: Input should be less than 1"),
        ({"attention_probs_dropout_prob": -0.1}, r"attention_probs_dropout_prob=-0.1: Input should be greater than"),
        ({"layer_norm_eps": 0}, r"layer_norm_eps=0: Input should be greater than 0"),
        ({"freeze_at": 4}, r"freeze_at=4: must be an int between -1 \(freeze nothing\) and 3"),
    ],
)
def test_bad_configs_name_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PvtV2Config(**{**SMALL, **overrides})
