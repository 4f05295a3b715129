"""Tests of backbones-pixio: the conformance kit, parity with transformers (PixioBackbone and PixioModel
checkpoints), the class tokens, config errors, a default-size shape check on the meta device."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import transformers

import backbones_pixio
from backbones import AutoBackbone, AutoBackboneConfig
from backbones.testing import (
    BitProcessorParity,
    TokenShapes,
    imported_names,
    load_reference,
    random_pixels,
    randomize_weights_,
    vit,
)
from backbones_pixio import PixioBackbone, PixioConfig

TINY: dict[str, Any] = {**vit.TINY_VIT, "n_cls_tokens": 2}
# Parity: four layers, a 4x4 grid of pre-training positions, 8 class tokens (as the released checkpoints).
SMALL: dict[str, Any] = {**vit.SMALL_VIT, "n_cls_tokens": 8}
# transformers' backbone holds the trunk's final norm too, and never runs it.
TRUNK_NORM = ["pixio.layernorm.bias", "pixio.layernorm.weight"]
MAPS_NORM = ["layernorm.bias", "layernorm.weight"]


# -- conformance ------------------------------------------------------------------------------------


class TestPixioConformance(vit.ViTConformance):
    config_class = PixioConfig
    config = TINY
    bad_config_value = ("n_cls_tokens", -3, r"n_cls_tokens=-3")


class TestPixioWithoutLayerNormConformance(TestPixioConformance):
    deployment_checks = False  # the stem and the layers' graph are the same as above
    config = {**TINY, "n_cls_tokens": 1, "apply_layernorm": False, "hidden_act": "silu"}


# -- parity with transformers -----------------------------------------------------------------------

PLAIN = "no-layernorm-silu-no-qkv-bias-one-class-token"
# Our parameter names (transformers' file names) to transformers' in-memory names.
KEY_RENAMES = (
    (r"^encoder\.encoder\.layer\.", "pixio.layers."),
    (r"^encoder\.embeddings\.", "pixio.embeddings."),
    *vit.REFERENCE_LAYER_RENAMES,
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
)


class TestPixioParity(vit.ViTParity):
    config_class = PixioConfig
    backbone_class = PixioBackbone
    reference_task_class = "PixioModel"
    config = SMALL
    variants = {
        "default": {},
        PLAIN: {"apply_layernorm": False, "hidden_act": "silu", "qkv_bias": False, "n_cls_tokens": 1},
    }
    input_sizes = vit.RESAMPLING_SIZES
    key_renames = KEY_RENAMES
    # Every weight's gradient of a training step equals transformers' (by its in-memory name); its only weights
    # without one of ours are the trunk's final norm, which gets no gradient.
    compare_gradients = True
    ungraded_reference_keys = tuple(TRUNK_NORM)
    # Hidden states are the raw token sequences (8 class tokens, then 6x5 patches at 48x40).
    token_shapes = {"default": TokenShapes((48, 40), ((2, 8 + 30, 32),) * 5, ((2, 4, 38, 38),) * 4)}
    # Without reshape_hidden_states a map is the whole normalised sequence, class tokens too.
    unreshaped_out_indices = (0, 4)
    unreshaped_prefix_tokens = 8
    # ``prefix_tokens`` are the 8 class tokens of transformers' hidden states, through the maps' norm.
    prefix_token_count = 8

    # No mask token: without apply_layernorm the backbone builds no norm (vit.ViTParity's final_norm_keys); the
    # trunk's own final norm is dropped silently (ignored_checkpoint_keys): transformers' backbone never runs it.
    never_built_keys = ()

    def expected_round_trip_missing(self, variant: str) -> list[str]:
        # transformers puts our ``layernorm`` in ``pixio.layernorm`` (see load_reference_checkpoint), so it reports
        # its maps' norm missing; without apply_layernorm our file holds no norm at all.
        return sorted(MAPS_NORM + [f"pixio.{key}" for key in self.never_built(variant)])

    def load_reference_checkpoint(self, directory: Path, missing: Iterable[str]) -> Any:
        """transformers' PixioBackbone of our file, its maps' norm set from the file.

        transformers 5.23 loads a file's ``layernorm.*`` into ``pixio.layernorm`` (its loader adds the ``pixio.``
        prefix to any key whose prefixed form exists, before looking at the key itself), which its backbone
        never runs; it does so for its own PixioBackbone files too (see
        ``test_transformers_misroutes_the_maps_norm_of_its_own_backbone_files``). Drive around it: copy that
        norm to where its backbone reads it.
        """
        reference = load_reference("PixioBackbone", directory, missing)
        if reference.config.apply_layernorm:
            reference.layernorm.load_state_dict(reference.pixio.layernorm.state_dict())
        return reference

    def test_task_checkpoint_loads_trunk(self, tmp_path: Path, task_class: str, task_variant: str) -> None:
        """A PixioModel checkpoint (the hub's): every key loads, its final norm becoming the maps' norm.

        transformers' own ``PixioBackbone.from_pretrained`` of such a checkpoint puts that norm in
        ``pixio.layernorm``, which its backbone never runs, and leaves the maps' norm at its initial value (it
        reports ``layernorm.*`` missing). The oracle here is transformers' backbone holding the trunk with the
        final norm as the maps' norm, as the pre-trained model normalises its output.
        """
        task = self.reference_model(task_class, task_variant)
        task.save_pretrained(tmp_path)
        model, report = AutoBackbone.from_pretrained(
            tmp_path, out_indices=list(self.task_out_indices), output_loading_info=True
        )
        assert type(model) is PixioBackbone
        assert (report.missing_keys, report.unused_keys) == ([], [])
        assert report.prefix == "'encoder.' added, keys renamed"
        reference = self.build_reference(
            "PixioBackbone", self.reference_config(task_variant, out_indices=list(self.task_out_indices))
        ).eval()
        trunk = {f"pixio.{key}": value for key, value in task.state_dict().items() if not key.startswith("layernorm.")}
        trunk.update({key: value for key, value in task.state_dict().items() if key.startswith("layernorm.")})
        result = reference.load_state_dict(trunk, strict=False)
        assert sorted(result.missing_keys) == TRUNK_NORM and result.unexpected_keys == []
        vit.assert_same_maps(model, reference, map(self.pixels, self.input_sizes), self.tolerance)

    def test_transformers_leaves_the_maps_norm_of_a_model_checkpoint_untrained(self, tmp_path: Path) -> None:
        """Why the oracle above is assembled by hand: transformers' own load of a PixioModel checkpoint."""
        self.reference_model("PixioModel", "default").save_pretrained(tmp_path)
        _, info = transformers.PixioBackbone.from_pretrained(tmp_path, output_loading_info=True)
        assert sorted(info["missing_keys"]) == ["layernorm.bias", "layernorm.weight"]

    def test_transformers_misroutes_the_maps_norm_of_its_own_backbone_files(self, tmp_path: Path) -> None:
        """Why load_reference_checkpoint drives around transformers: its own round trip loses the maps' norm."""
        saved = self.reference_model("PixioBackbone", "default")
        saved.save_pretrained(tmp_path)
        loaded = transformers.PixioBackbone.from_pretrained(tmp_path)
        assert torch.equal(loaded.pixio.layernorm.weight, saved.layernorm.weight)
        assert not torch.equal(loaded.layernorm.weight, saved.layernorm.weight)
        # Ours reads the same file as it was written.
        ours = AutoBackbone.from_pretrained(tmp_path)
        assert torch.equal(ours.layernorm.weight, saved.layernorm.weight)


