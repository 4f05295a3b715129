"""Tests of backbones-tipsv2: the conformance kit, parity with transformers (Tipsv2VisionBackbone,
Tipsv2VisionModel and Tipsv2Model checkpoints, both model types), the prefix tokens, the bilinear position
resampling, the image processor, config errors, a default-size shape check on the meta device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors import safe_open

import backbones_tipsv2
from backbones import AutoBackbone, AutoBackboneConfig, Backbone, ConfigError
from backbones.testing import (
    ProcessorParity,
    TokenShapes,
    assert_parity,
    imported_names,
    random_pixels,
    randomize_weights_,
    vit,
)
from backbones_tipsv2 import Tipsv2ImageProcessor, Tipsv2VisionBackbone, Tipsv2VisionConfig

TINY: dict[str, Any] = {**vit.TINY_VIT, "num_register_tokens": 2}
# Parity: four layers, a 4x4 grid of pre-training positions, one register (as the released checkpoints).
SMALL: dict[str, Any] = {**vit.SMALL_VIT, "num_register_tokens": 1}
TEXT: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "vocab_size": 40,
}
TINY_TEXT = {**TEXT, "hidden_size": 16, "num_attention_heads": 2}  # its width is the vision tower's


# -- conformance ------------------------------------------------------------------------------------


class TestTipsv2Conformance(vit.ViTConformance):
    config_class = Tipsv2VisionConfig
    config = TINY


class TestTipsv2SwiGLUConformance(TestTipsv2Conformance):
    deployment_checks = False  # the stem and the layers' graph are the same as above
    config = {**TINY, "use_swiglu_ffn": True, "apply_layernorm": False}


# -- parity with transformers -----------------------------------------------------------------------

PLAIN = "no-layernorm-silu-no-qkv-bias-no-registers"
# Our parameter names (transformers' file names) to transformers' in-memory names; the fused projections
# (qkv, w12) are compared with transformers' split ones, concatenated.
KEY_RENAMES = (
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^register_tokens$", "embeddings.register_tokens"),
    (r"^pos_embed$", "embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^blocks\.", "encoder.layer."),
    (r"\.attn\.proj\.", ".attention.o_proj."),
    (r"\.ls1\.gamma$", ".layer_scale1.lambda1"),
    (r"\.ls2\.gamma$", ".layer_scale2.lambda1"),
    (r"\.mlp\.c_fc\.", ".mlp.fc1."),
    (r"\.mlp\.c_proj\.", ".mlp.fc2."),
    (r"\.mlp\.w3\.", ".mlp.down_proj."),
    (r"^norm\.", "layernorm."),
)
# transformers' in-memory names of the weights our backbone never builds -> their names in its files.
FILE_NAMES = {"embeddings.mask_token": "mask_token", "layernorm.bias": "norm.bias", "layernorm.weight": "norm.weight"}
FUSED = {
    ".attn.qkv.": (".attention.q_proj.", ".attention.k_proj.", ".attention.v_proj."),
    ".mlp.w12.": (".mlp.gate_proj.", ".mlp.up_proj."),
}


class TestTipsv2Parity(vit.ViTParity):
    config_class = Tipsv2VisionConfig
    backbone_class = Tipsv2VisionBackbone
    reference_task_class = "Tipsv2VisionModel"
    config = SMALL
    variants = {
        "mlp": {},
        "swiglu": {"use_swiglu_ffn": True, "mlp_ratio": 2.5},
        PLAIN: {"apply_layernorm": False, "hidden_act": "silu", "qkv_bias": False, "num_register_tokens": 0},
    }
    input_sizes = vit.RESAMPLING_SIZES
    task_variants = ("mlp", "swiglu")
    task_unused_keys = ("mask_token",)
    task_prefix = ""
    key_renames = KEY_RENAMES
    # Every weight's gradient of a training step equals transformers' (its split q/k/v and gate/up projections
    # concatenated as our fused ones); transformers' only other weight is the mask token.
    compare_gradients = True
    gradient_variants = ("mlp", "swiglu")
    fused_keys = FUSED
    ungraded_reference_keys = ("embeddings.mask_token",)
    # Hidden states are the raw token sequences (class token, 1 register, then 6x5 patches at 48x40).
    token_shapes = {"mlp": TokenShapes((48, 40), ((2, 1 + 1 + 30, 32),) * 5, ((2, 4, 32, 32),) * 4)}
    # Without reshape_hidden_states a map is the whole normalised sequence, class token and register too.
    unreshaped_out_indices = (0, 4)
    unreshaped_prefix_tokens = 2
    # ``prefix_tokens`` are the class token and the register (TIPSv2's two image embeddings) of transformers'
    # hidden states, through the final norm.
    prefix_token_count = 2

    def expected_backbone_unused(self, variant: str, model: Backbone) -> list[str]:
        # The mask token only serves masked pre-training; without apply_layernorm the final norm is never
        # applied: the backbone builds neither (vit.ViTParity's never_built), whose keys transformers' files
        # (and ours) name otherwise.
        return sorted(FILE_NAMES[key] for key in self.never_built(variant))

    @pytest.mark.parametrize("variant", ["mlp", "swiglu"])
    def test_full_model_checkpoint_loads_the_vision_tower(self, tmp_path: Path, variant: str) -> None:
        """A Tipsv2Model checkpoint (model type ``tipsv2``, the vision config nested, the tower under
        ``vision_encoder.`` beside the text tower): its vision tower loads, the rest is reported unused."""
        config = transformers.Tipsv2Config(vision_config=self.options(variant, out_indices=[0, 2, 4]), text_config=TEXT)
        task = randomize_weights_(transformers.Tipsv2Model(config), seed=self.seed).eval()
        task.save_pretrained(tmp_path)
        assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "tipsv2"
        model, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
        assert type(model) is Tipsv2VisionBackbone and model.out_features == ["stem", "stage2", "stage4"]
        assert report.missing_keys == []
        with safe_open(tmp_path / "model.safetensors", "pt") as saved:
            text = [key for key in saved.keys() if key.startswith("text_encoder.")]
        assert len(text) == 15 and "text_encoder.token_embedding.weight" in text
        assert report.unused_keys == sorted(["temperature", "vision_encoder.mask_token", *text])
        assert report.prefix == "'vision_encoder.' removed"
        for size in self.input_sizes:
            inputs = self.pixels(size)
            with torch.no_grad():
                expected = task.vision_model(inputs, output_hidden_states=True)
                ours = model(inputs, output_hidden_states=True)
            # transformers' vision model: its hidden states are the stages, its last state normalised.
            assert_parity(ours.hidden_states, expected.hidden_states, self.tolerance)
            maps = [ours.feature_maps[-1].flatten(2).transpose(1, 2)]
            assert_parity(maps, [expected.last_hidden_state[:, 1 + self.options(variant)["num_register_tokens"] :]])


# -- behaviour --------------------------------------------------------------------------------------


def test_positions_are_resampled_bilinearly_with_antialiasing() -> None:
    """Bilinear by target size in float32 with antialiasing (DINOv2's is bicubic), even for bfloat16."""
    model = randomize_weights_(AutoBackbone.from_config(Tipsv2VisionConfig(**TINY, out_indices=[0])))
    model = model.to(torch.bfloat16).eval()
    table = model.pos_embed[:, 1:]
    square = table.reshape(1, 4, 4, 16).permute(0, 3, 1, 2).float()
    expected = torch.nn.functional.interpolate(
        square, size=(2, 5), mode="bilinear", align_corners=False, antialias=True
    )
    plain = torch.nn.functional.interpolate(square, size=(2, 5), mode="bilinear", align_corners=False)
    assert (expected - plain).abs().max().item() > 1e-2
    expected = expected.to(torch.bfloat16).permute(0, 2, 3, 1).reshape(1, 10, 16)
    with torch.no_grad():
        (stem,) = model(random_pixels(16, 40).to(torch.bfloat16), output_hidden_states=True).hidden_states[:1]
        patches = model.patch_embed(random_pixels(16, 40).to(torch.bfloat16)).flatten(2).transpose(1, 2)
    assert torch.equal(stem[:, 3:], patches + expected)


def test_registers_have_no_position_and_start_at_zero() -> None:
    torch.manual_seed(0)
    model = AutoBackbone.from_config(Tipsv2VisionConfig(**TINY, out_indices=[0])).eval()
    assert torch.equal(model.register_tokens, torch.zeros(1, 2, 16))
    randomize_weights_(model)
    with torch.no_grad():
        (stem,) = model(random_pixels(48, 40), output_hidden_states=True).hidden_states[:1]
    assert torch.equal(stem[:, 1:3], model.register_tokens.expand(2, -1, -1))
    assert torch.equal(stem[:, 0], (model.cls_token + model.pos_embed[:, 0])[0].expand(2, -1))


def test_freezing_the_stem_freezes_its_top_level_tokens() -> None:
    model = AutoBackbone.from_config(Tipsv2VisionConfig(**TINY))
    assert model.freeze_stages(2) == ["stem", "stage1"]
    frozen = sorted(name for name, parameter in model.named_parameters() if not parameter.requires_grad)
    stem = ["cls_token", "patch_embed.proj.bias", "patch_embed.proj.weight", "pos_embed", "register_tokens"]
    assert frozen == sorted(stem + [name for name, _ in model.named_parameters() if name.startswith("blocks.0.")])
    assert model.freeze_stages(0) == [] and all(parameter.requires_grad for parameter in model.parameters())


def test_pruning_keeps_only_the_layers_that_run() -> None:
    config = Tipsv2VisionConfig(**SMALL, out_indices=[2])
    vit.assert_prunes_deeper_layers(config, lambda model: model.blocks, ["stage3", "stage4"], (48, 40), (2, 32, 6, 5))


def test_both_model_types_build_this_backbone(tmp_path: Path) -> None:
    assert type(AutoBackbone.from_config(AutoBackboneConfig.for_model("tipsv2_vision_model", **TINY))) is (
        Tipsv2VisionBackbone
    )
    transformers.Tipsv2Config(vision_config={**TINY, "out_indices": [1, 3]}, text_config=TINY_TEXT).save_pretrained(
        tmp_path
    )
    for options in ({}, {"config_key": "vision_config"}):
        config = AutoBackboneConfig.from_pretrained(tmp_path, **options)
        assert isinstance(config, Tipsv2VisionConfig)
        assert (config.hidden_size, config.num_register_tokens, config.out_indices) == (16, 2, [1, 3])
    # Our files say tipsv2_vision_model, which transformers reads back.
    config.save_pretrained(tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["model_type"] == "tipsv2_vision_model"
    theirs = transformers.Tipsv2VisionConfig.from_pretrained(tmp_path / "ours")
    assert (theirs.hidden_size, theirs.num_register_tokens, list(theirs.out_indices)) == (16, 2, [1, 3])


def test_full_config_without_a_vision_config_is_the_default_encoder() -> None:
    config = AutoBackboneConfig.from_dict({"model_type": "tipsv2", "vision_config": None, "text_config": TEXT})
    assert isinstance(config, Tipsv2VisionConfig)
    assert (config.hidden_size, config.image_size, config.patch_size, config.num_register_tokens) == (768, 448, 14, 1)


def test_imports_only_public_names_of_backbones_dinov2() -> None:
    """This plugin builds on backbones-dinov2's public API: no ``_``-prefixed module or name of it."""
    imported = imported_names(backbones_tipsv2, "backbones_dinov2")
    assert sorted(imported) == [
        ("backbones_dinov2", ["Dinov2Config"]),
        (
            "backbones_dinov2.blocks",
            ["LayerScale", "PlainViTBackbone", "resample_position_table", "swiglu_hidden_features"],
        ),
    ]


def test_default_config_is_tipsv2_b14_at_its_training_size() -> None:
    """The defaults build tipsv2-b14; on the meta device it runs a 448x448 image without allocating."""
    config = Tipsv2VisionConfig(out_indices=[3, 6, 9, 12])
    # Maps of 768 channels on a 32x32 grid; the class token and the register beside each.
    _, count = vit.assert_builds_on_meta(config, (448, 448), width=768, reduction=14, stages=13, prefix_tokens=2)
    # transformers' count less the mask token, which the backbone never builds.
    reference = vit.meta_parameter_count(lambda: transformers.Tipsv2VisionBackbone(transformers.Tipsv2VisionConfig()))
    assert count == reference - 768


# -- preprocessing ----------------------------------------------------------------------------------

# transformers has only a torchvision-backed Tipsv2ImageProcessor (no PIL class): it resizes 8-bit tensors with
# torchvision's antialiased bilinear filter, core's pipeline resizes with Pillow's; the two round some pixels
# to neighbouring 8-bit values, so they agree to one 8-bit step (1/255 after rescaling), rarely reached.
PREPROCESSOR = {
    "image_processor_type": "Tipsv2ImageProcessor",
    "do_resize": True,
    "size": {"height": 56, "width": 48},
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 0.00392156862745098,
    "do_normalize": False,
    "do_convert_rgb": True,
}


class TestTipsv2ProcessorParity(ProcessorParity):
    """As saved, without a type (the plugin's declared fallback applies) and with no keys but the type and size."""

    model_type = "tipsv2_vision_model"
    processor_class = Tipsv2ImageProcessor
    reference_options = {"size": PREPROCESSOR["size"]}
    requires = ("torchvision",)
    preprocessor = PREPROCESSOR
    minimal_keys = ("size",)
    description = "RGB, resize to 56x48 (bilinear), scale to [0, 1]"
    image_sizes = ((97, 131), (30, 20))
    expected_shape = (1, 3, 56, 48)
    tolerance = 1 / 255 + 1e-6
    mean_tolerance = 2e-3


def test_processor_defaults_are_transformers_class_defaults() -> None:
    ours, theirs = Tipsv2ImageProcessor(), transformers.Tipsv2ImageProcessor()
    assert ours.size == dict(theirs.size) == {"height": 448, "width": 448}
    assert (ours.resample, ours.do_rescale, ours.do_normalize, ours.do_convert_rgb) == (2, True, False, True)
    assert (theirs.resample, theirs.do_rescale, theirs.do_normalize, theirs.do_convert_rgb) == (2, True, False, True)


# -- config errors ----------------------------------------------------------------------------------


class TestTipsv2ConfigErrors(vit.ViTConfigErrors):
    config_class = Tipsv2VisionConfig
    config = TINY
    vit_rules = ("heads-divide-the-width", "square-position-grid")
    invalid_values = (("num_register_tokens", -1, "greater than or equal to 0"),)


def test_vision_config_of_a_full_config_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match=r"'vision_config' object, got list"):
        AutoBackboneConfig.from_dict({"model_type": "tipsv2", "vision_config": [1, 2]})


def test_bad_config_file_names_the_file_and_field(tmp_path: Path) -> None:
    transformers.Tipsv2Config(vision_config=TINY, text_config=TINY_TEXT).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    data = json.loads(path.read_text())
    data["vision_config"]["num_register_tokens"] = -3
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"invalid backbone config in .*config.json: .*num_register_tokens=-3"):
        AutoBackbone.from_pretrained(tmp_path)
