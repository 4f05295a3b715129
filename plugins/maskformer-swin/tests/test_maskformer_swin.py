"""Tests of backbones-maskformer-swin: the conformance kit, parity with transformers (backbone, base-model
and MaskFormer segmentation checkpoints), a default-size shape check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from safetensors import safe_open

from backbones import AutoBackbone, Backbone, load_backbone
from backbones.testing import (
    TINY_DETR,
    ConfigErrors,
    TransformersParity,
    assert_close_maps,
    random_pixels,
    randomize_weights_,
)
from backbones.testing.hierarchical import SWIN_SMALL, SWIN_TINY, WindowConformance
from backbones_maskformer_swin import MASKFORMER_BACKBONE_PREFIX, MaskFormerSwinBackbone, MaskFormerSwinConfig

transformers = pytest.importorskip("transformers")

TINY = dict(SWIN_TINY)
SMALL = dict(SWIN_SMALL)
STAGES = [1, 2, 3]  # transformers' MaskFormerSwinBackbone refuses "stem"
# 32: whole windows; 36 x 52: a 9 x 13 grid, padded in every stage; 38 x 50: not a patch multiple.
SIZES = [(32, 32), (36, 52), (38, 50)]
NORM_KEYS = [f"hidden_states_norms.{index}.{kind}" for index in range(3) for kind in ("bias", "weight")]


def _as_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """transformers' ``(B, H * W, C)`` hidden state as a ``(B, C, H, W)`` map."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)


class TestMaskFormerSwinConformance(WindowConformance):
    config_class = MaskFormerSwinConfig
    config = TINY
    default_pyramid = (96, 192, 384, 768)


# -- parity with transformers ---------------------------------------------------------------------


