"""Tests of backbones-hiera: the conformance kit, parity with transformers (its HieraBackbone with the unroll it
skips put back), the task and MAE pre-training checkpoints, config errors, the image processor, real sizes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from backbones import AutoBackbone, Backbone
from backbones.testing import (
    BitProcessorParity,
    ConfigErrors,
    TokenShapes,
    TransformersParity,
    assert_parity,
    assert_random_only_in_training,
    random_pixels,
    randomize_weights_,
)
from backbones.testing.hierarchical import (
    HierarchicalConformance,
    assert_pyramid_at_size,
    assert_pyramid_builds_on_meta,
    stage_shapes,
)
from backbones_hiera import HieraBackbone, HieraConfig

# Four stages of widths 8, 16, 32, 64 at strides 4, 8, 16, 32; 8x8 mask units of 4-pixel patches: inputs are
# multiples of 32 pixels.
TINY: dict[str, Any] = {"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "image_size": [64, 64]}
# Parity: two blocks in the pooling stages, the decoder of MAE pre-training (used by HieraForPreTraining only).
SMALL: dict[str, Any] = {
    "embed_dim": 8,
    "depths": [1, 2, 2, 1],
    "num_heads": [1, 2, 2, 4],
    "image_size": [64, 64],
    "decoder_hidden_size": 16,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}


# -- conformance ------------------------------------------------------------------------------------


class TestHieraConformance(HierarchicalConformance):
    config_class = HieraConfig
    config = TINY
    input_sizes = ((64, 64), (96, 64))
    export_multiple = 32
    channel_error_name = "Hiera"
    bad_config_value = ("num_query_pool", 4, r"num_query_pool=4 must be less than the number of stages \(4\)")


class TestHieraGlobalAttentionConformance(TestHieraConformance):
    """Two pooling stages (as MAE checkpoints), mask units in the third stage, a stage that changes width only."""

    deployment_checks = False
    config = {**TINY, "num_query_pool": 2, "masked_unit_attention": [False, True, True, False]}


# -- parity with transformers -----------------------------------------------------------------------


def _unrolled_reference_class() -> type:
    """transformers' HieraBackbone with the unroll its forward skips put back (test-only oracle).

    In transformers 5.23, ``HieraBackbone.forward`` hands the raster-order patch tokens to the encoder, whose
    pooling, mask units and reroll all assume unrolled tokens (``HieraModel.forward`` unrolls them, as the
    original implementation does): its maps mix unrelated image regions. This subclass runs transformers' own
    ``unroll``, encoder and reroll; it also resamples the positions (``interpolate_pos_encoding=True``) and
    recomputes the encoder's reroll schedule for the input's size, which transformers fixes at ``image_size``.
    """
    from transformers.modeling_outputs import BackboneOutput
    from transformers.models.hiera.modeling_hiera import unroll

    class UnrolledHieraBackbone(transformers.HieraBackbone):  # type: ignore[misc]
        def forward(
            self,
            pixel_values: torch.Tensor,
            output_hidden_states: bool | None = None,
            output_attentions: bool | None = None,
            **kwargs: Any,
        ) -> Any:
            # Always a BackboneOutput: ``return_dict`` and transformers' other options land in ``kwargs``, unused.
            config = self.config
            size = [side // stride for side, stride in zip(pixel_values.shape[-2:], config.patch_stride)]
            strides = [config.query_stride] * (len(config.depths) - 1)
            schedule = {}
            for index in range(len(config.depths)):
                schedule[index] = strides, size
                if index < config.num_query_pool:
                    size = [side // stride for side, stride in zip(size, config.query_stride)]
                    strides = strides[1:]
            self.encoder.schedule = schedule
            embedded, _, _ = self.embeddings(pixel_values, interpolate_pos_encoding=True)
            tokens = unroll(embedded, tuple(pixel_values.shape[-2:]), config.patch_stride, schedule[0][0])
            outputs = self.encoder(
                tokens, output_attentions=bool(output_attentions), output_hidden_states=True, return_dict=True
            )
            maps = tuple(
                self.hidden_states_norms[name](state).permute(0, 3, 1, 2)
                for name, state in zip(self.stage_names, outputs.reshaped_hidden_states)
                if name in self.out_features
            )
            return BackboneOutput(
                feature_maps=maps,
                hidden_states=outputs.hidden_states if output_hidden_states else None,
                attentions=outputs.attentions if output_attentions else None,
            )

    return UnrolledHieraBackbone


def _decoder_keys(num_query_pool: int) -> list[str]:
    """The keys of HieraForPreTraining (decoder depth 1) outside its encoder: the MAE decoder and fusion heads."""
    block = [
        f"decoder.decoder_block.layers.0.{name}.{kind}"
        for name in ("attn.proj", "attn.qkv", "layernorm_after", "layernorm_before", "mlp.fc1", "mlp.fc2")
        for kind in ("bias", "weight")
    ]
    heads = [
        f"multiscale_fusion.multi_scale_fusion_heads.{index}.{kind}"
        for index in range(num_query_pool)
        for kind in ("bias", "weight")
    ]
    others = ["decoder.decoder_position_embeddings", "decoder.mask_token", "encoder_norm.bias", "encoder_norm.weight"]
    others += [
        f"decoder.{name}.{kind}"
        for name in ("decoder_embeddings", "decoder_norm", "decoder_pred")
        for kind in ("bias", "weight")
    ]
    return sorted(block + heads + others)


class TestHieraParity(TransformersParity):
    backbone_class = HieraBackbone
    reference_task_classes = ("HieraForImageClassification", "HieraForPreTraining")
    config = SMALL
    variants = {
        "base": {},
        # MAE checkpoints pool in two stages only; a global first stage whose successor still uses mask units.
        "two-pools-relu": {
            "num_query_pool": 2,
            "masked_unit_attention": [False, True, False, False],
            "hidden_act": "relu",
        },
    }
    # The training size (no position resampling) and a non-square one.
    input_sizes = ((64, 64), (96, 64))
    out_indices = ((0, 1, 2, 3, 4), (1, 2, 3, 4), (2,), (-1,))
    backbone_unused_keys = ("hidden_states_norms.{stage}.bias", "hidden_states_norms.{stage}.weight")
    backbone_prefix = ""
    hidden_state_count = 5
    compare_attentions = True
    task_variants = ("base", "two-pools-relu")
    task_out_indices = (1, 2, 3, 4)
    task_missing_keys = ("hidden_states_norms.{stage}.bias", "hidden_states_norms.{stage}.weight")
    task_prefix = "'hiera.' removed"
    round_trip_out_indices = (0, 2, 4)
    compare_gradients = True
    # Hidden states are unrolled token sequences; attentions are (batch, heads, windows, queries, keys): a pooling
    # block's queries are a quarter of its keys, a global stage has one window.
    token_shapes = {
        "base": TokenShapes(
            (64, 64),
            ((2, 256, 8), (2, 256, 8), (2, 64, 16), (2, 16, 32), (2, 4, 64)),
            ((2, 1, 4, 64, 64), (2, 2, 4, 16, 16), (2, 2, 1, 16, 16), (2, 4, 1, 4, 16)),
        ),
        "two-pools-relu": TokenShapes(
            (64, 64),
            ((2, 256, 8), (2, 256, 8), (2, 64, 16), (2, 16, 32), (2, 16, 64)),
            ((2, 1, 1, 256, 256), (2, 2, 4, 16, 16), (2, 2, 1, 16, 16), (2, 4, 1, 16, 16)),
        ),
    }

    def build_reference(self, model_class: str, config: Any) -> Any:
        if model_class == "HieraBackbone":
            return _unrolled_reference_class()(config)
        return super().build_reference(model_class, config)

    def expected_task_report(self, task_class: str, variant: str, model: Backbone) -> tuple[list[str], list[str]]:
        missing = sorted(
            f"hidden_states_norms.{name}.{kind}" for name in model.out_features for kind in ("bias", "weight")
        )
        if task_class == "HieraForImageClassification":
            unused = [
                "classifier.bias",
                "classifier.weight",
                "hiera.pooler.layernorm.bias",
                "hiera.pooler.layernorm.weight",
            ]
        else:
            unused = _decoder_keys(self.options(variant).get("num_query_pool", 3))
        return missing, unused

    def load_reference_checkpoint(self, directory: Path, missing: Any) -> Any:
        reference, info = _unrolled_reference_class().from_pretrained(directory, output_loading_info=True)
        assert sorted(info["missing_keys"]) == sorted(missing) and not info["unexpected_keys"], info
        return reference.eval()

    def test_pretraining_report_is_exact(self, tmp_path: Path) -> None:
        """A HieraForPreTraining checkpoint: the encoder loads, the MAE decoder and the fusion heads of its two
        pooling stages are reported, one by one."""
        self.reference_model("HieraForPreTraining", "two-pools-relu").save_pretrained(tmp_path)
        model, report = AutoBackbone.from_pretrained(tmp_path, out_indices=[-1], output_loading_info=True)
        assert report.prefix == "'hiera.' removed"
        assert report.missing_keys == ["hidden_states_norms.stage4.bias", "hidden_states_norms.stage4.weight"]
        assert report.unused_keys == _decoder_keys(num_query_pool=2)
        assert "unused checkpoint keys: decoder.decoder_block.layers.0.attn.proj.bias" in str(report)
        assert model.config.num_query_pool == 2 and model.config.decoder_depth == 1

    def test_unmodified_hiera_model_gives_our_hidden_states(self, tmp_path: Path) -> None:
        """transformers' own HieraModel path (unmodified): its token sequences, and its rerolled maps through our
        output norms, are ours; its HieraBackbone, which skips the unroll, disagrees."""
        task = self.reference_model("HieraForImageClassification", "base", **self.task_options)
        task.save_pretrained(tmp_path)
        model = AutoBackbone.from_pretrained(tmp_path, out_indices=[0, 1, 2, 3, 4])
        randomize_weights_(model.hidden_states_norms, seed=3)
        inputs = self.pixels((64, 64))
        with torch.no_grad():
            expected = task.hiera(inputs, output_hidden_states=True)
            ours = model(inputs, output_hidden_states=True)
            norms = [model.hidden_states_norms[name] for name in model.stage_names]
            rerolled = [norm(state).permute(0, 3, 1, 2) for norm, state in zip(norms, expected.reshaped_hidden_states)]
            assert_parity(ours.hidden_states, expected.hidden_states)
            assert_parity(ours.feature_maps, rerolled)
            # transformers' HieraBackbone on the same trunk and norms: its maps are not Hiera's.
            skipping = transformers.HieraBackbone(self.reference_config("base", out_indices=[0, 1, 2, 3, 4])).eval()
            skipping.load_state_dict(model.state_dict())
            wrong = skipping(inputs).feature_maps
        assert (wrong[2] - ours.feature_maps[2]).abs().max().item() > 0.1


# -- behaviour --------------------------------------------------------------------------------------


def test_stage_strides_follow_the_pooled_stages() -> None:
    # Two pooling stages: the last stage widens without halving the map.
    widths, reductions = [8, 8, 16, 32, 64], [4, 4, 8, 16, 16]
    model = AutoBackbone.from_config(HieraConfig(**TINY, num_query_pool=2, out_indices=[0, 1, 2, 3, 4])).eval()
    assert model.reductions == reductions and model.num_features == widths
    with torch.no_grad():
        maps = model(random_pixels(64, 96)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == stage_shapes(widths, (64, 96), reductions, batch=2)


def test_stochastic_depth_acts_in_training_only() -> None:
    model = AutoBackbone.from_config(HieraConfig(**TINY, drop_path_rate=0.5, out_indices=[-1]))
    assert [layer.drop_path_rate for stage in model.encoder.stages for layer in stage.layers] == [
        0.0,
        0.5 / 3,
        1 / 3,
        0.5,
    ]
    assert_random_only_in_training(model, random_pixels(64, 96))


def test_input_must_hold_whole_mask_units() -> None:
    model = AutoBackbone.from_config(HieraConfig(**TINY)).eval()
    message = r"multiples of patch_stride \* masked_unit_size = 32x32 pixels .* got 64x80; resize or pad"
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(1, 3, 64, 80))


def test_non_square_position_table_serves_its_own_grid_only() -> None:
    model = AutoBackbone.from_config(HieraConfig(**{**TINY, "image_size": [64, 96]})).eval()
    with torch.no_grad():
        assert tuple(model(random_pixels(64, 96)).feature_maps[0].shape) == (2, 64, 2, 3)
    with pytest.raises(ValueError, match=r"covers a 16x24 grid of patches .* to the 16x16 grid of this input"):
        model(random_pixels(64, 64))


def test_new_output_norms_start_as_transformers_initialises_them() -> None:
    model = AutoBackbone.from_config(HieraConfig(**TINY, layer_norm_init=0.5, out_indices=[-1]))
    model.out_indices = [1, -1]
    norm = model.hidden_states_norms["stage1"]
    assert torch.equal(norm.weight, torch.full((8,), 0.5)) and torch.equal(norm.bias, torch.full((8,), 0.02))
    assert list(model.hidden_states_norms) == ["stage1", "stage4"]


def test_pruning_keeps_only_the_stages_that_run() -> None:
    model = AutoBackbone.from_config(HieraConfig(**TINY, out_indices=[2]))
    assert model.prune_unused_stages() == ["stage3", "stage4"]
    assert len(model.encoder.stages) == 2
    with torch.no_grad():
        (fmap,) = model(random_pixels(64, 96)).feature_maps
    assert tuple(fmap.shape) == (2, 16, 8, 12)


def test_config_round_trips_transformers_config(tmp_path: Path) -> None:
    reference = transformers.HieraConfig(**SMALL, num_query_pool=2, out_indices=[1, 3])
    reference.save_pretrained(tmp_path)
    config = HieraConfig.from_pretrained(tmp_path)
    assert config.out_indices == [1, 3] and config.patch_size == [7, 7] and config.decoder_hidden_size == 16
    assert config.unknown_fields() == {}
    config.save_pretrained(tmp_path / "ours")
    data = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert data["hidden_size"] == 64 and data["model_type"] == "hiera"
    back = transformers.HieraConfig.from_pretrained(tmp_path / "ours")
    assert (back.num_query_pool, back.hidden_size, back.out_indices) == (2, 64, [1, 3])


# -- real sizes -------------------------------------------------------------------------------------

# transformers' conversion script's configurations of the released models (hub: facebook/hiera-*-224-hf).
RELEASED = {
    "tiny": ({"depths": [1, 2, 7, 2]}, 96),
    "base": ({}, 96),
    "huge": ({"embed_dim": 256, "num_heads": [4, 8, 16, 32], "depths": [2, 6, 36, 4]}, 256),
}


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_sizes_on_the_meta_device(name: str) -> None:
    fields, width = RELEASED[name]
    assert_pyramid_builds_on_meta(
        HieraConfig(**fields, out_indices=[1, 2, 3, 4]),
        lambda: transformers.HieraBackbone(transformers.HieraConfig(**fields, out_indices=[1, 2, 3, 4])),
        [width, 2 * width, 4 * width, 8 * width],
    )


def test_hiera_tiny_runs_at_224() -> None:
    model = assert_pyramid_at_size(HieraConfig(depths=[1, 2, 7, 2], out_indices=[1, 2, 3, 4]), [96, 192, 384, 768])
    assert sum(p.numel() for p in model.parameters()) == 27_142_560


# -- preprocessing ----------------------------------------------------------------------------------


class TestHieraProcessorParity(BitProcessorParity):
    """The hub checkpoints' BitImageProcessor (facebook/hiera-*-hf: shortest edge 256, crop 224), also when the
    file names no type (this plugin declares it)."""

    model_type = "hiera"


# -- config errors ----------------------------------------------------------------------------------


class TestHieraConfigErrors(ConfigErrors):
    config_class = HieraConfig
    config = TINY
    errors = {
        "heads-divide-the-stage-width": (
            {"num_heads": [1, 3, 2, 2]},
            r"num_heads\[1\]=3 must divide stage 2's width int\(embed_dim \* embed_dim_multiplier\*\*1\) = 16",
        ),
        "one-head-count-a-stage": (
            {"num_heads": [1, 1, 2]},
            r"num_heads has 3 entries but depths has 4; give one head count per stage",
        ),
        "one-mask-unit-flag-a-stage": (
            {"masked_unit_attention": [True, False]},
            r"masked_unit_attention has 2 entries but depths has 4",
        ),
        "query-pools-fewer-than-stages": (
            {"num_query_pool": 4},
            r"num_query_pool=4 must be less than the number of stages \(4\): use 0 to 3",
        ),
        "query-pools-not-negative": (
            {"num_query_pool": -1},
            r"num_query_pool=-1: Input should be greater than or equal to 0",
        ),
        "mask-unit-divisible-by-the-pooling": (
            {"masked_unit_size": [4, 4]},
            r"masked_unit_size \[4, 4\] must be divisible by query_stride\*\*\(stages - 1\) = 2\*\*3 = 8",
        ),
        "patch-padding-in-range": (
            {"patch_padding": [0, 0]},
            r"choose 2 \* patch_padding between patch_size - patch_stride and patch_size - 1 \(3 to 6\)",
        ),
        "image-size-a-multiple-of-the-mask-unit": (
            {"image_size": [64, 80]},
            r"image_size \[64, 80\] must be a multiple of patch_stride \* masked_unit_size = \(32, 32\)",
        ),
        "square-patch-stride": ({"patch_stride": [4, 2]}, r"patch_stride must be a square pair such as \[4, 4\]"),
        "query-stride-a-pair": (
            {"query_stride": [2, 2, 2]},
            r"query_stride must be a \(height, width\) pair of integers >= 1",
        ),
        "patch-padding-a-pair": (
            {"patch_padding": [-1, 3]},
            r"patch_padding must be a \(height, width\) pair of integers >= 0",
        ),
        "positive-depths": ({"depths": [1, 0, 1, 1]}, r"depths must list one positive integer per stage"),
        "unknown-activation": ({"hidden_act": "swish2"}, r"hidden_act"),
        "drop-path-below-one": ({"drop_path_rate": 1.0}, r"drop_path_rate=1.0: Input should be less than 1"),
    }
