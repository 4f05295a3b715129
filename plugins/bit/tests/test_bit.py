"""Tests of backbones-bit: the conformance kit, parity with transformers, a default-size shape check."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from transformers.activations import ACT2FN

from backbones import AutoBackbone, Backbone, ConfigError, ReparameterizedError, testing
from backbones.testing import (
    BackboneConformance,
    TransformersParity,
    assert_close_maps,
    assert_parity,
    randomize_weights_,
)
from backbones.testing.cnn import (
    ConfigRefusals,
    assert_refuses_unlisted_choice,
    map_shapes,
    uneven_stage_lists_refusal,
    unknown_activation_refusal,
)
from backbones_bit import BitBackbone, BitConfig
from backbones_bit._config import ACTIVATIONS, round_channels
from backbones_bit._model import _make_activation, _pad_same, _StandardizedConv2d

TINY: dict[str, Any] = {"embedding_size": 8, "hidden_sizes": [8, 16, 24], "depths": [1, 1, 2], "num_groups": 4}
# Four stages, as real BiTs have, for parity; two blocks in some stages so later blocks (no projection,
# full dilation) are covered too. Every normalised width is a multiple of num_groups.
SMALL: dict[str, Any] = {"embedding_size": 8, "hidden_sizes": [8, 16, 24, 32], "depths": [1, 2, 1, 2], "num_groups": 4}
ALL_STAGES = [0, 1, 2, 3, 4]


# -- conformance ------------------------------------------------------------------------------------


class _TinyBitConformance(BackboneConformance):
    model_type = "bit"
    options: ClassVar[dict[str, Any]] = {}
    # 50 and 38 are not multiples of the strides, so the rounding below is really exercised.
    input_sizes = ((64, 64), (50, 38))
    # With symmetric padding (and the stem's extra pixel before an unpadded pool), or with "SAME" padding
    # everywhere including the stem's pool, every halving is ceil(size / 2).
    spatial_rounding = "ceil"
    # Any size exports, "SAME" padding included (its amounts are traced as expressions of the size). The
    # lower end is the deepest stride (16) + 1, so that every map is 2 pixels or more: torch.export
    # specialises a size of 1 (it broadcasts), not a limit of BiT's. Both classes keep the deployment checks:
    # static and per-input ("SAME") padding, and pre-activation and bottleneck blocks, are different paths.
    export_range = (17, 4096)
    channel_error_name = "BiT"
    bad_config_value = ("layer_type", "basic", r"layer_type 'basic' is not supported")
    limitations: ClassVar[dict[str, str]] = {
        "grey_from_rgb": "the stem convolution standardises its weight per filter, so summing the RGB filters "
        "does not give the standardised filters' sum: a grey model is not the RGB model on repeated grey"
    }

    def make_config(self, **overrides: Any) -> BitConfig:
        return BitConfig(**TINY, **self.options, **overrides)


class TestPreActivationConformance(_TinyBitConformance):
    options: ClassVar[dict[str, Any]] = {"layer_type": "preactivation"}


class TestBottleneckSameConformance(_TinyBitConformance):
    options: ClassVar[dict[str, Any]] = {
        "layer_type": "bottleneck",
        "global_padding": "SAME",
        "embedding_dynamic_padding": True,
    }


# -- parity with transformers -----------------------------------------------------------------------


class TestBitParity(TransformersParity):
    backbone_class = BitBackbone
    reference_task_class = "BitForImageClassification"
    config = SMALL
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "preactivation": {},
        # google/bit-50's settings.
        "preactivation-same-dynamic": {"global_padding": "SAME", "embedding_dynamic_padding": True},
        # "SAME" convolutions but an unpadded pool: the stem pool floors (no extra pixel of zeros).
        "preactivation-same": {"global_padding": "SAME"},
        # The extra pixel of zeros, then a "SAME" pool on top of it.
        "preactivation-dynamic-pool": {"embedding_dynamic_padding": True},
        # Past output_stride the pre-activation blocks drop their stride and are not dilated (transformers' rule).
        "preactivation-output-stride-8-gelu": {"output_stride": 8, "hidden_act": "gelu"},
        "bottleneck": {"layer_type": "bottleneck"},
        # ViT-hybrid's settings.
        "bottleneck-same-dynamic": {
            "layer_type": "bottleneck",
            "global_padding": "SAME",
            "embedding_dynamic_padding": True,
        },
        "bottleneck-output-stride-8": {"layer_type": "bottleneck", "output_stride": 8},
        # Dilation 2 in the last stage (its first block keeps 1), with "SAME" padding (static there: stride 1,
        # even dilation * (k - 1)).
        "bottleneck-same-output-stride-16": {"layer_type": "bottleneck", "global_padding": "same", "output_stride": 16},
        # Channels 24, 40, 48, 72: width_factor and the rounding to multiples of 8 (transformers' pre-activation
        # model cannot be built with them: its unused final norm keeps the unwidened size).
        "bottleneck-width-2-silu": {
            "layer_type": "bottleneck",
            "width_factor": 2,
            "hidden_sizes": [12, 20, 24, 36],
            "hidden_act": "silu",
        },
    }
    # Odd sizes: "SAME" padding is asymmetric and differs per layer, so dynamic padding really matters.
    input_sizes = ((67, 45),)
    out_indices = (tuple(ALL_STAGES), (-1,), (1, 3), (0,), (2, -1))
    hidden_state_count = 5
    task_variants = ("preactivation-same-dynamic", "bottleneck-output-stride-8")
    task_out_indices = (0, 2, 4)
    # The trunk's keys already carry the "bit." prefix, as in BitBackbone checkpoints.
    task_unused_keys = ("classifier.1.bias", "classifier.1.weight")
    round_trip_out_indices = (0, 2, 4)
    # transformers' metadata ignores width_factor and the rounding (see test_metadata_matches_oracle_shapes).
    reference_reports_channels = False

    def final_norm(self, variant: str) -> list[str]:
        """transformers' final norm of the pre-activation model: only its pooled classification path uses it."""
        preactivation = self.variants[variant].get("layer_type", "preactivation") == "preactivation"
        return ["bit.norm.bias", "bit.norm.weight"] if preactivation else []

    def expected_backbone_unused(self, variant: str, model: Backbone) -> list[str]:
        return self.final_norm(variant)

    def expected_task_report(self, task_class: str, variant: str, model: Backbone) -> tuple[list[str], list[str]]:
        return [], sorted([*self.task_unused_keys, *self.final_norm(variant)])

    def expected_round_trip_missing(self, variant: str) -> list[str]:
        # Only the final norm that the backbone never runs is missing (transformers initialises it).
        return self.final_norm(variant)

    def test_metadata_matches_oracle_shapes(
        self, tmp_path_factory: pytest.TempPathFactory, parity_variant: str
    ) -> None:
        directory, oracle = self.reference_checkpoint(parity_variant, tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory)
        with torch.no_grad():
            states = oracle(self.pixels(), output_hidden_states=True).hidden_states
        assert model.num_features == [state.shape[1] for state in states]
        if "width" not in parity_variant:
            assert model.num_features == oracle.num_features == [8, 8, 16, 24, 32]
        else:
            # transformers' metadata ignores width_factor and the rounding; ours reports the real channels.
            assert (model.num_features, oracle.num_features) == ([8, 24, 40, 48, 72], [8, 12, 20, 24, 36])
        variant = self.variants[parity_variant]
        output_stride = variant.get("output_stride", 32)
        assert model.reductions == [min(r, max(output_stride, 4)) for r in (4, 4, 8, 16, 32)]
        padding, pool_padding = variant.get("global_padding"), variant.get("embedding_dynamic_padding", False)
        if (padding is None) != pool_padding:
            # Symmetric padding with an unpadded pool, or "SAME" everywhere: maps are ceil(size / stride).
            for state, reduction in zip(states, model.reductions):
                assert tuple(state.shape[2:]) == (math.ceil(67 / reduction), math.ceil(45 / reduction))

    def test_base_model_checkpoint_gets_the_prefix(self, tmp_path: Path) -> None:
        base = self.reference_model("BitModel", "bottleneck-same-dynamic")
        base.save_pretrained(tmp_path)  # keys without "bit.": embedder.convolution.weight, ...
        model, report = AutoBackbone.from_pretrained(tmp_path, out_indices=[-1], output_loading_info=True)
        assert report.clean, str(report)
        assert report.prefix == "'bit.' added"
        with torch.no_grad():
            expected = base(self.pixels(), output_hidden_states=True).hidden_states[-1]
            assert_close_maps(model(self.pixels()).feature_maps, [expected], atol=1e-4)


