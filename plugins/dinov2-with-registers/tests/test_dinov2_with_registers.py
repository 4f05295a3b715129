"""Tests of backbones-dinov2-with-registers: the conformance kit, parity with transformers, the register tokens
and the antialiased position resampling, config errors, a default-size shape check."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file

from backbones import AutoBackbone, AutoImageProcessor, Backbone, ConfigError
from backbones.testing import BackboneConformance, TransformersParity, randomize_weights_
from backbones_dinov2_with_registers import Dinov2WithRegistersBackbone, Dinov2WithRegistersConfig

TINY: dict[str, Any] = {
    "hidden_size": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "num_register_tokens": 2,
    "image_size": 32,
    "patch_size": 8,
}
# Parity: four layers, a 4x4 grid of pre-training positions, four registers (as the released checkpoints).
SMALL: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_register_tokens": 4,
    "image_size": 32,
    "patch_size": 8,
}
# The training size (positions as stored), a larger non-square size (rows and columns upsampled), a size whose
# rows are downsampled (where antialiasing changes the table), and sizes that are no multiple of the patch.
SIZES = ((32, 32), (48, 40), (24, 40), (42, 59))
SOURCE = Path(__file__).resolve().parents[1] / "src" / "backbones_dinov2_with_registers"


def pixels(height: int = 48, width: int = 40, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


# -- conformance ------------------------------------------------------------------------------------


class TestDinov2WithRegistersConformance(BackboneConformance):
    model_type = "dinov2_with_registers"
    input_sizes = ((32, 32), (48, 40), (24, 40))
    # The patch projection is a stride-p convolution without padding: a map is size // p wide.
    spatial_rounding = "floor"

    def make_config(self, **overrides: Any) -> Dinov2WithRegistersConfig:
        return Dinov2WithRegistersConfig(**TINY, **overrides)


class TestDinov2WithRegistersSwiGLUConformance(TestDinov2WithRegistersConformance):
    deployment_checks = False  # the stem and the layers' graph are the same as above

    def make_config(self, **overrides: Any) -> Dinov2WithRegistersConfig:
        return Dinov2WithRegistersConfig(**TINY, use_swiglu_ffn=True, apply_layernorm=False, **overrides)


# -- parity with transformers -----------------------------------------------------------------------

NO_LAYERNORM = "no-layernorm-silu-no-qkv-bias-no-registers"


class TestDinov2WithRegistersParity(TransformersParity):
    config_class = Dinov2WithRegistersConfig
    backbone_class = Dinov2WithRegistersBackbone
    reference_config_class = "Dinov2WithRegistersConfig"
    reference_backbone_class = "Dinov2WithRegistersBackbone"
    reference_task_class = "Dinov2WithRegistersForImageClassification"
    config = SMALL
    variants = {
        "mlp": {},
        "swiglu": {"use_swiglu_ffn": True},
        NO_LAYERNORM: {"apply_layernorm": False, "hidden_act": "silu", "qkv_bias": False, "num_register_tokens": 0},
    }
    input_sizes = SIZES
    out_indices = ((0, 1, 2, 3, 4), (1, 3), (2,), (-1,), (0,))
    backbone_prefix = ""  # the keys match as they are
    hidden_state_count = 5
    compare_attentions = True
    task_variants = ("mlp", "swiglu")
    task_out_indices = (0, 2, 4)
    task_unused_keys = ("classifier.bias", "classifier.weight", "dinov2_with_registers.embeddings.mask_token")
    task_prefix = "'dinov2_with_registers.' removed"
    round_trip_out_indices = (0, 2, 4)
    compare_gradients = True
    # transformers' in-memory names of the attention projections (its files hold ours).
    key_renames = (
        (r"attention\.attention\.query", "attention.q_proj"),
        (r"attention\.attention\.key", "attention.k_proj"),
        (r"attention\.attention\.value", "attention.v_proj"),
        (r"attention\.output\.dense", "attention.o_proj"),
    )

    def _never_built(self, variant: str) -> list[str]:
        # The mask token only serves masked pre-training, and without apply_layernorm the final norm is never
        # applied: the backbone builds neither.
        if self.variants[variant].get("apply_layernorm", True):
            return ["embeddings.mask_token"]
        return ["embeddings.mask_token", "layernorm.bias", "layernorm.weight"]

    def expected_backbone_unused(self, variant: str, model: Backbone) -> list[str]:
        return self._never_built(variant)

    def expected_round_trip_missing(self, variant: str) -> list[str]:
        return self._never_built(variant)

    def test_token_and_attention_shapes(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        """Hidden states are the raw token sequences (class token, 4 registers, then 6x5 patches at 48x40)."""
        directory, _ = self.reference_checkpoint("mlp", tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory, out_indices=[1])
        with torch.no_grad():
            output = model(self.pixels((48, 40)), output_hidden_states=True, output_attentions=True)
        assert [tuple(state.shape) for state in output.hidden_states] == [(2, 1 + 4 + 30, 32)] * 5
        assert [tuple(weights.shape) for weights in output.attentions] == [(2, 4, 35, 35)] * 4

    def test_token_sequences_without_reshape(self, tmp_path: Path) -> None:
        """Without reshape_hidden_states a map is the whole normalised sequence, class token and registers too."""
        reference = self.reference_model(
            self.reference_backbone_class, "mlp", reshape_hidden_states=False, out_indices=[0, 2, 4]
        )
        reference.save_pretrained(tmp_path)
        model = AutoBackbone.from_pretrained(tmp_path)
        for size in self.input_sizes:
            inputs = self.pixels(size)
            with torch.no_grad():
                ours = model(inputs).feature_maps
                assert_same = reference(inputs).feature_maps
            tokens = 1 + 4 + (size[0] // 8) * (size[1] // 8)
            assert [tuple(fmap.shape) for fmap in ours] == [(2, tokens, 32)] * 3
            for mine, theirs in zip(ours, assert_same):
                assert (mine - theirs).abs().max().item() <= 1e-4


# -- behaviour --------------------------------------------------------------------------------------


def test_positions_are_resampled_with_antialiasing() -> None:
    """Bicubic by target size in float32 with antialiasing (unlike DINOv2's), even for bfloat16."""
    model = randomize_weights_(AutoBackbone.from_config(Dinov2WithRegistersConfig(**TINY))).to(torch.bfloat16)
    table = model.embeddings.position_embeddings
    resized = model.embeddings._patch_positions(3, 5)
    square = table[:, 1:].reshape(1, 4, 4, 16).permute(0, 3, 1, 2).float()
    expected = torch.nn.functional.interpolate(square, size=(3, 5), mode="bicubic", align_corners=False, antialias=True)
    plain = torch.nn.functional.interpolate(square, size=(3, 5), mode="bicubic", align_corners=False)
    assert (expected - plain).abs().max().item() > 1e-2
    expected = expected.to(torch.bfloat16).permute(0, 2, 3, 1).reshape(1, 15, 16)
    assert resized.dtype == torch.bfloat16
    assert torch.equal(resized, expected)
    assert torch.equal(model.embeddings._patch_positions(4, 4), table[:, 1:])


def test_registers_have_no_position_and_start_at_zero() -> None:
    torch.manual_seed(0)
    model = AutoBackbone.from_config(Dinov2WithRegistersConfig(**SMALL, out_indices=[0])).eval()
    assert torch.equal(model.embeddings.register_tokens, torch.zeros(1, 4, 32))
    randomize_weights_(model)
    with torch.no_grad():
        (stem,) = model(pixels(), output_hidden_states=True).hidden_states[:1]
    expected = model.embeddings.register_tokens.expand(2, -1, -1)
    assert torch.equal(stem[:, 1:5], expected)
    torch.testing.assert_close(
        stem[:, 0], (model.embeddings.cls_token + model.embeddings.position_embeddings[:, 0])[0].expand(2, -1)
    )


def test_missing_checkpoint_weight_is_initialised(tmp_path: Path) -> None:
    model = randomize_weights_(AutoBackbone.from_config(Dinov2WithRegistersConfig(**SMALL)))
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["embeddings.register_tokens"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == ["embeddings.register_tokens"]
    assert torch.equal(loaded.embeddings.register_tokens, torch.zeros(1, 4, 32))
    assert torch.equal(loaded.embeddings.position_embeddings, model.embeddings.position_embeddings)


def test_pruning_keeps_only_the_layers_that_run() -> None:
    model = AutoBackbone.from_config(Dinov2WithRegistersConfig(**SMALL, out_indices=[2]))
    assert model.prune_unused_stages() == ["stage3", "stage4"]
    assert len(model.encoder.layer) == 2
    with torch.no_grad():
        (fmap,) = model(pixels()).feature_maps
    assert tuple(fmap.shape) == (2, 32, 6, 5)


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
    imported = []
    for path in sorted(SOURCE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("backbones_dinov2"):
                imported.append((node.module, [alias.name for alias in node.names]))
    assert sorted(imported) == [
        ("backbones_dinov2", ["Dinov2Config"]),
        ("backbones_dinov2.blocks", ["Dinov2Embeddings", "Dinov2Layer", "LayerScale", "tokens_to_map"]),
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

# facebook/dinov2-with-registers-base's preprocessor_config.json, with sizes 64/56 instead of 256/224.
PREPROCESSOR = {
    "image_processor_type": "BitImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 64},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 56, "width": 56},
    "do_rescale": True,
    "rescale_factor": 0.00392156862745098,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "do_convert_rgb": True,
}


@pytest.mark.parametrize("named", [True, False], ids=["named", "model-type-fallback"])
def test_checkpoint_processor_matches_transformers(tmp_path: Path, named: bool) -> None:
    """The hub checkpoints' BitImageProcessor, also when the file names no type (this plugin declares it)."""
    Dinov2WithRegistersConfig(**TINY).save_pretrained(tmp_path)
    data = (
        PREPROCESSOR if named else {key: value for key, value in PREPROCESSOR.items() if key != "image_processor_type"}
    )
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(data))
    ours = AutoImageProcessor.from_pretrained(tmp_path)
    assert ours.image_processor_type == "BitImageProcessor"
    oracle = transformers.BitImageProcessorPil(**PREPROCESSOR)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(75, 101, 3), dtype=np.uint8))
    expected = oracle(image, return_tensors="pt")["pixel_values"]
    actual = ours(image, return_tensors="pt")["pixel_values"]
    assert tuple(actual.shape) == tuple(expected.shape) == (1, 3, 56, 56)
    assert (actual - expected).abs().max().item() <= 1e-5


# -- config errors ----------------------------------------------------------------------------------


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(ConfigError, match=r"num_attention_heads=5 does not divide hidden_size=16"):
        Dinov2WithRegistersConfig(**{**TINY, "num_attention_heads": 5})


def test_register_count_cannot_be_negative() -> None:
    with pytest.raises(ConfigError, match=r"num_register_tokens=-1: Input should be greater than or equal to 0"):
        Dinov2WithRegistersConfig(**{**TINY, "num_register_tokens": -1})


def test_position_grid_must_be_square() -> None:
    with pytest.raises(ConfigError, match=r"image_size \(32, 48\) gives a 4x6 grid of patches"):
        Dinov2WithRegistersConfig(**{**TINY, "image_size": [32, 48]})


def test_bad_config_file_names_the_file_and_field(tmp_path: Path) -> None:
    Dinov2WithRegistersConfig(**TINY).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(path.read_text().replace('"num_register_tokens": 2', '"num_register_tokens": -3'))
    with pytest.raises(ConfigError, match=r"invalid backbone config in .*config.json: .*num_register_tokens=-3"):
        AutoBackbone.from_pretrained(tmp_path)