# -- behaviour --------------------------------------------------------------------------------------


def test_every_class_token_has_its_own_position() -> None:
    model = randomize_weights_(AutoBackbone.from_config(PixioConfig(**SMALL, out_indices=[0]))).eval()
    embeddings = model.encoder.embeddings
    assert tuple(embeddings.cls_token.shape) == (1, 8, 32)
    assert tuple(embeddings.position_embeddings.shape) == (1, 8 + 16, 32)
    with torch.no_grad():
        (stem,) = model(random_pixels(48, 40), output_hidden_states=True).hidden_states[:1]
    expected = (embeddings.cls_token + embeddings.position_embeddings[:, :8]).expand(2, -1, -1)
    assert torch.equal(stem[:, :8], expected)


def test_positions_are_resampled_bicubically_without_antialiasing() -> None:
    # The table's patch positions follow the 2 class tokens' positions.
    config = PixioConfig(**TINY)
    vit.assert_model_resamples_positions(
        config, (3, 5), antialias=False, prefix_tokens=2, embeddings="encoder.embeddings"
    )


def test_pruning_keeps_only_the_layers_that_run() -> None:
    config = PixioConfig(**SMALL, out_indices=[2])
    pruned = ["stage3", "stage4"]
    vit.assert_prunes_deeper_layers(config, lambda model: model.encoder.encoder.layer, pruned, (48, 40), (2, 32, 6, 5))


