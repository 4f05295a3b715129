"""Tests of backbones-swinv2: the conformance kit, parity with transformers, a default-size shape check."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from backbones import AutoBackbone, testing
from backbones.testing import ConfigErrors, TransformersParity, assert_close_maps, assert_parity, random_pixels
from backbones.testing.hierarchical import SWIN_TINY, WindowConformance, assert_cached_bias_trains
from backbones_swinv2 import Swinv2Backbone, Swinv2Config
from backbones_swinv2._model import _log_spaced_offsets, _PostNormBlock

transformers = pytest.importorskip("transformers")

# Two stages on a 12-patch pre-training grid: windows of 4 that shift in both stages (12 and 6 > 4).
TINY: dict[str, Any] = {**SWIN_TINY, "image_size": 48}
# Three stages on a 10-patch grid (maps of 10, 5 and 2 patches): stages 1 and 2 shift windows of 4, stage 3's
# window shrinks to 2 and does not shift; stages 2 and 3 have pre-training windows.
SMALL: dict[str, Any] = {**TINY, "depths": [2, 2, 2], "num_heads": [2, 2, 4], "image_size": 40}
SMALL["pretrained_window_sizes"] = [0, 8, 3]
ALL_STAGES = [0, 1, 2, 3]


class TestSwinv2Conformance(WindowConformance):
    config_class = Swinv2Config
    config = TINY
    default_pyramid = (96, 192, 384, 768)
    # 48: the pre-training grid; 40 x 56 gives a 10 x 14 patch grid, so every stage pads.
    input_sizes = ((48, 48), (40, 56))


# -- parity with transformers ---------------------------------------------------------------------


class TestSwinv2Parity(TransformersParity):
    backbone_class = Swinv2Backbone
    saved_config_fields = {
        "depths": [2, 2, 2],
        "out_indices": ALL_STAGES,
        "pretrained_window_sizes": [0, 8, 3],
        "hidden_size": 64,
        "num_layers": 3,
    }
    reference_task_class = "Swinv2ForImageClassification"
    config = SMALL
    seed = 3
    # 36 x 52: a 9 x 13 grid, padded to windows in every stage; 40: whole patches; 38 x 50: not a patch
    # multiple; 64: larger than the pre-training size (the windows stay those of image_size).
    input_sizes = ((36, 52), (40, 40), (38, 50), (64, 64))
    out_indices = (tuple(ALL_STAGES), (-1,), (0, 2), (1, 3))
    hidden_state_count = 4
    # Token sequences (batch, H * W, channels), as transformers' Swinv2Backbone returns them.
    hidden_state_shapes = ((2, 117, 16), (2, 117, 16), (2, 35, 32), (2, 12, 64))
    compare_attentions = True
    # One per stage: the last block's probabilities, (batch * windows, heads, N, N); stage 3's window is 2.
    attention_shapes = ((2 * 12, 2, 16, 16), (2 * 4, 2, 16, 16), (2 * 4, 4, 4, 4))
    attention_tolerance = 1e-4
    task_out_indices = (1, 2, 3)
    # Swinv2Backbone has no output norms to initialise: nothing is missing.
    task_unused_keys = ("classifier.bias", "classifier.weight", "swinv2.layernorm.bias", "swinv2.layernorm.weight")
    round_trip_out_indices = (0, 2, 3)
    compare_gradients = True

    def prepare_reference(self, model: Any) -> None:
        """One head of a shifted block gets a temperature past the clamp (exp(6) > 100, so 100 is used).

        Such temperatures scale fp32 rounding too: folding the temperature into the query (for SDPA) and
        scaling the cosine afterwards (transformers) differ by up to 7e-5 here when a second head runs at 90.
        """
        trunk = getattr(model, "swinv2", model)
        with torch.no_grad():
            trunk.encoder.layers[1].blocks[1].attention.self.logit_scale[1] = 6.0

    def test_saved_config_has_transformers_fields(self, tmp_path: Path) -> None:
        AutoBackbone.from_config(self.our_config("default")).save_pretrained(tmp_path)
        config = json.loads((tmp_path / "config.json").read_text())
        assert config["hidden_size"] == 64 and config["num_layers"] == 3
        assert transformers.Swinv2Config.from_pretrained(tmp_path).pretrained_window_sizes == [0, 8, 3]

    def test_windows_shifts_and_tables_match_transformers(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        directory, reference = self.reference_checkpoint("default", tmp_path_factory)
        ours = AutoBackbone.from_pretrained(directory)
        config = ours.config
        assert config.stage_window_sizes == [4, 4, 2] and config.stage_shift_sizes == [2, 2, 0]
        mine = [(block.window_size, block.shift) for stage in ours.encoder.layers for block in stage.blocks]
        theirs = [(block.window_size, block.shift_size) for stage in reference.encoder.layers for block in stage.blocks]
        assert mine == theirs == [(4, 0), (4, 2), (4, 0), (4, 2), (2, 0), (2, 0)]
        for our_stage, their_stage in zip(ours.encoder.layers, reference.encoder.layers):
            for our_block, their_block in zip(our_stage.blocks, their_stage.blocks):
                attention, expected = our_block.attention.self, their_block.attention.self
                # The bias MLP's inputs (log-spaced offsets, scaled by the pre-training window) and the index.
                table = _log_spaced_offsets(attention.window_size, attention.pretrained_window, torch.device("cpu"))
                assert torch.equal(table, expected.relative_coords_table.view(-1, 2))
                assert torch.equal(attention.relative_position_index, expected.relative_position_index)

    def test_checkpoint_with_saved_derived_tables_loads(
        self, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
    ) -> None:
        # Some converted checkpoints hold the (derivable) coordinate table and index buffers; they are ignored.
        directory, reference = self.reference_checkpoint("default", tmp_path_factory)
        state = load_file(directory / "model.safetensors")
        derived = {
            name: buffer
            for name, buffer in reference.state_dict(keep_vars=True).items()
            if name.endswith(("relative_coords_table", "relative_position_index"))
        }
        assert derived == {}  # non-persistent in transformers 5: add them as older files have them
        for name, module in reference.named_modules():
            if name.endswith("attention.self"):
                state[f"{name}.relative_coords_table"] = module.relative_coords_table.contiguous()
                state[f"{name}.relative_position_index"] = module.relative_position_index.contiguous()
        save_file(state, tmp_path / "model.safetensors")
        (tmp_path / "config.json").write_text((directory / "config.json").read_text())
        ours, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
        assert report.missing_keys == [] and report.unused_keys == []
        pixels = self.pixels()
        with torch.no_grad():
            assert_parity(ours(pixels).feature_maps, reference(pixels).feature_maps)


def test_shift_mask_is_added_twice_as_in_transformers() -> None:
    """Tokens whose best-matching keys lie across a shifted-window seam, at the highest temperature.

    Rows 0-1 of an 8 x 8 map hold e2, the rest e1; the query projection swaps e1 and e2, the key is the
    identity. After the shift, rows 6-7 share a window with rows 0-1 but are masked from them: their
    queries match only those masked keys (cosine 1) and none of their own (cosine 0), at a temperature of
    100. A -100 mask would leave the masked pairs level with the rest; transformers adds it twice.
    """
    config = Swinv2Config(embed_dim=4, depths=[2], num_heads=[1], window_size=4, image_size=32)
    reference = transformers.models.swinv2.modeling_swinv2.Swinv2Layer(
        transformers.Swinv2Config(**config.to_dict()), dim=4, input_resolution=(8, 8), num_heads=1, shift_size=2
    ).eval()
    swap = torch.eye(4)[[1, 0, 2, 3]]
    with torch.no_grad():
        for module in reference.modules():
            for parameter in module.parameters(recurse=False):
                parameter.copy_(torch.eye(4) if parameter.shape == (4, 4) else torch.zeros_like(parameter))
        reference.attention.self.query.weight.copy_(swap)
        reference.attention.self.logit_scale.fill_(5.0)  # clamped to log(100)
        reference.layernorm_before.weight.fill_(1.0)
        reference.layernorm_after.weight.fill_(1.0)
    block = _PostNormBlock(config, 4, 1, shift=2, drop_path=0.0, window=4, pretrained_window=0).eval()
    block.load_state_dict(reference.state_dict())
    x = torch.zeros(1, 8, 8, 4)
    x[:, :2, :, 1] = 1.0
    x[:, 2:, :, 0] = 1.0
    with torch.no_grad():
        (expected,) = reference(x.view(1, 64, 4), (8, 8))
        mine, _ = block(x, need_weights=False)
        assert_close_maps([mine.reshape(1, 64, 4)], [expected], atol=1e-4)
        attention = block.attention.self
        assert attention.shift_mask_value == -200.0
        attention.shift_mask_value = -100.0  # type: ignore[misc]  # this instance only
        attention._bias_cache.clear()
        single, _ = block(x, need_weights=False)
    assert (single.reshape(1, 64, 4) - expected).abs().max() > 0.1


def test_drop_path_rates_and_training_only() -> None:
    config = Swinv2Config(**{**SMALL, "drop_path_rate": 0.5, "out_indices": [-1]})
    reference = transformers.Swinv2Backbone(transformers.Swinv2Config.from_dict(config.to_dict()))
    # transformers uses an Identity where the rate is 0, and applies the rate to both residual branches.
    expected = [
        getattr(block.drop_path, "drop_prob", 0.0) for layer in reference.encoder.layers for block in layer.blocks
    ]
    model = testing.randomize_weights_(Swinv2Backbone(config))
    rates = [block.drop_path for layer in model.encoder.layers for block in layer.blocks]
    assert rates == pytest.approx(expected) and rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    pixels = random_pixels(40, 40)
    testing.assert_random_only_in_training(model, pixels)


def test_fresh_model_initialised_as_transformers() -> None:
    model = Swinv2Backbone(Swinv2Config(**SMALL))
    attention = model.encoder.layers[1].blocks[0].attention.self
    assert torch.equal(attention.logit_scale, torch.full((2, 1, 1), math.log(10.0)))
    assert attention.key.bias is None and attention.query.bias is not None
    assert model.encoder.layers[0].downsample.norm.weight.shape == (32,)  # norm after the reduction: 2C
    assert not hasattr(model, "hidden_states_norms")


# -- position-bias cache --------------------------------------------------------------------------


def test_cache_follows_mlp_updates_and_dtype() -> None:
    model = testing.randomize_weights_(Swinv2Backbone(Swinv2Config(out_indices=[-1], **TINY))).eval()
    weight = model.encoder.layers[1].blocks[1].attention.self.continuous_position_bias_mlp[2].weight
    testing.assert_cache_follows_weights(model, weight, random_pixels(48, 48), dtype_tolerance=1e-4)


def test_bias_mlp_gets_gradient_in_eval_mode() -> None:
    model = testing.randomize_weights_(Swinv2Backbone(Swinv2Config(out_indices=[-1], **TINY))).eval()
    attention = model.encoder.layers[1].blocks[1].attention.self
    parameters = [*attention.continuous_position_bias_mlp.parameters(), attention.logit_scale]
    assert_cached_bias_trains(model, parameters, random_pixels(48, 48))


# -- selection and pruning ------------------------------------------------------------------------


def test_selection_changes_no_weights() -> None:
    model = Swinv2Backbone(Swinv2Config(out_indices=[-1], **SMALL))
    keys = list(model.state_dict())
    model.out_indices = [0, 1]
    assert list(model.state_dict()) == keys
    assert model.channels == [16, 16] and model.out_reductions == [4, 4]


def test_pruning_drops_unused_downsample() -> None:
    model = Swinv2Backbone(Swinv2Config(out_indices=[1], **SMALL))
    assert model.prune_unused_stages() == ["stage2", "stage3"]
    assert len(model.encoder.layers) == 1 and model.encoder.layers[0].downsample is None
    assert not any(key.startswith(("encoder.layers.1.", "encoder.layers.0.downsample")) for key in model.state_dict())


# -- default size ---------------------------------------------------------------------------------


def test_swinv2_tiny_windows_and_shifts() -> None:
    config = Swinv2Config(out_indices=[1, 2, 3, 4])
    assert config.stage_window_sizes == [7, 7, 7, 7] and config.stage_shift_sizes == [3, 3, 3, 0]


# -- config ---------------------------------------------------------------------------------------


def test_longer_pretrained_window_sizes_are_accepted() -> None:
    # transformers' default has four entries; a two-stage config keeps it (the extra entries are unused).
    config = Swinv2Config(**TINY)
    assert config.pretrained_window_sizes == [0, 0, 0, 0]
    assert config.stage_window_sizes == [4, 4] and config.stage_shift_sizes == [2, 2]


class TestSwinv2ConfigErrors(ConfigErrors):
    config_class = Swinv2Config
    config = TINY
    errors = {
        "absolute_embeddings": ({"use_absolute_embeddings": True}, "use_absolute_embeddings=True is not supported"),
        "pretrained_windows_per_stage": (
            {"pretrained_window_sizes": [0]},
            "pretrained_window_sizes has 1 entries but depths has 2",
        ),
        "pretrained_window_of_one": (
            {"pretrained_window_sizes": [0, 1]},
            r"pretrained_window_sizes\[1\]=1 is invalid: use 0",
        ),
        "negative_pretrained_window": (
            {"pretrained_window_sizes": [-2, 0]},
            r"pretrained_window_sizes\[0\]=-2 is invalid",
        ),
        "grid_too_small": (
            {"image_size": 4, "depths": [1, 1, 1], "num_heads": [1, 1, 1]},
            r"gives a 1-patch-high grid, too small for 3 stages .* at least patch_size \* 2\*\*2 = 16",
        ),
        "heads_per_stage": ({"num_heads": [2, 4, 8]}, "num_heads has 3 entries but depths has 2"),
        "activation": ({"hidden_act": "swishy"}, "hidden_act 'swishy' is not supported"),
    }
    invalid_values = (("window_size", 0, "greater than or equal to 1"),)
