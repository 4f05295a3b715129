"""Tests of backbones-dinov3-vit: the conformance kit, parity with transformers, the rotary embeddings'
train-time augmentations, config errors, and the real-size ViT-S/16 and ViT-7B/16 configs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors.torch import save_file

import backbones_dinov3_vit
from backbones import AutoBackbone
from backbones.testing import TokenShapes, assert_parity, imported_names, random_pixels, randomize_weights_, vit
from backbones_dinov3_vit import Dinov3ViTBackbone, Dinov3ViTConfig

# Patch 16 as every released DINOv3 ViT; 32-64 px inputs give 2x2 to 4x3 grids of patches. The training
# augmentation of the rotary coordinates is switched off where the kit compares two training steps.
TINY: dict[str, Any] = {**vit.TINY_ROTARY_VIT, "image_size": 32}
SMALL: dict[str, Any] = {**vit.SMALL_ROTARY_VIT, "num_register_tokens": 4, "image_size": 32}
AUGMENTED: dict[str, Any] = dict(vit.ROTARY_AUGMENTATIONS)
# The training size, a non-square size, and a size that is no multiple of 16 (the projection floors it).
SIZES = ((32, 32), (64, 48), (40, 56))


# -- conformance ------------------------------------------------------------------------------------


class TestDinov3ViTConformance(vit.ViTConformance):
    config_class = Dinov3ViTConfig
    config = TINY
    input_sizes = SIZES
    channel_error_name = "DINOv3 ViT"
    bad_config_value = ("pos_embed_rescale", 0.5, r"pos_embed_rescale=0.5")


class TestDinov3ViTGatedConformance(TestDinov3ViTConformance):
    """Gated MLP, no registers (an empty register table), un-normalised intermediate maps."""

    deployment_checks = False  # the same graph as above but for the MLP: the slow checks add nothing
    config = {**TINY, "num_register_tokens": 0, "use_gated_mlp": True, "hidden_act": "silu", "apply_layernorm": False}


# -- parity with transformers -----------------------------------------------------------------------


class TestDinov3ViTParity(vit.ViTParity):
    # The mask token only serves masked pre-training: the backbone never builds it (ViTParity's default); the
    # final norm is built whatever apply_layernorm says.
    final_norm_keys = ()
    backbone_class = Dinov3ViTBackbone
    reference_config_class = "DINOv3ViTConfig"
    # DINOv3 has no classification model in transformers: its task checkpoint is the hub's DINOv3ViTModel.
    reference_task_class = "DINOv3ViTModel"
    config = SMALL
    variants = {
        # The first variant also trains (gradients): no coordinate augmentation, whose draws would differ.
        "mlp": {"pos_embed_rescale": None},
        "gated-silu-no-registers": {"use_gated_mlp": True, "hidden_act": "silu", "num_register_tokens": 0},
        "augmented-no-layernorm-all-biases": {
            **AUGMENTED,
            "apply_layernorm": False,
            "key_bias": True,
            "query_bias": False,
            "mlp_bias": False,
        },
    }
    input_sizes = SIZES
    out_indices = ((0, 1, 2, 3, 4), (1, 3), (2,), (-1,), (0,))
    task_variants = ("mlp", "gated-silu-no-registers")
    task_options: dict[str, Any] = {}
    task_unused_keys = ("embeddings.mask_token",)
    task_prefix = ""  # DINOv3ViTModel's files hold the trunk under no prefix
    compare_gradients = True
    # transformers nests the layers under ``model.`` in memory (its files hold our names).
    key_renames = ((r"^layer\.", "model.layer."),)

    # Hidden states are the raw token sequences (class token, 4 registers, then 4x3 patches at 64x48); attentions
    # span all of them.
    token_shapes = {"mlp": TokenShapes((64, 48), ((2, 1 + 4 + 12, 32),) * 5, ((2, 4, 17, 17),) * 4)}
    # Without reshape_hidden_states a map is the normalised patch tokens, prefix tokens dropped.
    unreshaped_out_indices = (0, 2, 4)
    # With shift, jitter and rescale on, one seed gives both implementations the same coordinates.
    seeded_training_variant = "augmented-no-layernorm-all-biases"
    seeded_training_size = (64, 48)


def test_checkpoint_of_transformers_in_memory_names_loads(tmp_path: Path) -> None:
    """A state dict saved as transformers holds it in memory (``model.layer.N``) loads like the hub's."""
    config = transformers.DINOv3ViTConfig(**SMALL, out_indices=[4])
    reference = randomize_weights_(transformers.DINOv3ViTBackbone(config)).eval()
    state = {key: value.contiguous() for key, value in reference.state_dict().items()}
    assert "model.layer.0.attention.q_proj.weight" in state
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    Dinov3ViTConfig(**SMALL, out_indices=[4]).save_pretrained(tmp_path)
    model, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == [] and report.unused_keys == ["embeddings.mask_token"]
    inputs = random_pixels(64, 48)
    with torch.no_grad():
        assert_parity(model(inputs).feature_maps, reference(inputs).feature_maps)


