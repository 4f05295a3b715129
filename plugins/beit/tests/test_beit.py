"""Tests of backbones-beit: the conformance kit, parity with transformers 5.23, behaviour, config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from safetensors.torch import load_file

from backbones import AutoBackbone, Backbone, ConfigError, testing
from backbones.testing import BackboneConformance, TransformersParity, assert_close_maps, assert_parity, random_pixels
from backbones.testing.stages import assert_runs_up_to_deepest_selected_stage
from backbones.testing.vit import REFERENCE_LAYER_RENAMES, TINY_VIT, ViTConfigErrors, assert_same_maps
from backbones_beit import BeitBackbone, BeitConfig

transformers = pytest.importorskip("transformers")

# Four layers (five stages), a 4 x 4 pre-training grid of 8-pixel patches: tiny, yet every code path.
TINY: dict[str, Any] = {**TINY_VIT, "num_hidden_layers": 4, "intermediate_size": 32, "drop_path_rate": 0.0}
ALL_STAGES = [0, 1, 2, 3, 4]
PYRAMID: dict[str, Any] = {**TINY, "add_fpn": True, "use_relative_position_bias": True}
# The pre-training size, a larger non-square one (both position tables upsampled) and a smaller one.
SIZES = [(32, 32), (48, 40), (24, 16)]
# transformers 5.x renames the on-disk keys in memory; ours keep the on-disk names. Ours -> theirs.
REFERENCE_RENAMES = (
    (r"^beit\.encoder\.relative_position_bias\.", "beit.shared_position_bias."),
    (r"\.encoder\.layer\.", ".layers."),
    (r"\.attention\.attention\.relative_position_bias\.", ".relative_position_bias."),
    *REFERENCE_LAYER_RENAMES,
    (r"^fpn1\.0\.", "fpn.fpn1.conv_transpose1."),
    (r"^fpn1\.1\.", "fpn.fpn1.normalization."),
    (r"^fpn1\.3\.", "fpn.fpn1.conv_transpose2."),
    (r"^fpn2\.0\.", "fpn.fpn2."),
)


def _reference_trunk(task_model: Any, config: Any, neck_missing: bool = False) -> Any:
    """transformers' BeitBackbone holding a task model's trunk (and pyramid), loaded by state dict.

    transformers' AutoBackbone.from_pretrained(local_dir) asks the hub first and fails offline, and
    BeitBackbone.from_pretrained on a task checkpoint would not map its keys; in memory both classes
    use the same names, so the state dict carries over directly.
    """
    reference = transformers.BeitBackbone(config).eval()
    own = set(reference.state_dict())
    result = reference.load_state_dict({k: v for k, v in task_model.state_dict().items() if k in own}, strict=False)
    assert result.unexpected_keys == []
    assert all(key.startswith("fpn.") for key in result.missing_keys) if neck_missing else result.missing_keys == []
    return reference


# -- conformance ----------------------------------------------------------------------------------


class _BeitConformance(BackboneConformance):
    model_type = "beit"
    # Multiples of the patch: a stage of stride r is then exactly size // r wide, pyramid levels included
    # (an upsampled level is 4 * (size // patch), which equals size // (patch / 4) only for such sizes).
    # 48 x 40 is non-square and not the pre-training size, so both position tables are resampled.
    input_sizes = ((32, 32), (48, 40))
    spatial_rounding = "floor"
    bad_config_value = ("num_attention_heads", 5, "num_attention_heads=5 does not divide hidden_size")
    extra: dict[str, Any] = {}

    def make_config(self, **overrides: Any) -> BeitConfig:
        return BeitConfig(**{**TINY, **self.extra, **overrides})


class TestBeitConformance(_BeitConformance):
    """Per-layer relative-position bias, absolute position embeddings, layer scale."""

    extra = {"use_relative_position_bias": True, "use_absolute_position_embeddings": True}


class TestBeitSharedBiasConformance(_BeitConformance):
    """One relative-position bias shared by all layers, no layer scale (as BEiT pre-training checkpoints)."""

    extra = {"use_shared_relative_position_bias": True, "layer_scale_init_value": 0.0}


class TestBeitPyramidConformance(_BeitConformance):
    """With the pyramid neck on stages 1..4 (strides 2, 4, 8, 16) and the stem left as is (stride 8)."""

    extra = {"add_fpn": True, "fpn_indices": [1, 2, 3, 4], "use_relative_position_bias": True}


# -- parity with transformers ---------------------------------------------------------------------


class TestBeitParity(TransformersParity):
    """transformers' BeitBackbone checkpoints (every stage saved), and classification checkpoints."""

    backbone_class = BeitBackbone
    reference_task_class = "BeitForImageClassification"
    config = TINY
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "relative-absolute": {"use_relative_position_bias": True, "use_absolute_position_embeddings": True},
        # Mean pooling normalises in the pooler, CLS pooling in a final layernorm; the backbone uses neither.
        "mean-pooling": {"use_relative_position_bias": True, "use_mean_pooling": True},
        "cls-pooling": {"use_relative_position_bias": True, "use_mean_pooling": False},
    }
    seed = 3
    # 48 x 40 first: the one the hidden states are compared at.
    input_sizes = (SIZES[1], SIZES[0], SIZES[2])
    out_indices = (tuple(ALL_STAGES), (-1,), (1, 3), (0,))
    selection_variants = ("relative-absolute",)
    # transformers' BeitBackbone writes its trunk without the "beit." prefix.
    backbone_prefix = "'beit.' added"
    hidden_out_indices = (2,)
    # The stem and every layer as token sequences, CLS first; one attention map per layer.
    hidden_state_count = 5
    hidden_state_shapes = ((2, 31, 16),) * 5
    compare_attentions = True
    attention_shapes = ((2, 2, 31, 31),) * 4
    task_variants = ("mean-pooling", "cls-pooling")
    task_out_indices = (1, 2, 4)
    task_prefix = ""
    round_trip_variants = ("relative-absolute",)
    round_trip_out_indices = (0, 2, 4)
    round_trip_tolerance = 1e-5

    def pooling_norm(self, variant: str) -> str:
        return "beit.pooler.layernorm" if self.options(variant).get("use_mean_pooling", True) else "beit.layernorm"

    def expected_backbone_unused(self, variant: str, model: Backbone) -> list[str]:
        norm = self.pooling_norm(variant)
        return [] if norm == "beit.pooler.layernorm" else [f"{norm}.bias", f"{norm}.weight"]

    def expected_task_report(self, task_class: str, variant: str, model: Backbone) -> tuple[list[str], list[str]]:
        norm = self.pooling_norm(variant)
        return [], sorted(["classifier.bias", "classifier.weight", f"{norm}.bias", f"{norm}.weight"])

    def test_attention_rows_sum_to_one(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        directory, _ = self.reference_checkpoint("relative-absolute", tmp_path_factory)
        ours = AutoBackbone.from_pretrained(directory, out_indices=[2])
        with torch.no_grad():
            output = ours(self.pixels(), output_attentions=True)
        for weights in output.attentions:
            assert torch.allclose(weights.sum(-1), torch.ones(()))

    def test_shared_bias_checkpoint_parity(self, tmp_path: Path) -> None:
        # The pre-training layout: one shared bias, no layer scale; without mean pooling the trunk has a
        # final layernorm, which no backbone stage uses.
        reference = self.reference_model(
            "BeitBackbone",
            "cls-pooling",
            out_indices=[0, 2, 4],
            use_relative_position_bias=False,
            use_shared_relative_position_bias=True,
            layer_scale_init_value=0.0,
        )
        reference.save_pretrained(tmp_path)
        assert "beit.encoder.relative_position_bias.relative_position_bias_table" in load_file(
            tmp_path / "model.safetensors"
        )
        ours, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
        assert report.missing_keys == []
        assert report.unused_keys == ["beit.layernorm.bias", "beit.layernorm.weight"]
        assert not any("lambda" in key for key in ours.state_dict())
        assert_same_maps(ours, reference, map(self.pixels, SIZES))

    def test_shared_and_per_layer_bias_add_up(self, tmp_path: Path) -> None:
        reference = self.reference_model(
            "BeitBackbone", "mean-pooling", out_indices=[1, 4], use_shared_relative_position_bias=True
        )
        reference.save_pretrained(tmp_path)
        ours, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
        assert report.clean, str(report)
        assert_same_maps(ours, reference, map(self.pixels, SIZES))

    def test_masked_image_modeling_checkpoint_parity(self, tmp_path: Path) -> None:
        # A pre-training checkpoint: shared bias, a mask token the backbone never uses, an LM head.
        options = {"use_relative_position_bias": False, "use_shared_relative_position_bias": True}
        pretrained = self.reference_model("BeitForMaskedImageModeling", "cls-pooling", use_mask_token=True, **options)
        pretrained.save_pretrained(tmp_path)
        ours, report = AutoBackbone.from_pretrained(tmp_path, out_indices=[0, 3], output_loading_info=True)
        assert report.missing_keys == []
        assert report.unused_keys == [
            "beit.embeddings.mask_token",
            "beit.layernorm.bias",
            "beit.layernorm.weight",
            "layernorm.bias",
            "layernorm.weight",
            "lm_head.bias",
            "lm_head.weight",
        ]
        reference = _reference_trunk(pretrained, self.reference_config("cls-pooling", out_indices=[0, 3], **options))
        assert_same_maps(ours, reference, map(self.pixels, SIZES[:2]))

    def test_unreshaped_hidden_states_parity(self, tmp_path: Path) -> None:
        # reshape_hidden_states=False: each map is the stage's whole token sequence, CLS token included.
        reference = self.reference_model(
            "BeitBackbone", "mean-pooling", out_indices=[0, 4], reshape_hidden_states=False
        )
        reference.save_pretrained(tmp_path)
        ours = AutoBackbone.from_pretrained(tmp_path)
        pixels = self.pixels((48, 40))
        with torch.no_grad():
            maps = ours(pixels).feature_maps
            assert_parity(maps, reference(pixels).feature_maps)
        assert [tuple(fmap.shape) for fmap in maps] == [(2, 31, 16)] * 2

    def test_checkpoint_with_saved_relative_position_index_loads(
        self, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
    ) -> None:
        # Checkpoints of older transformers releases hold the (derivable) index buffers; they are ignored.
        directory, _ = self.reference_checkpoint("relative-absolute", tmp_path_factory)
        index_keys: list[str] = []

        def add_indices(state: dict[str, torch.Tensor]) -> None:
            index_keys.extend(
                key.replace("relative_position_bias_table", "relative_position_index")
                for key in state
                if key.endswith("bias_table")
            )
            state.update({key: torch.zeros(17, 17, dtype=torch.long) for key in index_keys})

        testing.edit_checkpoint(directory, tmp_path, add_indices)
        _, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
        assert len(index_keys) == 4
        assert report.clean, str(report)


class TestBeitPyramidParity(TransformersParity):
    """transformers' BeitBackbone with its pyramid neck on stages 1..4, saved by transformers."""

    backbone_class = BeitBackbone
    config = PYRAMID
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "pyramid": {"use_absolute_position_embeddings": True},
        "pyramid-shared-bias": {"use_absolute_position_embeddings": True, "use_shared_relative_position_bias": True},
    }
    seed = 3
    input_sizes = (SIZES[1], SIZES[0], SIZES[2])
    reference_out_indices = (1, 2, 3, 4)
    # transformers' rule: the four selected stages feed the four levels (see the tests below for others).
    out_indices = ((1, 2, 3, 4),)
    backbone_prefix = "'beit.' added"
    hidden_out_indices = (1, 2, 3, 4)
    hidden_state_count = 5
    round_trip_out_indices = (1, 2, 3, 4)
    round_trip_tolerance = 1e-5
    # Training mode: the bias is rebuilt with a graph every call, BatchNorm uses batch statistics.
    compare_gradients = True
    key_renames = REFERENCE_RENAMES

    def reference_maps(self, reference: Any, pixels: torch.Tensor) -> list[torch.Tensor]:
        expected = reference(pixels, output_hidden_states=True)
        # The stem is not a pyramid stage: its map is the raw patch grid (CLS token dropped).
        tokens = expected.hidden_states[0][:, 1:]
        stem = tokens.transpose(1, 2).reshape(pixels.shape[0], -1, pixels.shape[2] // 8, pixels.shape[3] // 8)
        return [stem, *expected.feature_maps]

    def test_pyramid_levels_and_shapes(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        directory, _ = self.reference_checkpoint("pyramid", tmp_path_factory)
        ours = AutoBackbone.from_pretrained(directory)
        assert ours.config.fpn_indices == [1, 2, 3, 4]
        assert ours.out_reductions == [2, 4, 8, 16] and ours.channels == [16] * 4
        for size in SIZES:
            with torch.no_grad():
                maps = ours(self.pixels(size)).feature_maps
            grid = (size[0] // 8, size[1] // 8)
            assert [tuple(fmap.shape[2:]) for fmap in maps] == [
                (4 * grid[0], 4 * grid[1]),
                (2 * grid[0], 2 * grid[1]),
                grid,
                (grid[0] // 2, grid[1] // 2),
            ]

    def test_saved_config_records_the_pyramid(self, tmp_path: Path) -> None:
        AutoBackbone.from_config(self.our_config("pyramid-shared-bias", out_indices=[1, 2, 3, 4])).save_pretrained(
            tmp_path
        )
        assert json.loads((tmp_path / "config.json").read_text())["fpn_indices"] == [1, 2, 3, 4]

    def test_pyramid_stages_keep_their_level_in_any_selection(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        directory, reference = self.reference_checkpoint("pyramid", tmp_path_factory)
        pixels = self.pixels((48, 40))
        with torch.no_grad():
            expected = self.reference_maps(reference, pixels)
        # A subset of the pyramid stages, plus the stem (not a pyramid stage: its raw patch grid).
        ours = AutoBackbone.from_pretrained(directory, out_indices=[0, 2, 4], fpn_indices=[1, 2, 3, 4])
        assert ours.out_reductions == [8, 4, 16]
        with torch.no_grad():
            assert_parity(ours(pixels).feature_maps, [expected[0], expected[2], expected[4]])
        # Reselecting on a loaded model keeps the bound levels too.
        ours.out_indices = [3]
        with torch.no_grad():
            assert_parity(ours(pixels).feature_maps, [expected[3]])

    def test_pyramid_override_without_fpn_indices_says_what_to_do(
        self, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        directory, _ = self.reference_checkpoint("pyramid", tmp_path_factory)
        with pytest.raises(
            ConfigError, match=r"add_fpn=True feeds a 4-level pyramid from 4 stages, but the selection has 2"
        ):
            AutoBackbone.from_pretrained(directory, out_indices=[2, 4])

    def test_pyramid_on_a_classification_checkpoint_is_initialised_as_transformers_does(self, tmp_path: Path) -> None:
        options = {"add_fpn": False, "use_absolute_position_embeddings": False}
        classifier = self.reference_model("BeitForImageClassification", "pyramid", num_labels=5, **options)
        classifier.save_pretrained(tmp_path)
        ours, report = AutoBackbone.from_pretrained(
            tmp_path, out_indices=[1, 2, 3, 4], add_fpn=True, output_loading_info=True
        )
        assert ours.config.fpn_indices == [1, 2, 3, 4] and ours.out_reductions == [2, 4, 8, 16]
        assert report.missing_keys == sorted(
            [f"fpn1.{i}.{kind}" for i in (0, 3) for kind in ("bias", "weight")]
            + [f"fpn1.1.{kind}" for kind in ("bias", "weight", "running_mean", "running_var", "num_batches_tracked")]
            + ["fpn2.0.bias", "fpn2.0.weight"]
        )
        norm = ours.fpn1[1]
        assert torch.equal(norm.weight, torch.ones(16)) and torch.equal(norm.bias, torch.zeros(16))
        assert torch.equal(norm.running_mean, torch.zeros(16)) and torch.equal(norm.running_var, torch.ones(16))
        assert torch.equal(ours.fpn2[0].bias, torch.zeros(16)) and 0.01 < ours.fpn2[0].weight.std() < 0.03
        # With the neck copied over, transformers' BeitBackbone gives the same maps.
        config = self.reference_config("pyramid", out_indices=[1, 2, 3, 4], use_absolute_position_embeddings=False)
        reference = _reference_trunk(classifier, config, neck_missing=True)
        neck = {self.reference_name(k): v for k, v in ours.state_dict().items() if "fpn" in k}
        reference.load_state_dict(neck, strict=False)
        assert_same_maps(ours, reference, [self.pixels((32, 32))])

    def test_segmentation_checkpoint_loads_its_pyramid(self, tmp_path: Path) -> None:
        options = {"out_indices": [1, 2, 3, 4], "pool_scales": [1, 2], "auxiliary_channels": 8}
        options["use_absolute_position_embeddings"] = False
        segmenter = self.reference_model("BeitForSemanticSegmentation", "pyramid", num_labels=3, **options)
        segmenter.save_pretrained(tmp_path)
        saved = load_file(tmp_path / "model.safetensors")
        ours, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
        assert report.missing_keys == []
        assert report.unused_keys == sorted(key for key in saved if key.startswith(("decode_head.", "auxiliary_head.")))
        reference = _reference_trunk(segmenter, self.reference_config("pyramid", **options))
        assert_same_maps(ours, reference, map(self.pixels, SIZES[:2]))


def test_drop_path_rates_and_training_only() -> None:
    config = BeitConfig(**{**TINY, "drop_path_rate": 0.3, "out_indices": [-1]})
    reference = transformers.BeitBackbone(transformers.BeitConfig.from_dict(config.to_dict()))
    # transformers uses an Identity where the rate is 0.
    expected = [getattr(layer.drop_path, "drop_prob", 0.0) for layer in reference.beit.layers]
    model = testing.randomize_weights_(BeitBackbone(config))
    assert [layer.drop_path for layer in model.beit.encoder.layer] == pytest.approx(expected)
    assert expected == pytest.approx([0.0, 0.1, 0.2, 0.3])
    pixels = random_pixels(32, 32, seed=1)
    testing.assert_random_only_in_training(model, pixels)


# -- position tables ------------------------------------------------------------------------------


def test_bias_cache_follows_weight_updates_and_dtype() -> None:
    config = BeitConfig(**TINY, use_relative_position_bias=True, out_indices=[-1])
    model = testing.randomize_weights_(BeitBackbone(config)).eval()
    pixels = random_pixels(48, 40, seed=1)
    with torch.no_grad():
        before = model(pixels).feature_maps[0]
        table = model.beit.encoder.layer[2].attention.attention.relative_position_bias.relative_position_bias_table
        table.add_(torch.randn_like(table))  # in place, as an optimiser step or load_state_dict does
        after = model(pixels).feature_maps[0]
        fresh = BeitBackbone(config).eval()
        fresh.load_state_dict(model.state_dict())
        assert not torch.allclose(before, after)
        assert torch.equal(after, fresh(pixels).feature_maps[0])
        doubled = model.double()(pixels.double()).feature_maps[0]
    assert doubled.dtype == torch.float64
    assert_close_maps([doubled], [after], atol=1e-5)


def test_relative_bias_gets_gradient_in_eval_mode() -> None:
    model = testing.randomize_weights_(BeitBackbone(BeitConfig(**TINY, use_shared_relative_position_bias=True))).eval()
    with torch.no_grad():
        model(random_pixels(32, 32, seed=1))  # fills the cache
    model(random_pixels(32, 32, seed=1)).feature_maps[0].pow(2).sum().backward()
    table = model.beit.encoder.relative_position_bias.relative_position_bias_table
    assert table.grad is not None and table.grad.abs().sum() > 0


def test_relative_bias_layout() -> None:
    # Query CLS -> patch, patch -> CLS and CLS -> CLS take the last three table rows; patch pairs take
    # the row of their offset (dy + 3) * 7 + (dx + 3) on the 4 x 4 grid.
    model = BeitBackbone(BeitConfig(**TINY, use_relative_position_bias=True)).eval()
    module = model.beit.encoder.layer[0].attention.attention.relative_position_bias
    with torch.no_grad():
        module.relative_position_bias_table.copy_(torch.arange(52.0)[:, None] * torch.tensor([1.0, -1.0]))
        bias = module(4, 4)
    assert bias.shape == (1, 2, 17, 17)
    assert torch.equal(bias[0, 1], -bias[0, 0])
    assert bias[0, 0, 0, 5].item() == 49 and bias[0, 0, 5, 0].item() == 50 and bias[0, 0, 0, 0].item() == 51
    # token 1 is (0, 0), token 7 is (1, 2): offset (-1, -2) -> (2 * 7 + 1).
    assert bias[0, 0, 1, 7].item() == 15 and bias[0, 0, 7, 1].item() == (4 * 7 + 5)


def test_non_square_pretraining_size() -> None:
    # transformers assumes a square pre-training grid (it reshapes the tables as squares and fails or
    # scrambles them otherwise); here the grid is H x W, so a 32 x 48 model is self-consistent.
    config = BeitConfig(
        **{**TINY, "image_size": [32, 48]},
        use_relative_position_bias=True,
        use_absolute_position_embeddings=True,
        out_indices=[-1],
    )
    model = testing.randomize_weights_(BeitBackbone(config)).eval()
    module = model.beit.encoder.layer[0].attention.attention.relative_position_bias
    assert module.relative_position_bias_table.shape == (7 * 11 + 3, 2)
    assert model.beit.embeddings.position_embeddings.shape == (1, 4 * 6 + 1, 16)
    with torch.no_grad():
        table = module.relative_position_bias_table
        # At the pre-training grid the table is read as is (resampling to the same size is the identity).
        assert torch.equal(module(4, 6), module._resampled_table(4, 6).t()[:, module.grid_index][None])
        assert torch.equal(module(4, 6)[0, :, 0, 0], table[-1])
        maps = [model(random_pixels(*size, seed=1)).feature_maps[0] for size in [(32, 48), (40, 40)]]
    assert [tuple(fmap.shape) for fmap in maps] == [(2, 16, 4, 6), (2, 16, 5, 5)]


# -- selection and pruning ------------------------------------------------------------------------


def test_pruning_drops_deeper_layers_and_levels() -> None:
    model = BeitBackbone(BeitConfig(**PYRAMID, fpn_indices=[1, 2, 3, 4], out_indices=[0, 2]))
    assert model.prune_unused_stages() == ["stage3", "stage4"]
    assert len(model.beit.encoder.layer) == 2
    keys = set(model.state_dict())
    assert any(key.startswith("fpn1.") for key in keys) and any(key.startswith("fpn2.") for key in keys)
    assert not any(key.startswith(("beit.encoder.layer.2.", "beit.encoder.layer.3.")) for key in keys)
    assert not hasattr(model, "fpn3") and not hasattr(model, "fpn4")
    with torch.no_grad():
        maps = model(random_pixels(32, 32, seed=1)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [(2, 16, 4, 4), (2, 16, 8, 8)]


def test_truncated_forward_skips_deeper_layers() -> None:
    model = BeitBackbone(BeitConfig(**TINY, out_indices=[1])).eval()
    assert_runs_up_to_deepest_selected_stage(model, model.beit.encoder.layer, random_pixels(32, 32, seed=1))


# -- default size ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_beit_base_feature_map_shapes() -> None:
    config = BeitConfig(add_fpn=True, fpn_indices=[3, 5, 7, 11], out_indices=[3, 5, 7, 11, 12])
    # The pyramid's four levels (strides 4 to 32), then the last layer's map (stride 16), all 768 wide.
    shapes = [(1, 768, 56, 56), (1, 768, 28, 28), (1, 768, 14, 14), (1, 768, 7, 7), (1, 768, 14, 14)]
    testing.assert_maps_at_size(config, shapes)


# -- config ---------------------------------------------------------------------------------------


def test_transformers_config_json_round_trips(tmp_path_factory: pytest.TempPathFactory) -> None:
    directory, _ = TestBeitParity().reference_checkpoint("relative-absolute", tmp_path_factory)
    pyramid_directory, _ = TestBeitPyramidParity().reference_checkpoint("pyramid", tmp_path_factory)
    saved = json.loads((directory / "config.json").read_text())
    config = BeitConfig.from_dict(saved)
    assert config.out_indices == ALL_STAGES and config.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    # Head fields (pool_scales, vocab_size, ...) are kept as they were; the forward defaults are added.
    defaults = {
        "output_attentions": False,
        "output_hidden_states": False,
        "output_prefix_tokens": False,
        "return_dict": True,
    }
    assert config.to_dict() == {**saved, **defaults}
    saved = json.loads((pyramid_directory / "config.json").read_text())
    assert BeitConfig.from_dict(saved).to_dict() == {**saved, **defaults, "fpn_indices": [1, 2, 3, 4]}


def test_legacy_segmentation_indices_select_stages() -> None:
    assert BeitConfig(**TINY, segmentation_indices=[1, 3]).out_indices == [1, 3]
    assert BeitConfig(**TINY, segmentation_indices=[1, 3], out_indices=[2]).out_indices == [2]


def test_config_accepts_square_patch_pair_and_image_pair() -> None:
    config = BeitConfig(patch_size=[16, 16], image_size=[224, 320])
    assert config.patch_size == 16 and config.patch_grid == (14, 20)


class TestBeitConfigErrors(ViTConfigErrors):
    config_class = BeitConfig
    config = TINY
    vit_rules = ("heads-divide-the-width", "unknown-activation", "square-patches")
    errors = {
        "image-holds-a-patch": ({"image_size": 4}, r"image_size 4 is smaller than patch_size=8"),
        "at-least-one-layer": (
            {"num_hidden_layers": 0},
            r"num_hidden_layers=0: Input should be greater than or equal to 1",
        ),
        "layer-scale-not-negative": (
            {"layer_scale_init_value": -0.1},
            r"layer_scale_init_value=-0.1: Input should be greater than or equal to 0",
        ),
        "drop-path-below-one": ({"drop_path_rate": 1.0}, r"drop_path_rate=1.0: Input should be less than 1"),
        "pyramid-needs-four-stages": (
            {"add_fpn": True},
            r"add_fpn=True feeds a 4-level pyramid from 4 stages, but the selection has 1 \(\['stage4'\]\)",
        ),
        "pyramid-indices-four": (
            {"add_fpn": True, "fpn_indices": [1, 2, 3]},
            r"fpn_indices must list 4 stages \(one per pyramid level\)",
        ),
        "pyramid-indices-in-range": (
            {"add_fpn": True, "fpn_indices": [1, 2, 3, 9]},
            r"fpn_indices \[1, 2, 3, 9\] has indices outside the 5 stages",
        ),
        "pyramid-indices-distinct": (
            {"add_fpn": True, "fpn_indices": [1, 2, 2, 4]},
            r"fpn_indices \[1, 2, 2, 4\] names a stage twice",
        ),
        "pyramid-indices-shallow-to-deep": (
            {"add_fpn": True, "fpn_indices": [4, 1, 2, 3]},
            r"must go from shallow to deep .*use \[1, 2, 3, 4\]",
        ),
        "pyramid-needs-reshaped-maps": (
            {"add_fpn": True, "fpn_indices": [1, 2, 3, 4], "reshape_hidden_states": False},
            r"add_fpn=True needs reshape_hidden_states=True",
        ),
    }


def test_enabling_pyramid_later_needs_its_stages() -> None:
    config = BeitConfig(**TINY)
    with pytest.raises(ConfigError, match=r"add_fpn=True needs the four stages that feed the pyramid: set fpn_indices"):
        config.add_fpn = True
    assert config.add_fpn is False
    config.fpn_indices = [1, 2, 3, 4]
    config.add_fpn = True
    assert config.fpn_positions == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match=r"fpn_indices \[1, 2, 3, 4\] has indices outside the 4 stages"):
        config.num_hidden_layers = 3


def test_prefix_tokens_are_transformers_class_tokens(tmp_path: Path) -> None:
    """Each requested stage's prefix token is the class token of transformers' hidden state of that stage
    (BEiT's maps have no final norm), for plain and pyramid stages alike."""
    config = transformers.BeitConfig(**TINY, add_fpn=True, out_indices=[1, 2, 3, 4])
    reference = testing.randomize_weights_(transformers.BeitBackbone(config), seed=3).eval()
    reference.save_pretrained(tmp_path)
    ours = AutoBackbone.from_pretrained(tmp_path)
    pixels = random_pixels(32, 32, seed=1)
    with torch.no_grad():
        expected = reference(pixels, output_hidden_states=True).hidden_states
        output = ours(pixels, output_prefix_tokens=True)
    assert [tuple(tokens.shape) for tokens in output.prefix_tokens] == [(2, 1, TINY["hidden_size"])] * 4
    assert_parity(output.prefix_tokens, [expected[index][:, :1] for index in (1, 2, 3, 4)])