def test_freezing_the_stem_freezes_the_class_tokens_and_positions() -> None:
    model = AutoBackbone.from_config(PixioConfig(**TINY))
    assert model.freeze_stages(2) == ["stem", "stage1"]
    frozen = sorted(name for name, parameter in model.named_parameters() if not parameter.requires_grad)
    assert "encoder.embeddings.cls_token" in frozen and "encoder.embeddings.position_embeddings" in frozen
    assert all(name.startswith(("encoder.embeddings.", "encoder.encoder.layer.0.")) for name in frozen)
    assert model.layernorm.weight.requires_grad


def test_transformers_config_file_is_read_and_written(tmp_path: Path) -> None:
    transformers.PixioConfig(**SMALL, mlp_ratio=2, out_indices=[1, 3]).save_pretrained(tmp_path)
    config = AutoBackboneConfig.from_pretrained(tmp_path)
    assert isinstance(config, PixioConfig)
    assert (config.n_cls_tokens, config.mlp_ratio, config.out_indices) == (8, 2, [1, 3])
    config.save_pretrained(tmp_path / "ours")
    theirs = transformers.PixioConfig.from_pretrained(tmp_path / "ours")
    assert (theirs.n_cls_tokens, theirs.mlp_ratio, list(theirs.out_indices)) == (8, 2, [1, 3])


def test_imports_only_public_names_of_backbones_dinov2() -> None:
    """This plugin builds on backbones-dinov2's public API: no ``_``-prefixed module or name of it."""
    imported = imported_names(backbones_pixio, "backbones_dinov2")
    assert imported == [
        ("backbones_dinov2.configs", ["ViTLayerConfig"]),
        (
            "backbones_dinov2.blocks",
            [
                "Dinov2Attention",
                "Dinov2Embeddings",
                "Dinov2Encoder",
                "PlainViTBackbone",
                "embeddings_options",
                "resample_position_table",
            ],
        ),
    ]


def test_default_config_is_pixio_vith16_at_its_training_size() -> None:
    """The defaults build pixio-vith16; on the meta device it runs a 256x256 image without allocating."""
    config = PixioConfig(out_indices=[8, 16, 24, 32])
    # Maps of 1280 channels on a 16x16 grid, 8 class tokens each.
    _, count = vit.assert_builds_on_meta(config, (256, 256), width=1280, reduction=16, stages=33, prefix_tokens=8)
    # transformers' count less the trunk's final norm its backbone never runs.
    reference = vit.meta_parameter_count(lambda: transformers.PixioBackbone(transformers.PixioConfig()))
    assert count == reference - 2 * 1280 == 631_013_120


# -- preprocessing ----------------------------------------------------------------------------------


class TestPixioProcessorParity(BitProcessorParity):
    """BitImageProcessor, as transformers maps the model type, also when the file names no type (this plugin
    declares it)."""

    model_type = "pixio"


# -- config errors ----------------------------------------------------------------------------------


class TestPixioConfigErrors(vit.ViTConfigErrors):
    config_class = PixioConfig
    config = TINY
    vit_rules = ("heads-divide-the-width", "square-position-grid", "image-holds-a-patch", "square-patches")
    invalid_values = (
        ("n_cls_tokens", 0, "greater than or equal to 1"),
        ("mlp_ratio", 2.5, "a valid integer"),
        ("mlp_ratio", 0, "greater than or equal to 1"),
    )
