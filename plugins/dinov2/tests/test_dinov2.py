"""Tests of backbones-dinov2: the conformance kit, parity with transformers, a default-size shape check."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import transformers

from backbones import AutoBackbone
from backbones.testing import assert_parity, random_pixels, randomize_weights_, vit
from backbones_dinov2 import Dinov2Backbone, Dinov2Config

TINY: dict[str, Any] = dict(vit.TINY_VIT)
# Parity: four layers, a 4x4 grid of pre-training positions; still a few thousand parameters.
SMALL: dict[str, Any] = dict(vit.SMALL_VIT)
ALL_STAGES = [0, 1, 2, 3, 4]
# The training size (position embeddings used as stored), a non-square size (resampled to 6x5) and a
# size that is no multiple of the patch (the projection floors it to 5x7).
SIZES = [(32, 32), (48, 40), (42, 59)]


# -- conformance ------------------------------------------------------------------------------------


class TestDinov2Conformance(vit.ViTConformance):
    config_class = Dinov2Config
    config = TINY
    input_sizes = ((32, 32), (48, 40), (42, 59))
    channel_error_name = "DINOv2"
    bad_config_value = ("num_attention_heads", 3, "num_attention_heads=3 does not divide")
    lora_deployment_checks = True  # the kit's ViT for compile and DDP on a LoRA-adapted model


class TestDinov2SwiGLUConformance(TestDinov2Conformance):
    lora_deployment_checks = False
    config = {**TINY, "use_swiglu_ffn": True, "apply_layernorm": False}


# -- parity with transformers -----------------------------------------------------------------------


class TestDinov2Parity(vit.ViTParity):
    # vit.ViTParity's defaults: the mask token and (without apply_layernorm) the final norm are never built.
    backbone_class = Dinov2Backbone
    reference_task_class = "Dinov2ForImageClassification"
    config = SMALL
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "mlp": {},
        "swiglu": {"use_swiglu_ffn": True},
        "no-layernorm-silu-no-qkv-bias": {"apply_layernorm": False, "hidden_act": "silu", "qkv_bias": False},
    }
    input_sizes = (SIZES[1], SIZES[0], SIZES[2])
    out_indices = (tuple(ALL_STAGES), (-1,), (1, 3), (0,))
    # Hidden states are the raw token sequences, class token first, before the final layer norm.
    hidden_state_shapes = ((2, 1 + 6 * 5, 32),) * 5
    attention_shapes = ((2, 4, 31, 31),) * 4
    task_variants = ("mlp", "swiglu")
    task_unused_keys = ("classifier.bias", "classifier.weight", "dinov2.embeddings.mask_token")
    task_prefix = "'dinov2.' removed"

    @pytest.mark.parametrize("size", [(32, 32), (48, 40)], ids=lambda size: f"{size[0]}x{size[1]}")
    def test_token_sequences_without_reshape_match_transformers(self, tmp_path: Path, size: tuple[int, int]) -> None:
        oracle = self.reference_model("Dinov2Backbone", "mlp", reshape_hidden_states=False, out_indices=[0, 2, 4])
        oracle.save_pretrained(tmp_path)
        model = AutoBackbone.from_pretrained(tmp_path, out_indices=[0, 2, 4])
        assert model.config.reshape_hidden_states is False
        inputs = self.pixels(size)
        with torch.no_grad():
            ours = model(inputs).feature_maps
            expected = oracle(inputs).feature_maps
        tokens = 1 + (size[0] // 8) * (size[1] // 8)
        assert [tuple(fmap.shape) for fmap in ours] == [(2, tokens, 32)] * 3
        assert_parity(ours, expected)


# -- behaviour --------------------------------------------------------------------------------------


def test_position_embeddings_follow_transformers_resampling() -> None:
    """The table is resampled bicubically in float32 by target size (no antialiasing), even for bfloat16."""
    vit.assert_model_resamples_positions(Dinov2Config(**TINY), (6, 5), antialias=False, dtype=torch.bfloat16)


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = AutoBackbone.from_config(Dinov2Config(**SMALL, layerscale_value=0.25))
    layer = model.encoder.layer[2]
    vit.assert_layer_scaled_init(layer, layer.attention.attention.query, layer.mlp.fc1, layer_scale=0.25)
    assert model.embeddings.position_embeddings.std().item() == pytest.approx(0.02, rel=0.15)


def test_missing_checkpoint_weight_is_initialised(tmp_path: Path) -> None:
    # The module's other parameter keeps its loaded value.
    vit.redrawn_when_missing(Dinov2Config(**SMALL), tmp_path, "embeddings.position_embeddings", "embeddings.cls_token")


def test_pruning_keeps_only_the_layers_that_run() -> None:
    config = Dinov2Config(**SMALL, out_indices=[2])
    pruned = ["stage3", "stage4"]
    model = vit.assert_prunes_deeper_layers(config, lambda model: model.encoder.layer, pruned, (48, 40), (2, 32, 6, 5))
    # Down to the stem: no layer is left, and the map is the stem's.
    model.out_indices = [0]
    assert model.prune_unused_stages() == ["stage1", "stage2"]
    assert len(model.encoder.layer) == 0
    with torch.no_grad():
        (fmap,) = model(random_pixels(48, 40)).feature_maps
    assert tuple(fmap.shape) == (2, 32, 6, 5)


@pytest.mark.slow
def test_dinov2_base_shapes_at_224() -> None:
    model = AutoBackbone.from_config(Dinov2Config(out_indices=[3, 6, 9, 12])).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [(1, 768, 16, 16)] * 4
    assert model.channels == [768] * 4
    assert model.out_reductions == [14] * 4
    # 12 layers of 7,089,408, the stem (452,352 + 257 positions * 768 + the class token) and the final norm;
    # the hub's dinov2-base has 86,580,480 because it stores 37x37 positions (image_size 518) and a mask token.
    assert sum(p.numel() for p in model.parameters()) == 12 * 7_089_408 + 452_352 + 257 * 768 + 768 + 2 * 768


# -- config errors ----------------------------------------------------------------------------------


class TestDinov2ConfigErrors(vit.ViTConfigErrors):
    config_class = Dinov2Config
    config = TINY
    vit_rules = (
        "heads-divide-the-width",
        "square-position-grid",
        "image-holds-a-patch",
        "square-patches",
        "unknown-activation",
    )
    patch_size_example = 14
    errors = {"positive-mlp-ratio": ({"mlp_ratio": 0}, r"mlp_ratio must be positive")}


def test_valid_pairs_and_ratios_are_accepted() -> None:
    assert Dinov2Config(**{**TINY, "image_size": [32, 32]}).position_grid == 4
    assert Dinov2Config(**{**TINY, "patch_size": [8, 8]}).patch_size == 8
    assert Dinov2Config(mlp_ratio=2.5).mlp_ratio == 2.5


def test_head_free_model_sizes_match_the_reference() -> None:
    """Parameter counts of a transformers backbone and ours differ by exactly the unused mask token."""
    config = TestDinov2Parity().reference_config("swiglu", out_indices=ALL_STAGES)
    ours = AutoBackbone.from_config(Dinov2Config(**SMALL, use_swiglu_ffn=True))
    theirs = transformers.Dinov2Backbone(config)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) - 32
    assert math.prod(ours.encoder.layer[0].mlp.weights_in.weight.shape) == 2 * 88 * 32


# -- the class token beside the maps (output_prefix_tokens) -----------------------------------------


def test_prefix_tokens_are_transformers_pooled_class_token(tmp_path: Path) -> None:
    """The last stage's prefix token is transformers' ``Dinov2Model`` pooler output (the normalised class
    token); every stage's is that stage's class token through the same final norm as its map."""
    reference = randomize_weights_(transformers.Dinov2Model(transformers.Dinov2Config(**SMALL)), seed=4).eval()
    reference.save_pretrained(tmp_path)
    ours = AutoBackbone.from_pretrained(tmp_path, out_indices=[2, -1])
    pixels = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = reference(pixels, output_hidden_states=True)
        output = ours(pixels, output_prefix_tokens=True)
    middle, last = output.prefix_tokens
    assert middle.shape == last.shape == (2, 1, 32)
    assert_parity([last[:, 0]], [expected.pooler_output])
    assert_parity([middle[:, 0]], [reference.layernorm(expected.hidden_states[2])[:, 0]])
