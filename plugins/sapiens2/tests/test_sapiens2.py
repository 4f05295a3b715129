"""Tests of backbones-sapiens2: the conformance kit, parity with transformers (backbone, pose and segmentation
checkpoints), the prefix tokens, config errors and the real-size 0.4B config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors.torch import load_file

import backbones_sapiens2
from backbones import AutoBackbone, AutoBackboneConfig, Backbone
from backbones.testing import (
    TokenShapes,
    assert_parity,
    feature_map_loss,
    imported_names,
    random_pixels,
    randomize_weights_,
    vit,
)
from backbones_sapiens2 import Sapiens2Backbone, Sapiens2Config

# Patch 16 as every released Sapiens2; 32-64 px inputs give 2x2 to 4x3 grids of patches. The middle layer of TINY
# (and the two middle layers of SMALL) use grouped-query attention, as the middle third of the released models do.
# One full-attention layer first and one last; 64x48, the training aspect (1024x768) scaled down.
LAYOUT: dict[str, Any] = {
    "num_first_full_attention_layers": 1,
    "num_last_full_attention_layers": 1,
    "image_size": [64, 48],
}
TINY: dict[str, Any] = {**vit.TINY_ROTARY_VIT, **LAYOUT, "num_key_value_attention_heads": 1}
SMALL: dict[str, Any] = {**vit.SMALL_ROTARY_VIT, **LAYOUT, "num_register_tokens": 2, "num_key_value_attention_heads": 2}
AUGMENTED: dict[str, Any] = dict(vit.ROTARY_AUGMENTATIONS)
# The training aspect (1024x768 scaled down to 64x48), a square size, and a size that is no multiple of 16 (the
# projection floors it).
SIZES = ((64, 48), (32, 32), (40, 56))
# A small decode head for transformers' task models (upsampling, one refinement conv, the predictor).
HEAD = {"upsample_out_channels": [8, 8], "conv_out_channels": [8]}
POSE_HEAD_KEYS = (
    "decode_head.conv_layers.0.bias",
    "decode_head.conv_layers.0.weight",
    "decode_head.conv_pose.bias",
    "decode_head.conv_pose.weight",
    "decode_head.deconv_layers.0.weight",
    "decode_head.deconv_layers.3.weight",
)

# Our parameter names to transformers' in-memory names (its files hold ours).
OUR_TO_THEIR_NAMES = (
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^storage_tokens$", "embeddings.register_tokens"),
    (r"^patch_embed\.projection\.", "embeddings.patch_embeddings."),
    (r"^blocks\.(\d+)\.", r"model.layer.\1."),
    (r"\.attn\.wq\.", ".attention.q_proj."),
    (r"\.attn\.wk\.", ".attention.k_proj."),
    (r"\.attn\.wv\.", ".attention.v_proj."),
    (r"\.attn\.proj\.", ".attention.o_proj."),
    (r"\.attn\.([qk])_norm\.", r".attention.\1_norm."),
    (r"\.attn\.gamma\.weight$", ".layer_scale1.lambda1"),
    (r"\.ffn\.w3\.", ".mlp.down_proj."),
    (r"\.ln1\.", ".norm1."),
    (r"\.ln2\.", ".norm2."),
    (r"^ln1\.", "norm."),
)


@torch.no_grad()
def spread_scales_(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Give RMS-norm weights and layer scales U(0.5, 1.5), in place, after ``randomize_weights_``.

    ``randomize_weights_`` knows torch's norms only, so it gives these N(0, 0.1): the query/key norms would then
    leave the attention almost uniform and the rotary positions would hardly matter to the maps."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        kind = type(module).__name__
        if kind.endswith("RMSNorm") or kind == "_LayerScale":
            weight = module.weight
        elif kind == "Sapiens2LayerScale":
            weight = module.lambda1
        else:
            continue
        weight.copy_(torch.rand(weight.shape, generator=generator) + 0.5)
    return model


def their_name(name: str) -> str:
    for pattern, replacement in OUR_TO_THEIR_NAMES:
        name = re.sub(pattern, replacement, name)
    return name


# -- conformance ------------------------------------------------------------------------------------


class TestSapiens2Conformance(vit.ViTConformance):
    config_class = Sapiens2Config
    config = TINY
    input_sizes = SIZES
    channel_error_name = "Sapiens2"
    bad_config_value = ("pos_embed_jitter", 0.5, r"pos_embed_jitter=0.5: Input should be greater than or equal to 1")


class TestSapiens2PlainConformance(TestSapiens2Conformance):
    """Plain MLP, no query/key norms, no registers (an empty register table), un-normalised maps."""

    deployment_checks = False  # the same graph as above but for these branches: the slow checks add nothing
    # Without normalize_backbone_outputs the final norm forms no map (transformers keeps it, and so do we).
    grad_exempt = ("ln1.weight",)
    config = {
        **TINY,
        "num_register_tokens": 0,
        "use_gated_mlp": False,
        "hidden_act": "gelu",
        "use_qk_norm": False,
        "normalize_backbone_outputs": False,
    }


# -- parity with transformers -----------------------------------------------------------------------


class TestSapiens2Parity(vit.ViTParity):
    never_built_keys = ()  # transformers' Sapiens2 holds no weight that our backbone leaves out
    config_class = Sapiens2Config
    backbone_class = Sapiens2Backbone
    reference_task_classes = ("Sapiens2ForPoseEstimation", "Sapiens2ForSemanticSegmentation")
    config = SMALL
    variants = {
        # The first variant also trains (gradients): no coordinate augmentation, whose draws would differ.
        "gated-gqa": {"pos_embed_rescale": None},
        "plain-gelu-no-qk-norm-no-registers": {
            "use_gated_mlp": False,
            "hidden_act": "gelu",
            "use_qk_norm": False,
            "num_register_tokens": 0,
        },
        "augmented-unnormalised-per-layer-heads-biases": {
            **AUGMENTED,
            "normalize_backbone_outputs": False,
            "num_key_value_heads_per_layer": [4, 1, 2, 4],
            "query_bias": False,
            "key_bias": False,
            "mlp_bias": False,
            "layerscale_value": 0.1,
        },
    }
    input_sizes = SIZES
    task_variants = ("gated-gqa", "augmented-unnormalised-per-layer-heads-biases")
    task_options: dict[str, Any] = {"num_labels": 5, "head_config": HEAD}
    task_prefix = "'backbone.' removed"
    # transformers cannot load its own checkpoint of a plain-MLP model (see the test of that below).
    round_trip_variants = ("gated-gqa", "augmented-unnormalised-per-layer-heads-biases")
    # Hidden states are the raw token sequences (class token, 2 registers, then 4x3 patches at 64x48); attentions
    # span all of them with every query head, grouped-query layers included.
    token_shapes = {"gated-gqa": TokenShapes((64, 48), ((2, 1 + 2 + 12, 32),) * 5, ((2, 4, 15, 15),) * 4)}
    # Without reshape_hidden_states a map is the normalised patch tokens, prefix tokens dropped.
    unreshaped_out_indices = (0, 2, 4)
    # With shift, jitter and rescale on, one seed gives both implementations the same coordinates.
    seeded_training_variant = "augmented-unnormalised-per-layer-heads-biases"
    seeded_training_change = 1e-1

    def prepare_reference(self, model: Any) -> None:
        spread_scales_(model)

    def expected_task_report(self, task_class: str, variant: str, model: Backbone) -> tuple[list[str], list[str]]:
        predictor = "conv_pose" if task_class == "Sapiens2ForPoseEstimation" else "conv_seg"
        return [], sorted(key.replace("conv_pose", predictor) for key in POSE_HEAD_KEYS)

    @pytest.mark.parametrize("variant", ["gated-gqa", "plain-gelu-no-qk-norm-no-registers"])
    def test_training_gradients_match_per_weight(self, tmp_path_factory: pytest.TempPathFactory, variant: str) -> None:
        """Every weight's gradient equals transformers' (our fused ``ffn.w12`` is its gate and up projections)."""
        directory, reference = self.reference_checkpoint(variant, tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory).train()
        inputs = self.pixels()
        reference.train()
        try:
            for network in (model, reference):
                network.zero_grad()
                torch.manual_seed(0)  # the same coordinate rescaling draw (on by default) for both
                feature_map_loss(network(inputs).feature_maps).backward()
        finally:
            reference.eval()
        theirs = {name: parameter.grad for name, parameter in reference.named_parameters()}
        for name, parameter in model.named_parameters():
            if name.endswith(("ffn.w12.weight", "ffn.w12.bias")):
                base, kind = their_name(name.replace(".ffn.w12.", ".")).rsplit(".", 1)
                parts = ("gate_proj", "up_proj") if model.config.use_gated_mlp else ("up_proj",)
                expected = torch.cat([theirs.pop(f"{base}.mlp.{part}.{kind}") for part in parts])
            else:
                expected = theirs.pop(their_name(name))
            assert parameter.grad is not None and expected is not None, f"{name}: no gradient"
            assert_parity([parameter.grad], [expected], self.tolerance)
        assert theirs == {}

    def test_class_token_is_transformers_cls_token(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        """``prefix_tokens`` hold the normalised class token (transformers' ``cls_tokens``) and the registers."""
        directory, reference = self.reference_checkpoint("gated-gqa", tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory, out_indices=[0, 2, 4])
        reference.config.return_class_token = True
        try:
            for size in self.input_sizes:
                inputs = self.pixels(size)
                with torch.no_grad():
                    ours = model(inputs, output_prefix_tokens=True)
                    theirs = reference(inputs, output_hidden_states=True)
                assert [tuple(tokens.shape) for tokens in ours.prefix_tokens] == [(2, 3, 32)] * 3
                assert_parity(
                    [tokens[:, 0] for tokens in ours.prefix_tokens], [theirs.cls_tokens[i] for i in (0, 2, 4)]
                )
                # The registers are the hidden states' tokens 1 and 2, through the final norm.
                registers = [reference.norm(theirs.hidden_states[i])[:, 1:3] for i in (0, 2, 4)]
                assert_parity([tokens[:, 1:] for tokens in ours.prefix_tokens], registers)
                assert_parity(ours.feature_maps, [theirs.feature_maps[i] for i in (0, 2, 4)])
        finally:
            reference.config.return_class_token = False

    def test_task_checkpoint_with_explicit_prefix(self, tmp_path: Path) -> None:
        """``checkpoint_prefix="backbone."`` selects the trunk of a pose checkpoint as the prefix rule does."""
        task = self.reference_model("Sapiens2ForPoseEstimation", "gated-gqa", **self.task_options)
        task.save_pretrained(tmp_path)
        model, report = AutoBackbone.from_pretrained(
            tmp_path, checkpoint_prefix="backbone.", out_indices=[4], output_loading_info=True
        )
        assert report.prefix == "'backbone.' selected"
        assert report.missing_keys == [] and report.unused_keys == sorted(POSE_HEAD_KEYS)
        # The task config's head fields are transformers' own: kept, and not reported as unknown.
        assert model.config.unknown_fields() == {}
        extras = model.config.model_extra or {}
        assert extras["head_config"]["conv_out_channels"] == [8]
        inputs = self.pixels()
        with torch.no_grad():
            theirs = task.model(inputs).last_hidden_state[:, 3:]
        (fmap,) = model(inputs).feature_maps
        assert_parity([fmap.flatten(2).transpose(1, 2)], [theirs])


def test_transformers_cannot_reload_its_own_plain_mlp_checkpoint(tmp_path: Path) -> None:
    """transformers 5.23 writes a plain MLP's up projection as ``ffn.w12`` and then splits that key into a gate and
    an up projection when loading, so its plain-MLP checkpoints do not load back into it (every released Sapiens2 is
    gated). We read that file as it is meant: ``ffn.w12`` is the up projection."""
    config = transformers.Sapiens2Config(**SMALL, use_gated_mlp=False, out_indices=[4])
    reference = spread_scales_(randomize_weights_(transformers.Sapiens2Backbone(config))).eval()
    reference.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    assert torch.equal(state["blocks.0.ffn.w12.weight"], reference.model.layer[0].mlp.up_proj.weight)
    _, info = transformers.Sapiens2Backbone.from_pretrained(tmp_path, output_loading_info=True)
    assert "model.layer.0.mlp.up_proj.weight" in info["missing_keys"]
    model, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == [] and report.unused_keys == []
    inputs = random_pixels(64, 48)
    with torch.no_grad():
        assert_parity(model(inputs).feature_maps, reference(inputs).feature_maps)


# -- behaviour --------------------------------------------------------------------------------------


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = AutoBackbone.from_config(Sapiens2Config(**SMALL, layerscale_value=1e-5))
    block = model.blocks[2]
    assert torch.equal(block.attn.gamma.weight, torch.full((32,), 1e-5))
    assert torch.equal(block.ln2.weight, torch.ones(32)) and torch.equal(block.attn.q_norm.weight, torch.ones(8))
    assert torch.equal(block.attn.wq.bias, torch.zeros(32))
    assert block.ffn.w12.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert model.storage_tokens.std().item() == pytest.approx(0.02, rel=0.4)
    assert tuple(block.attn.wk.weight.shape) == (16, 32)  # a grouped-query layer: 2 key/value heads of 8
    assert [layer.attn.wk.out_features for layer in model.blocks] == [32, 16, 16, 32]


def test_freezing_the_stem_freezes_the_class_and_register_tokens() -> None:
    model = AutoBackbone.from_config(Sapiens2Config(**TINY))
    assert model.freeze_stages(1) == ["stem"]
    frozen = sorted(name for name, parameter in model.named_parameters() if not parameter.requires_grad)
    assert frozen == ["cls_token", "patch_embed.projection.bias", "patch_embed.projection.weight", "storage_tokens"]
    model.freeze_stages(0)
    assert all(parameter.requires_grad for parameter in model.parameters())


def test_augmentations_are_off_in_eval_mode_and_seeded_in_training() -> None:
    model = spread_scales_(
        randomize_weights_(AutoBackbone.from_config(Sapiens2Config(**SMALL, **AUGMENTED, out_indices=[4])))
    )
    inputs = random_pixels(64, 48)
    with torch.no_grad():
        model.eval()
        torch.manual_seed(0)
        first = model(inputs).feature_maps[0]
        torch.manual_seed(1)
        assert torch.equal(first, model(inputs).feature_maps[0])
        model.train()
        torch.manual_seed(11)
        drawn = model(inputs).feature_maps[0]
        torch.manual_seed(11)
        assert torch.equal(drawn, model(inputs).feature_maps[0])
        assert (drawn - first).abs().max().item() > 1e-1


def test_pruning_keeps_only_the_layers_that_run() -> None:
    config = Sapiens2Config(**SMALL, out_indices=[2])
    vit.assert_prunes_deeper_layers(config, lambda model: model.blocks, ["stage3", "stage4"], (64, 48), (2, 32, 4, 3))


def test_imports_only_public_names_of_other_plugins() -> None:
    """The rotary positions are backbones-dinov3-vit's public block: no ``_``-prefixed module or name of it."""
    imported = imported_names(backbones_sapiens2, "backbones_")
    assert imported == [
        ("backbones_dinov3_vit.configs", ["RotaryViTConfig"]),
        ("backbones_dinov2.blocks", ["LayerScale"]),
        ("backbones_dinov3_vit.blocks", ["RotaryPositions", "RotaryViTBackbone", "Rotation", "rotate"]),
    ]


# -- real size --------------------------------------------------------------------------------------


def test_default_config_is_the_04b_model_at_its_training_size() -> None:
    """The defaults build sapiens2-0.4b; on the meta device it runs a 1024x768 image without allocating."""
    config = Sapiens2Config(out_indices=[6, 12, 18, 24])
    # Maps of 1024 channels on a 64x48 grid.
    _, count = vit.assert_builds_on_meta(config, (1024, 768), width=1024, reduction=16, stages=25)
    assert config.key_value_heads == [16] * 8 + [8] * 8 + [16] * 8
    reference = vit.meta_parameter_count(lambda: transformers.Sapiens2Backbone(transformers.Sapiens2Config()))
    assert count == reference == 395_450_368
    assert abs(count / 0.398e9 - 1) < 0.01  # Sapiens2-0.4B's published 0.398 B


# -- config ---------------------------------------------------------------------------------------------


def test_transformers_config_file_is_read_as_it_is(tmp_path: Path) -> None:
    transformers.Sapiens2Config(**SMALL, use_gated_mlp=False, out_indices=[1, 3], head_config=HEAD).save_pretrained(
        tmp_path
    )
    config = AutoBackboneConfig.from_pretrained(tmp_path)
    assert isinstance(config, Sapiens2Config)
    assert config.use_gated_mlp is False and config.num_register_tokens == 2 and config.image_size == (64, 48)
    # transformers writes the per-layer list it derived; it is the pattern we derive.
    assert config.num_key_value_heads_per_layer == [4, 2, 2, 4] == Sapiens2Config(**SMALL).key_value_heads
    assert config.out_indices == [1, 3] and config.pos_embed_rescale == 2.0 and config.unknown_fields() == {}


class TestSapiens2ConfigErrors(vit.ViTConfigErrors):
    config_class = Sapiens2Config
    config = TINY
    vit_rules = ("heads-divide-the-width", "head-width-a-multiple-of-four", "square-patches", "unknown-activation")
    errors = {
        "key-value-heads-divide-the-query-heads": (
            {**SMALL, "num_key_value_attention_heads": 3},
            r"num_key_value_attention_heads=3 must be a positive divisor of num_attention_heads=4",
        ),
        "per-layer-key-value-heads-divide-the-query-heads": (
            {**SMALL, "num_key_value_heads_per_layer": [4, 0, 2, 4]},
            r"num_key_value_heads_per_layer\[1\]=0 must be a positive divisor of num_attention_heads=4",
        ),
        "per-layer-key-value-heads-one-a-layer": (
            {**SMALL, "num_key_value_heads_per_layer": [4, 2, 4]},
            r"num_key_value_heads_per_layer has 3 entries but num_hidden_layers is 4; give one",
        ),
    }
    invalid_values = (
        *vit.ROTARY_VIT_INVALID_VALUES,
        ("rms_norm_eps", 0, "greater than 0"),
        ("num_first_full_attention_layers", -1, "greater than or equal to 0"),
        ("num_key_value_attention_heads", 0, "greater than or equal to 1"),
    )


def test_full_attention_layers_never_read_the_key_value_head_count() -> None:
    assert Sapiens2Config(**{**SMALL, "num_first_full_attention_layers": 4, "num_key_value_attention_heads": 3})


def test_square_patch_pair_is_one_int() -> None:
    assert Sapiens2Config(**{**TINY, "patch_size": [16, 16]}).patch_size == 16
