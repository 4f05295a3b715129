"""Tests of backbones-dinov2-with-registers: the conformance kit, parity with transformers, the register tokens
and the antialiased position resampling, config errors, a default-size shape check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

import backbones_dinov2_with_registers
from backbones import AutoBackbone
from backbones.testing import BitProcessorParity, TokenShapes, imported_names, random_pixels, randomize_weights_, vit
from backbones_dinov2_with_registers import Dinov2WithRegistersBackbone, Dinov2WithRegistersConfig

TINY: dict[str, Any] = {**vit.TINY_VIT, "num_register_tokens": 2}
# Parity: four layers, a 4x4 grid of pre-training positions, four registers (as the released checkpoints).
SMALL: dict[str, Any] = {**vit.SMALL_VIT, "num_register_tokens": 4}


# -- conformance ------------------------------------------------------------------------------------


class TestDinov2WithRegistersConformance(vit.ViTConformance):
    config_class = Dinov2WithRegistersConfig
    config = TINY
    bad_config_value = ("num_register_tokens", -3, r"num_register_tokens=-3")


class TestDinov2WithRegistersSwiGLUConformance(TestDinov2WithRegistersConformance):
    deployment_checks = False  # the stem and the layers' graph are the same as above
    config = {**TINY, "use_swiglu_ffn": True, "apply_layernorm": False}


# -- parity with transformers -----------------------------------------------------------------------

NO_LAYERNORM = "no-layernorm-silu-no-qkv-bias-no-registers"


class TestDinov2WithRegistersParity(vit.ViTParity):
    # vit.ViTParity's defaults: the mask token and (without apply_layernorm) the final norm are never built.
    backbone_class = Dinov2WithRegistersBackbone
    reference_task_class = "Dinov2WithRegistersForImageClassification"
    config = SMALL
    variants = {
        "mlp": {},
        "swiglu": {"use_swiglu_ffn": True},
        NO_LAYERNORM: {"apply_layernorm": False, "hidden_act": "silu", "qkv_bias": False, "num_register_tokens": 0},
    }
    input_sizes = vit.RESAMPLING_SIZES
    out_indices = ((0, 1, 2, 3, 4), (1, 3), (2,), (-1,), (0,))
    task_variants = ("mlp", "swiglu")
    task_unused_keys = ("classifier.bias", "classifier.weight", "dinov2_with_registers.embeddings.mask_token")
    task_prefix = "'dinov2_with_registers.' removed"
    compare_gradients = True
    # transformers' in-memory names of the attention projections (its files hold ours; DINOv2's MLP keeps its names).
    key_renames = vit.REFERENCE_LAYER_RENAMES
    # Hidden states are the raw token sequences (class token, 4 registers, then 6x5 patches at 48x40).
    token_shapes = {"mlp": TokenShapes((48, 40), ((2, 1 + 4 + 30, 32),) * 5, ((2, 4, 35, 35),) * 4)}
    # Without reshape_hidden_states a map is the whole normalised sequence, class token and registers too.
    unreshaped_out_indices = (0, 2, 4)
    unreshaped_prefix_tokens = 1 + 4


# -- behaviour --------------------------------------------------------------------------------------


def test_positions_are_resampled_with_antialiasing() -> None:
    """Bicubic by target size in float32 with antialiasing (unlike DINOv2's), even for bfloat16."""
    config = Dinov2WithRegistersConfig(**TINY)
    vit.assert_model_resamples_positions(config, (3, 5), antialias=True, dtype=torch.bfloat16)


def test_registers_have_no_position_and_start_at_zero() -> None:
    torch.manual_seed(0)
    model = AutoBackbone.from_config(Dinov2WithRegistersConfig(**SMALL, out_indices=[0])).eval()
    assert torch.equal(model.embeddings.register_tokens, torch.zeros(1, 4, 32))
    randomize_weights_(model)
    with torch.no_grad():
        (stem,) = model(random_pixels(48, 40), output_hidden_states=True).hidden_states[:1]
    expected = model.embeddings.register_tokens.expand(2, -1, -1)
    assert torch.equal(stem[:, 1:5], expected)
    torch.testing.assert_close(
        stem[:, 0], (model.embeddings.cls_token + model.embeddings.position_embeddings[:, 0])[0].expand(2, -1)
    )


def test_missing_checkpoint_weight_is_initialised(tmp_path: Path) -> None:
    config = Dinov2WithRegistersConfig(**SMALL)
    kept = "embeddings.position_embeddings"
    registers = vit.reinitialised_when_missing(config, tmp_path, "embeddings.register_tokens", kept)
    assert torch.equal(registers, torch.zeros(1, 4, 32))


def test_pruning_keeps_only_the_layers_that_run() -> None:
    config = Dinov2WithRegistersConfig(**SMALL, out_indices=[2])
    pruned = ["stage3", "stage4"]
    vit.assert_prunes_deeper_layers(config, lambda model: model.encoder.layer, pruned, (48, 40), (2, 32, 6, 5))


def test_config_is_dinov2s_with_registers_and_never_writes_use_mask_token(tmp_path: Path) -> None:
    config = Dinov2WithRegistersConfig()
    assert (config.patch_size, config.num_register_tokens, config.hidden_size) == (16, 4, 768)
    data = config.to_dict()
    assert data["model_type"] == "dinov2_with_registers" and "use_mask_token" not in data
    config.save_pretrained(tmp_path)
    theirs = transformers.Dinov2WithRegistersConfig.from_pretrained(tmp_path)
    assert (theirs.patch_size, theirs.num_register_tokens, theirs.hidden_size) == (16, 4, 768)


def test_imports_only_public_names_of_backbones_dinov2() -> None:
    """This plugin builds on backbones-dinov2's public API: no ``_``-prefixed module or name of it."""
    imported = imported_names(backbones_dinov2_with_registers, "backbones_dinov2")
    assert sorted(imported) == [
        ("backbones_dinov2", ["Dinov2Backbone"]),
        ("backbones_dinov2", ["Dinov2Config"]),
        ("backbones_dinov2.blocks", ["Dinov2Embeddings", "embeddings_options"]),
    ]


@pytest.mark.slow
def test_dinov2_with_registers_base_shapes_at_224() -> None:
    model = AutoBackbone.from_config(
        Dinov2WithRegistersConfig(image_size=518, patch_size=14, out_indices=[3, 6, 9, 12])
    ).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [(1, 768, 16, 16)] * 4
    assert model.channels == [768] * 4 and model.out_reductions == [14] * 4
    # dinov2-with-registers-base: transformers' count less the mask token (86,583,552 - 768).
    with torch.device("meta"):
        reference = transformers.Dinov2WithRegistersBackbone(
            transformers.Dinov2WithRegistersConfig(image_size=518, patch_size=14)
        )
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) - 768


# -- preprocessing ----------------------------------------------------------------------------------


class TestDinov2WithRegistersProcessorParity(BitProcessorParity):
    """The hub checkpoints' BitImageProcessor, also when the file names no type (this plugin declares it)."""

    model_type = "dinov2_with_registers"


# -- config errors ----------------------------------------------------------------------------------


class TestDinov2WithRegistersConfigErrors(vit.ViTConfigErrors):
    config_class = Dinov2WithRegistersConfig
    config = TINY
    vit_rules = ("heads-divide-the-width", "square-position-grid")
    invalid_values = (("num_register_tokens", -1, "greater than or equal to 0"),)