# -- rotary positions and their augmentations ------------------------------------------------------


def test_augmentations_are_off_in_eval_mode() -> None:
    model = AutoBackbone.from_config(Dinov3ViTConfig(**SMALL, **AUGMENTED)).eval()
    plain = AutoBackbone.from_config(Dinov3ViTConfig(**SMALL, pos_embed_rescale=None)).eval()
    plain.load_state_dict(model.state_dict())
    inputs = random_pixels(64, 48)
    with torch.no_grad():
        torch.manual_seed(0)
        first = model(inputs).feature_maps
        torch.manual_seed(1)
        second = model(inputs).feature_maps
        reference = plain(inputs).feature_maps
    assert torch.equal(first[0], second[0]) and torch.equal(first[0], reference[0])


def test_augmentations_are_seeded_in_training() -> None:
    model = randomize_weights_(AutoBackbone.from_config(Dinov3ViTConfig(**SMALL, **AUGMENTED))).train()
    inputs = random_pixels(64, 48)
    with torch.no_grad():
        torch.manual_seed(11)
        first = model(inputs).feature_maps[0]
        torch.manual_seed(11)
        again = model(inputs).feature_maps[0]
        torch.manual_seed(12)
        other = model(inputs).feature_maps[0]
    assert torch.equal(first, again)
    assert (first - other).abs().max().item() > 1e-2


def test_rotary_angles_of_the_patch_centres() -> None:
    """Patch centres in [-1, 1]; frequencies theta ** (-4k / head_width); prefix tokens not rotated."""
    rope = AutoBackbone.from_config(Dinov3ViTConfig(**SMALL)).eval().rope_embeddings
    cos, sin = rope(2, 3, torch.device("cpu"), torch.float32)
    assert tuple(cos.shape) == tuple(sin.shape) == (5 + 6, 8)
    assert torch.equal(cos[:5], torch.ones(5, 8)) and torch.equal(sin[:5], torch.zeros(5, 8))
    # Head width 8: frequencies 1 and 100 ** -0.5 per axis; the patch in row 1, column 2 sits at (0.5, 2/3).
    y, x = 0.5, 2 / 3
    angles = [2 * math.pi * coordinate * frequency for coordinate in (y, x) for frequency in (1.0, 0.1)]
    expected = torch.tensor(angles * 2)
    torch.testing.assert_close(cos[5 + 5], expected.cos())
    torch.testing.assert_close(sin[5 + 5], expected.sin())


def test_rotary_angles_stay_float32_in_a_bfloat16_model() -> None:
    model = randomize_weights_(AutoBackbone.from_config(Dinov3ViTConfig(**SMALL))).eval()
    low = AutoBackbone.from_config(Dinov3ViTConfig(**SMALL)).eval()
    low.load_state_dict(model.state_dict())
    low.to(torch.bfloat16)
    cos, _ = low.rope_embeddings(4, 3, torch.device("cpu"), torch.float32)
    reference, _ = model.rope_embeddings(4, 3, torch.device("cpu"), torch.float32)
    assert torch.equal(cos, reference)
    with torch.no_grad():
        (fmap,) = low(random_pixels(64, 48)).feature_maps
    assert fmap.dtype == torch.bfloat16 and tuple(fmap.shape) == (2, 32, 4, 3)


# -- behaviour --------------------------------------------------------------------------------------


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = AutoBackbone.from_config(Dinov3ViTConfig(**SMALL, layerscale_value=1e-5))
    layer = model.layer[2]
    vit.assert_layer_scaled_init(layer, layer.attention.q_proj, layer.mlp.up_proj, layer_scale=1e-5)
    assert layer.attention.k_proj.bias is None
    assert model.embeddings.register_tokens.std().item() == pytest.approx(0.02, rel=0.3)


