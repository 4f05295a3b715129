"""Tests of backbones-swin: the conformance kit, parity with transformers, a default-size shape check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from backbones import AutoBackbone, testing
from backbones.testing import ConfigErrors, TransformersParity, assert_close_maps, assert_parity, random_pixels
from backbones.testing.hierarchical import SWIN_SMALL, SWIN_TINY, WindowConformance, assert_cached_bias_trains
from backbones_swin import SwinBackbone, SwinConfig

transformers = pytest.importorskip("transformers")

TINY = dict(SWIN_TINY)
SMALL = dict(SWIN_SMALL)
ALL_STAGES = [0, 1, 2, 3]
# The output norm of each stage named, as load-report key templates.
NORM_KEYS = ("hidden_states_norms.{stage}.bias", "hidden_states_norms.{stage}.weight")
# transformers 5.x renames the on-disk attention/MLP keys in memory; ours keep the on-disk names. Ours -> theirs.
REFERENCE_RENAMES = (
    (r"attention\.self\.query\.", "attention.q_proj."),
    (r"attention\.self\.key\.", "attention.k_proj."),
    (r"attention\.self\.value\.", "attention.v_proj."),
    (r"attention\.self\.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    (r"attention\.output\.dense\.", "attention.o_proj."),
    (r"intermediate\.dense\.", "mlp.fc1."),
    (r"output\.dense\.", "mlp.fc2."),
)


class TestSwinConformance(WindowConformance):
    config_class = SwinConfig
    config = TINY
    default_pyramid = (96, 192, 384, 768)
    lora_deployment_checks = True  # the kit's hierarchical model for compile and DDP on a LoRA-adapted model


# -- parity with transformers ---------------------------------------------------------------------


class TestSwinParity(TransformersParity):
    backbone_class = SwinBackbone
    saved_config_fields = {"depths": [1, 2, 2], "out_indices": ALL_STAGES, "hidden_size": 64, "num_layers": 3}
    reference_task_class = "SwinForImageClassification"
    config = SMALL
    seed = 3
    # 36 x 52: a 9 x 13 grid, padded in every stage; 32: whole windows; 38 x 50: not a patch multiple.
    input_sizes = ((36, 52), (32, 32), (38, 50))
    out_indices = (tuple(ALL_STAGES), (-1,), (1, 3))
    backbone_unused_keys = ("swin.layernorm.bias", "swin.layernorm.weight", *NORM_KEYS)
    hidden_state_count = 4
    compare_attentions = True
    # One per stage: the last block's probabilities, (batch * windows, heads, N, N).
    attention_shapes = ((2 * 12, 2, 16, 16), (2 * 4, 2, 16, 16), (2, 4, 16, 16))
    task_out_indices = (1, 2, 3)
    # The task model has no output norms: ours are initialised as transformers' are (weight 1, bias 0).
    task_missing_keys = NORM_KEYS
    task_unused_keys = ("classifier.bias", "classifier.weight", "swin.layernorm.bias", "swin.layernorm.weight")
    round_trip_out_indices = (0, 2, 3)
    round_trip_tolerance = 1e-5
    compare_gradients = True
    key_renames = REFERENCE_RENAMES

    def test_saved_config_has_transformers_fields(self, tmp_path: Path) -> None:
        AutoBackbone.from_config(self.our_config("default")).save_pretrained(tmp_path)
        config = json.loads((tmp_path / "config.json").read_text())
        assert config["hidden_size"] == 64 and config["num_layers"] == 3

    def test_checkpoint_with_saved_relative_position_index_loads(
        self, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
    ) -> None:
        # Checkpoints written before transformers 5 hold the (derivable) index buffer; it is ignored.
        directory, _ = self.reference_checkpoint("default", tmp_path_factory)
        state = load_file(directory / "model.safetensors")
        index_keys = [
            key.replace("relative_position_bias_table", "relative_position_index")
            for key in state
            if key.endswith("bias_table")
        ]
        state.update({key: torch.zeros(16, 16, dtype=torch.long) for key in index_keys})
        save_file(state, tmp_path / "model.safetensors")
        (tmp_path / "config.json").write_text((directory / "config.json").read_text())
        _, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
        assert len(index_keys) == 5
        assert report.missing_keys == []
        assert report.unused_keys == ["swin.layernorm.bias", "swin.layernorm.weight"]

    def test_absolute_position_embeddings_match(self, tmp_path: Path) -> None:
        reference = self.reference_model(
            "SwinBackbone", "default", out_indices=[0, 2], use_absolute_embeddings=True, **TINY
        )
        reference.save_pretrained(tmp_path)
        ours, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
        assert "swin.embeddings.position_embeddings" not in report.unused_keys
        pixels = random_pixels(32, 32)
        with torch.no_grad():
            assert_parity(ours(pixels).feature_maps, reference(pixels).feature_maps)
            # Another size: the 8 x 8 position grid is resampled (transformers would raise here).
            maps = ours(random_pixels(48, 40)).feature_maps
        assert [tuple(m.shape) for m in maps] == [(2, 16, 12, 10), (2, 32, 6, 5)]


def test_drop_path_rates_and_training_only() -> None:
    config = SwinConfig(**{**SMALL, "drop_path_rate": 0.5, "out_indices": [-1]})
    reference = transformers.SwinBackbone(transformers.SwinConfig.from_dict(config.to_dict()))
    # transformers uses an Identity where the rate is 0.
    expected = [
        getattr(block.drop_path, "drop_prob", 0.0) for layer in reference.swin.encoder.layers for block in layer.blocks
    ]
    model = testing.randomize_weights_(SwinBackbone(config))
    assert [block.drop_path for layer in model.swin.encoder.layers for block in layer.blocks] == expected
    assert expected == [0.0, 0.125, 0.25, 0.375, 0.5]
    pixels = random_pixels(32, 32)
    testing.assert_random_only_in_training(model, pixels)


# -- attention-bias cache -------------------------------------------------------------------------


def test_cache_follows_weight_updates_and_dtype() -> None:
    model = testing.randomize_weights_(SwinBackbone(SwinConfig(out_indices=[-1], **TINY))).eval()
    table = model.swin.encoder.layers[1].blocks[1].attention.self.relative_position_bias_table
    testing.assert_cache_follows_weights(model, table, random_pixels(32, 32), dtype_tolerance=1e-5)


def test_relative_bias_gets_gradient_in_eval_mode() -> None:
    model = testing.randomize_weights_(SwinBackbone(SwinConfig(out_indices=[-1], **TINY))).eval()
    table = model.swin.encoder.layers[1].blocks[1].attention.self.relative_position_bias_table
    assert_cached_bias_trains(model, [table], random_pixels(32, 32))


# -- selection and pruning ------------------------------------------------------------------------


def test_reassigning_out_features_follows_norms() -> None:
    model = testing.randomize_weights_(SwinBackbone(SwinConfig(out_indices=[-1], **SMALL))).eval()
    model.out_indices = [1, 2]
    assert sorted(model.hidden_states_norms) == ["stage1", "stage2"]
    norm = model.hidden_states_norms["stage1"]
    assert torch.equal(norm.weight, torch.ones(16)) and torch.equal(norm.bias, torch.zeros(16))
    fresh = SwinBackbone(SwinConfig(out_indices=[1, 2], **SMALL)).eval()
    fresh.load_state_dict(model.state_dict())  # strict: the same keys as a model built for [1, 2]
    pixels = random_pixels(32, 32)
    with torch.no_grad():
        assert_close_maps(model(pixels).feature_maps, fresh(pixels).feature_maps, atol=0.0)


def test_pruning_drops_unused_downsample() -> None:
    model = SwinBackbone(SwinConfig(out_indices=[1], **SMALL))
    assert model.prune_unused_stages() == ["stage2", "stage3"]
    assert len(model.swin.encoder.layers) == 1 and model.swin.encoder.layers[0].downsample is None
    assert not any(
        key.startswith(("swin.encoder.layers.1.", "swin.encoder.layers.0.downsample")) for key in model.state_dict()
    )


# -- config ---------------------------------------------------------------------------------------


class TestSwinConfigErrors(ConfigErrors):
    config_class = SwinConfig
    config = TINY
    errors = {
        "heads_per_stage": ({"num_heads": [2, 4, 8]}, "num_heads has 3 entries but depths has 2"),
        "heads_divide_width": (
            {"embed_dim": 18, "num_heads": [4, 4]},
            r"num_heads\[0\]=4 must be a positive divisor of stage 1's width",
        ),
        "no_stage": ({"depths": []}, "depths must list at least one stage"),
        "activation": ({"hidden_act": "swishy"}, "hidden_act 'swishy' is not supported"),
        "patch_pair": ({"patch_size": [4, 2]}, r"patch_size must be one int or a square pair"),
    }
    invalid_values = (("window_size", 0, "greater than or equal to 1"), ("drop_path_rate", 1.0, "less than 1"))


def test_config_accepts_square_patch_pair() -> None:
    assert SwinConfig(patch_size=[4, 4]).patch_size == 4