def pixels(batch: int = 2, height: int = 67, width: int = 45) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_match_transformers(name: str) -> None:
    values = torch.linspace(-6, 6, 241)
    assert (_make_activation(name)(values.clone()) - ACT2FN[name](values)).abs().max().item() <= 1e-6


# -- behaviour --------------------------------------------------------------------------------------


def test_weight_standardisation() -> None:
    conv = _StandardizedConv2d(3, 5, 3)
    torch.nn.init.normal_(conv.weight, mean=2.0, std=3.0)
    weight = conv.standardized_weight()
    assert weight.shape == (5, 3, 3, 3)
    assert weight.mean(dim=(1, 2, 3)).abs().max().item() < 1e-5
    assert (weight.var(dim=(1, 2, 3), correction=0) - 1).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "dilation", "expected"),
    [(64, 3, 2, 1, (0, 1)), (67, 7, 2, 1, (3, 3)), (17, 3, 2, 1, (1, 1)), (16, 3, 1, 2, (2, 2)), (16, 1, 2, 1, (0, 0))],
)
def test_same_padding_is_tensorflows(
    size: int, kernel: int, stride: int, dilation: int, expected: tuple[int, int]
) -> None:
    # Ones inside, zeros in the padding: the zeros before and after the ones are the split.
    padded = _pad_same(torch.ones(1, 1, size, size), kernel, stride, dilation)
    row, column = padded[0, 0, padded.shape[-2] // 2], padded[0, 0, :, padded.shape[-1] // 2]
    for line in (row, column):
        before = int(line.nonzero()[0])
        assert (before, line.numel() - size - before) == expected
    out = (padded.shape[-1] - dilation * (kernel - 1) - 1) // stride + 1
    assert out == math.ceil(size / stride)


def test_dilation_past_output_stride() -> None:
    model = AutoBackbone.from_config(BitConfig(**SMALL, layer_type="bottleneck", output_stride=8))
    assert model.reductions == [4, 4, 8, 8, 8]
    dilations = [[block.conv2.dilation[0] for block in stage.layers] for stage in model.bit.encoder.stages]
    strides = [[block.conv2.stride[0] for block in stage.layers] for stage in model.bit.encoder.stages]
    # Stage 3 has dilation 2 (its first block keeps 1), stage 4 dilation 4 (its first block 2).
    assert dilations == [[1], [1, 1], [1], [2, 4]]
    assert strides == [[1], [2, 1], [1], [1, 1]]
    preact = AutoBackbone.from_config(BitConfig(**SMALL, output_stride=8))
    assert all(block.conv2.dilation == (1, 1) for stage in preact.bit.encoder.stages for block in stage.layers)
    assert preact.reductions == [4, 4, 8, 8, 8]


def test_dilated_same_model_exports_with_dynamic_size() -> None:
    # The conformance classes export the strided paths; this covers dilation past output_stride together
    # with "SAME" padding: one program, exact at odd sizes whose per-layer padding differs.
    from torch.export import Dim

    config = BitConfig(**SMALL, layer_type="bottleneck", global_padding="SAME", output_stride=8, out_indices=ALL_STAGES)
    model = randomize_weights_(AutoBackbone.from_config(config)).eval()
    # Stride 8 at most, and the unpadded stem pool floors: every map is 2 pixels or more from 17 on.
    dims = {2: Dim("height", min=17, max=1024), 3: Dim("width", min=17, max=1024)}
    program = torch.export.export(model, (pixels(),), dynamic_shapes={"pixel_values": dims})
    for height, width in [(67, 45), (40, 33), (17, 130)]:
        images = pixels(height=height, width=width)
        with torch.no_grad():
            assert_close_maps(program.module()(images).feature_maps, model(images).feature_maps, atol=1e-5)


@pytest.mark.parametrize("variant", ["preactivation", "preactivation-same-dynamic"])
def test_fixed_size_onnx_stem_pads_with_zeros(tmp_path: Path, variant: str) -> None:
    # The pre-activation stem zero-pads a map that can be negative, then max-pools. onnxruntime folds a
    # constant zero Pad into a following MaxPool (whose padding acts as -inf); a fixed-size export makes
    # every pad constant, so this is where our workaround (concatenated zeros) must hold.
    import onnxruntime

    model = randomize_weights_(
        AutoBackbone.from_config(BitConfig(**TestBitParity().options(variant), out_indices=[0]))
    ).eval()
    images = pixels()
    program = torch.onnx.export(torch.export.export(model, (images,)), dynamo=True, verbose=False)
    program.save(str(tmp_path / "stem.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "stem.onnx"), providers=["CPUExecutionProvider"])
    (output, *_) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with torch.no_grad():
        assert_close_maps([torch.from_numpy(output)], model(images).feature_maps, atol=1e-4)


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = AutoBackbone.from_config(BitConfig(**SMALL))
    block = model.bit.encoder.stages[3].layers[0]
    assert torch.equal(block.norm2.weight, torch.ones(8)) and torch.equal(block.norm2.bias, torch.zeros(8))
    conv = block.conv3.weight  # 32 x 8 x 1 x 1
    assert conv.std().item() == pytest.approx(math.sqrt(2 / 32), rel=0.2)
    assert not any(key.startswith("bit.norm.") for key in model.state_dict())


def test_drop_path_rates_grow_linearly() -> None:
    model = AutoBackbone.from_config(BitConfig(**SMALL, drop_path_rate=0.3))
    rates = [block.drop_path_rate for stage in model.bit.encoder.stages for block in stage.layers]
    assert rates == pytest.approx([0.0, 0.06, 0.12, 0.18, 0.24, 0.3])


def test_channel_rounding_matches_transformers() -> None:
    from transformers.models.bit.modeling_bit import make_div

    for value in [1, 2, 3.5, 7, 12, 20, 36, 64, 100, 2048 * 0.25, 123.4]:
        assert round_channels(value) == make_div(value)


@pytest.mark.slow
def test_bit50_shapes_at_224() -> None:
    testing.assert_maps_at_size(
        BitConfig(out_indices=[0, 1, 2, 3, 4]), map_shapes(1, [64, 256, 512, 1024, 2048], [56, 56, 28, 14, 7])
    )


# -- config errors ----------------------------------------------------------------------------------


def test_padding_is_normalised_like_transformers() -> None:
    assert BitConfig(global_padding="same").global_padding == "SAME"
    assert BitConfig().global_padding is None


def test_valid_padding_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"global_padding 'VALID' cannot work: .*set global_padding to None or 'SAME'"):
        BitConfig(global_padding="valid")
    with pytest.raises(
        ValueError, match=r"global_padding 'reflect' is not supported; set global_padding to None or 'SAME'"
    ):
        BitConfig(global_padding="reflect")


def test_unknown_layer_type_lists_the_valid_ones() -> None:
    assert_refuses_unlisted_choice(BitConfig, "layer_type", "basic", ["preactivation", "bottleneck"], "preactivation")


def test_num_groups_must_divide_every_norm() -> None:
    with pytest.raises(
        ValueError, match=r"num_groups=3 does not divide the 8 channels of embedding_size; .*\[8, 16, 24\]"
    ):
        BitConfig(**{**TINY, "num_groups": 3})
    with pytest.raises(ValueError, match=r"num_groups=32 does not divide the 8 channels of embedding_size"):
        BitConfig(embedding_size=8, hidden_sizes=[64], depths=[1])
    with pytest.raises(ValueError, match=r"num_groups=16 does not divide the 8 channels of stage1 bottleneck"):
        BitConfig(embedding_size=16, hidden_sizes=[16], depths=[1], num_groups=16)


@pytest.mark.parametrize("value", [4, 12, 64])
def test_output_stride_must_be_8_16_or_32(value: int) -> None:
    with pytest.raises(
        ConfigError, match=rf"output_stride={value}: output_stride must be one of \[8, 16, 32\] .*got {value}"
    ):
        BitConfig(output_stride=value)


class TestBitConfigRefusals(ConfigRefusals):
    config_class = BitConfig
    refusals = (unknown_activation_refusal("relu"), uneven_stage_lists_refusal([256, 512]))


# -- reparameterisation -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [{}, {"layer_type": "bottleneck", "global_padding": "SAME", "output_stride": 16}])
def test_reparameterize_stores_standardised_filters(variant: dict[str, Any]) -> None:
    # Group norms depend on each input, so nothing folds into a convolution; what folds is the weight
    # standardisation, computed once instead of at every forward.
    model = randomize_weights_(AutoBackbone.from_config(BitConfig(**SMALL, **variant, out_indices=ALL_STAGES))).eval()
    convs = [module for module in model.modules() if isinstance(module, _StandardizedConv2d)]
    sizes = [(67, 45), (40, 33)]
    with torch.no_grad():
        expected = [model(pixels(height=h, width=w)).feature_maps for h, w in sizes]
        standardised = [conv.standardized_weight() for conv in convs]
    assert model.supports_reparameterize
    assert model.reparameterize() == len(convs)
    assert all(not conv.standardize and torch.equal(conv.weight, weight) for conv, weight in zip(convs, standardised))
    with torch.no_grad():
        for (height, width), maps in zip(sizes, expected):
            assert_parity(model(pixels(height=height, width=width)).feature_maps, maps, tolerance=1e-5)
    with pytest.raises(ReparameterizedError, match="cannot train"):
        model.train()


def test_folded_model_exports_with_dynamic_size() -> None:
    from torch.export import Dim

    model = randomize_weights_(AutoBackbone.from_config(BitConfig(**SMALL, out_indices=ALL_STAGES))).eval()
    model.reparameterize()
    # From 33 on, the stride-32 map is 2 pixels or more (export specialises a size of 1).
    dims = {2: Dim("height", min=33, max=1024), 3: Dim("width", min=33, max=1024)}
    program = torch.export.export(model, (pixels(),), dynamic_shapes={"pixel_values": dims})
    assert "layer_norm" not in str(program.graph)  # no standardisation left in the program
    for height, width in [(67, 45), (40, 33)]:
        images = pixels(height=height, width=width)
        with torch.no_grad():
            assert_parity(program.module()(images).feature_maps, model(images).feature_maps, tolerance=1e-5)