def test_missing_checkpoint_weight_is_initialised(tmp_path: Path) -> None:
    kept = "embeddings.cls_token"
    vit.redrawn_when_missing(Dinov3ViTConfig(**SMALL), tmp_path, "embeddings.register_tokens", kept, rel=0.3)


def test_pruning_keeps_only_the_layers_that_run() -> None:
    config = Dinov3ViTConfig(**SMALL, out_indices=[2])
    vit.assert_prunes_deeper_layers(config, lambda model: model.layer, ["stage3", "stage4"], (64, 48), (2, 32, 4, 3))


def test_imports_only_public_names_of_backbones_dinov2() -> None:
    """The layer scale is backbones-dinov2's public block: no ``_``-prefixed module or name of it is used."""
    imported = imported_names(backbones_dinov3_vit, "backbones_dinov2")
    assert imported == [
        ("backbones_dinov2.blocks", ["LayerScaledLayer", "PlainViTBackbone", "init_dinov2_weights_"]),
        ("backbones_dinov2.configs", ["PlainViTConfig"]),
    ]


@pytest.mark.slow
def test_dinov3_vits16_shapes_at_224() -> None:
    model = AutoBackbone.from_config(Dinov3ViTConfig(num_register_tokens=4, out_indices=[3, 6, 9, 12])).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [(1, 384, 14, 14)] * 4
    assert model.channels == [384] * 4 and model.out_reductions == [16] * 4
    # dinov3-vits16: 21.6M parameters, transformers' count less its mask token.
    with torch.device("meta"):
        reference = transformers.DINOv3ViTBackbone(transformers.DINOv3ViTConfig(num_register_tokens=4))
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) - 384 == 21_596_160


# The ViT-7B/16 of the DINOv3 paper, as transformers' conversion of the released checkpoint configures it.
VIT_7B: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 8192,
    "num_hidden_layers": 40,
    "num_attention_heads": 32,
    "query_bias": False,
    "value_bias": False,
    "num_register_tokens": 4,
    "use_gated_mlp": True,
    "hidden_act": "silu",
}


def test_vit7b_builds_on_the_meta_device_at_its_published_size() -> None:
    config = Dinov3ViTConfig(**VIT_7B, out_indices=[10, 20, 30, 40])
    # Maps of 4096 channels on a 32x24 grid.
    model, count = vit.assert_builds_on_meta(config, (512, 384), width=4096, reduction=16, stages=41)
    assert model.stage_names[-1] == "stage40"
    width, hidden = 4096, 8192
    # Per layer: q, k, v, o (only o has a bias), the gated MLP with biases, two norms, two layer scales.
    layer = 4 * width * width + width + 3 * width * hidden + 2 * hidden + width + 4 * width + 2 * width
    # The stem: patch projection with bias, class token, 4 registers; then the final norm.
    stem = 3 * 16 * 16 * width + width + 5 * width
    assert count == 40 * layer + stem + 2 * width == 6_716_030_976
    assert abs(count / 6.7e9 - 1) < 0.01  # the paper's 6.7B


# -- config errors ----------------------------------------------------------------------------------


class TestDinov3ViTConfigErrors(vit.ViTConfigErrors):
    config_class = Dinov3ViTConfig
    config = TINY
    vit_rules = ("heads-divide-the-width", "head-width-a-multiple-of-four", "square-patches", "unknown-activation")
    invalid_values = (*vit.ROTARY_VIT_INVALID_VALUES, ("rope_theta", 0, "greater than 0"))


def test_square_patch_pair_is_one_int() -> None:
    assert Dinov3ViTConfig(**{**TINY, "patch_size": [16, 16]}).patch_size == 16


def test_transformers_config_file_is_read_as_it_is(tmp_path: Path) -> None:
    transformers.DINOv3ViTConfig(**SMALL, use_gated_mlp=True, out_indices=[1, 3]).save_pretrained(tmp_path)
    config = Dinov3ViTConfig.from_pretrained(tmp_path)
    assert config.use_gated_mlp is True and config.num_register_tokens == 4
    assert config.out_indices == [1, 3] and config.pos_embed_rescale == 2.0 and config.pos_embed_jitter is None