class TestMaskFormerSwinParity(TransformersParity):
    backbone_class = MaskFormerSwinBackbone
    saved_config_fields = {"depths": [1, 2, 2], "out_indices": STAGES}
    # The base model: its keys lack the backbone's "model." level.
    reference_task_class = "MaskFormerSwinModel"
    config = SMALL
    seed = 3
    reference_out_indices = tuple(STAGES)  # transformers' MaskFormerSwinBackbone refuses "stem"
    # SIZES, then 64: larger than the pre-training size.
    input_sizes = (SIZES[1], SIZES[0], SIZES[2], (64, 64))
    out_indices = (tuple(STAGES), (-1,), (1, 3), (2,))
    # Every stage's norm is a weight whatever the selection; the trunk's final norm is unused by backbones.
    backbone_unused_keys = ("model.layernorm.bias", "model.layernorm.weight")
    hidden_state_count = 4
    # The stem's tokens, then per stage every block's input and output, stacked (see test_transformers_compat.py).
    hidden_state_shapes = ((2, 117, 16), (2, 2, 117, 16), (4, 2, 35, 32), (4, 2, 12, 64))
    compare_attentions = True
    attention_shapes = ((2 * 12, 2, 16, 16), (2 * 4, 2, 16, 16), (2, 4, 16, 16))
    task_options: ClassVar[dict[str, Any]] = {}
    task_out_indices = tuple(STAGES)
    round_trip_out_indices = (1, 3)
    # Only the trunk's final norm, which no backbone forward reads (transformers initialises it to 1 / 0).
    round_trip_missing_keys = ("model.layernorm.bias", "model.layernorm.weight")
    compare_gradients = True

    def reference_maps(self, reference: Any, pixels: torch.Tensor) -> list[torch.Tensor]:
        expected = reference(pixels, output_hidden_states=True)
        # Maps by stage position: transformers has no "stem" map (neither model lets it be selected); its
        # first hidden state, the patch embeddings, holds position 0.
        stem = _as_map(expected.hidden_states[0], -(-pixels.shape[2] // 4), -(-pixels.shape[3] // 4))
        return [stem, *expected.feature_maps]

    def reference_hidden_states(self, output: Any) -> list[torch.Tensor]:
        # transformers nests the hidden states: the stem, then per stage (block input, block output, ...);
        # ours hold the same tensors, each stage's stacked.
        return [output.hidden_states[0]] + [torch.stack(stage) for stage in output.hidden_states[1:]]

    def reference_attentions(self, reference: Any, pixels: torch.Tensor) -> list[torch.Tensor]:
        probabilities: list[torch.Tensor] = []
        hooks = [
            stage.blocks[-1].attention.self.register_forward_hook(
                lambda module, args, out: probabilities.append(out[1])
            )
            for stage in reference.model.encoder.layers
        ]
        try:
            with torch.no_grad():
                expected = reference(pixels, output_hidden_states=True, output_attentions=True)
        finally:
            for hook in hooks:
                hook.remove()
        # transformers 5.23 returns each stage's first block output as its "attention" (an indexing slip), so
        # the probabilities are taken from the last block of each stage with hooks instead.
        assert all(
            torch.equal(theirs, stage[1]) for theirs, stage in zip(expected.attentions, expected.hidden_states[1:])
        )
        return probabilities

    def expected_task_report(self, task_class: str, variant: str, model: Backbone) -> tuple[list[str], list[str]]:
        return NORM_KEYS, ["layernorm.bias", "layernorm.weight"]

    def test_saved_checkpoint_layout(self, tmp_path: Path) -> None:
        AutoBackbone.from_config(self.our_config("default")).save_pretrained(tmp_path)
        config = json.loads((tmp_path / "config.json").read_text())
        assert config["architectures"] == ["MaskFormerSwinBackbone"] and config["model_type"] == "maskformer-swin"
        with safe_open(tmp_path / "model.safetensors", "pt") as saved:
            indices = [key for key in saved.keys() if key.endswith("relative_position_index")]
        assert len(indices) == 5


def test_dropout_rates_follow_transformers() -> None:
    config = MaskFormerSwinConfig(**{**SMALL, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.2})
    block = MaskFormerSwinBackbone(config).model.encoder.layers[1].blocks[1]
    # transformers' MaskFormerSwinSelfOutput drops the attention output with attention_probs_dropout_prob.
    assert (block.attention_dropout, block.dropout, block.attention.self.dropout) == (0.2, 0.1, 0.2)


# -- MaskFormer segmentation checkpoints ----------------------------------------------------------


@pytest.fixture(scope="module")
def segmentation_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A randomised transformers MaskFormerForInstanceSegmentation with a three-stage MaskFormer-Swin encoder."""
    from transformers.models.maskformer import modeling_maskformer

    backbone = transformers.MaskFormerSwinConfig(out_indices=STAGES, **SMALL)
    decoder = transformers.DetrConfig(**TINY_DETR)
    config = transformers.MaskFormerConfig(
        backbone_config=backbone, decoder_config=decoder, fpn_feature_size=32, mask_feature_size=32, num_labels=3
    )
    # Building the model builds its training loss, which asks for scipy (Hungarian matching of targets);
    # the loss is never run here, and scipy is no test dependency.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(modeling_maskformer, "requires_backends", lambda *args, **kwargs: None)
        model = transformers.MaskFormerForInstanceSegmentation(config)
    model = randomize_weights_(model, seed=5).eval()
    directory = tmp_path_factory.mktemp("segmentation")
    model.save_pretrained(directory)
    return model, directory


def _segmentation_keys(directory: Path) -> list[str]:
    with safe_open(directory / "model.safetensors", "pt") as saved:
        return list(saved.keys())


def test_segmentation_checkpoint_layout(segmentation_checkpoint: tuple[Any, Path]) -> None:
    model, directory = segmentation_checkpoint
    encoder = model.model.pixel_level_module.encoder
    assert type(encoder) is transformers.MaskFormerSwinBackbone
    keys = [key for key in _segmentation_keys(directory) if key.startswith(MASKFORMER_BACKBONE_PREFIX)]
    # Under the prefix, the backbone keeps its own trunk level ("model."), the same as our base_model_prefix.
    assert sorted({key.removeprefix(MASKFORMER_BACKBONE_PREFIX).split(".")[0] for key in keys}) == [
        "hidden_states_norms",
        "model",
    ]
    backbone_config = json.loads((directory / "config.json").read_text())["backbone_config"]
    assert backbone_config["model_type"] == "maskformer-swin"


def test_segmentation_checkpoint_loads_with_prefix(segmentation_checkpoint: tuple[Any, Path]) -> None:
    model, directory = segmentation_checkpoint
    ours, report = MaskFormerSwinBackbone.from_pretrained(
        directory, checkpoint_prefix=MASKFORMER_BACKBONE_PREFIX, config_key="backbone_config", output_loading_info=True
    )
    assert ours.out_indices == STAGES  # the selection saved in backbone_config
    assert report.missing_keys == []
    keys = _segmentation_keys(directory)
    outside = [key for key in keys if not key.startswith(MASKFORMER_BACKBONE_PREFIX)]
    trunk_norm = [MASKFORMER_BACKBONE_PREFIX + f"model.layernorm.{kind}" for kind in ("bias", "weight")]
    assert report.unused_keys == sorted(outside + trunk_norm)
    assert len(outside) > 50  # the pixel decoder, the transformer decoder and the heads
    encoder = model.model.pixel_level_module.encoder
    for size in SIZES:
        pixels = random_pixels(*size)
        with torch.no_grad():
            assert_close_maps(ours(pixels).feature_maps, encoder(pixels).feature_maps, atol=1e-4)


def test_segmentation_checkpoint_through_auto_and_load_backbone(segmentation_checkpoint: tuple[Any, Path]) -> None:
    model, directory = segmentation_checkpoint
    options = {"checkpoint_prefix": MASKFORMER_BACKBONE_PREFIX, "config_key": "backbone_config"}
    auto = AutoBackbone.from_pretrained(directory, out_indices=[1, 3], **options)
    head = load_backbone({"backbone": str(directory), "use_pretrained_backbone": True, "backbone_kwargs": options})
    assert isinstance(auto, MaskFormerSwinBackbone) and isinstance(head, MaskFormerSwinBackbone)
    pixels = random_pixels(36, 52)
    with torch.no_grad():
        expected = model.model.pixel_level_module.encoder(pixels).feature_maps
        assert_close_maps(auto(pixels).feature_maps, [expected[0], expected[2]], atol=1e-4)
        assert_close_maps(head(pixels).feature_maps, expected, atol=1e-4)


def test_segmentation_checkpoint_with_swin_backbone_config(
    segmentation_checkpoint: tuple[Any, Path], tmp_path: Path
) -> None:
    # MaskFormer checkpoints written before transformers 5 (the hub's facebook/maskformer-swin-*) say "swin".
    model, directory = segmentation_checkpoint
    config = json.loads((directory / "config.json").read_text())
    config["backbone_config"]["model_type"] = "swin"
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(directory / "model.safetensors")
    ours = MaskFormerSwinBackbone.from_pretrained(
        tmp_path, checkpoint_prefix=MASKFORMER_BACKBONE_PREFIX, config_key="backbone_config", out_indices=STAGES
    )
    assert ours.config.model_type == "maskformer-swin"
    pixels = random_pixels(32, 32)
    with torch.no_grad():
        assert_close_maps(ours(pixels).feature_maps, model.model.pixel_level_module.encoder(pixels).feature_maps)


# -- selection, norms and pruning -----------------------------------------------------------------


def test_every_stage_has_a_norm_whatever_the_selection() -> None:
    model = randomize_weights_(MaskFormerSwinBackbone(MaskFormerSwinConfig(out_indices=[-1], **SMALL))).eval()
    keys = list(model.state_dict())
    assert [key for key in keys if key.startswith("hidden_states_norms.")] == [
        f"hidden_states_norms.{index}.{kind}" for index in range(3) for kind in ("weight", "bias")
    ]
    pixels = random_pixels(32, 32)
    with torch.no_grad():
        (last,) = model(pixels).feature_maps
        model.out_indices = [1, 3]
        first, again = model(pixels).feature_maps
        hidden = model(pixels, output_hidden_states=True).hidden_states
    assert list(model.state_dict()) == keys
    assert torch.equal(again, last)
    norm = model.hidden_states_norms[0]
    assert torch.equal(first, norm(_as_map(hidden[1][-1], 8, 8).permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


def test_pruning_drops_deeper_stages_and_their_norms() -> None:
    model = MaskFormerSwinBackbone(MaskFormerSwinConfig(out_indices=[1], **SMALL))
    assert model.prune_unused_stages() == ["stage2", "stage3"]
    assert len(model.model.encoder.layers) == 1 and model.model.encoder.layers[0].downsample is None
    assert len(model.hidden_states_norms) == 1
    assert not any(
        key.startswith(("model.encoder.layers.1.", "model.encoder.layers.0.downsample", "hidden_states_norms.1."))
        for key in model.state_dict()
    )


# -- config ---------------------------------------------------------------------------------------


def test_config_reads_a_swin_config() -> None:
    data = transformers.SwinConfig(out_indices=[1, 2], **TINY).to_dict()
    assert data["model_type"] == "swin"
    config = MaskFormerSwinConfig.from_dict(data)
    assert config.model_type == "maskformer-swin" and config.out_indices == [1, 2]
    assert config.to_dict()["encoder_stride"] == 32  # Swin's field, kept as an extra
    with pytest.raises(ValueError, match="is for model_type 'maskformer-swin', but the config says 'swinv2'"):
        MaskFormerSwinConfig(model_type="swinv2")


class TestMaskFormerSwinConfigErrors(ConfigErrors):
    config_class = MaskFormerSwinConfig
    config = TINY
    errors = {
        "absolute_embeddings": ({"use_absolute_embeddings": True}, "use_absolute_embeddings=True is not supported"),
        "heads_per_stage": ({"num_heads": [2, 4, 8]}, "num_heads has 3 entries but depths has 2"),
        "heads_divide_width": (
            {"embed_dim": 18, "num_heads": [4, 4]},
            r"num_heads\[0\]=4 must be a positive divisor of stage 1's width",
        ),
        "activation": ({"hidden_act": "swishy"}, "hidden_act 'swishy' is not supported"),
        "patch_pair": ({"patch_size": [4, 2]}, r"patch_size must be one int or a square pair"),
    }
    invalid_values = (("window_size", 0, "greater than or equal to 1"),)
