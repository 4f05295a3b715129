"""Tests of backbones-pixio: the conformance kit, parity with transformers (PixioBackbone and PixioModel
checkpoints), the class tokens, config errors, a default-size shape check on the meta device."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from backbones import AutoBackbone, AutoBackboneConfig, AutoImageProcessor, Backbone, ConfigError
from backbones.testing import (
    BackboneConformance,
    TransformersParity,
    assert_parity,
    feature_map_loss,
    load_reference,
    randomize_weights_,
)
from backbones_pixio import PixioBackbone, PixioConfig

TINY: dict[str, Any] = {
    "hidden_size": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "n_cls_tokens": 2,
    "image_size": 32,
    "patch_size": 8,
}
# Parity: four layers, a 4x4 grid of pre-training positions, 8 class tokens (as the released checkpoints).
SMALL: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "n_cls_tokens": 8,
    "image_size": 32,
    "patch_size": 8,
}
# The training size (positions as stored), a larger non-square size (rows and columns upsampled), a size whose
# rows are downsampled, and a size that is no multiple of the patch.
SIZES = ((32, 32), (48, 40), (24, 40), (42, 59))
SOURCE = Path(__file__).resolve().parents[1] / "src" / "backbones_pixio"
# transformers' backbone holds the trunk's final norm too, and never runs it.
TRUNK_NORM = ["pixio.layernorm.bias", "pixio.layernorm.weight"]
MAPS_NORM = ["layernorm.bias", "layernorm.weight"]


def pixels(height: int = 48, width: int = 40, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


# -- conformance ------------------------------------------------------------------------------------


class TestPixioConformance(BackboneConformance):
    model_type = "pixio"
    input_sizes = ((32, 32), (48, 40), (24, 40))
    # The patch projection is a stride-p convolution without padding: a map is size // p wide.
    spatial_rounding = "floor"

    def make_config(self, **overrides: Any) -> PixioConfig:
        return PixioConfig(**TINY, **overrides)


class TestPixioWithoutLayerNormConformance(TestPixioConformance):
    deployment_checks = False  # the stem and the layers' graph are the same as above

    def make_config(self, **overrides: Any) -> PixioConfig:
        return PixioConfig(**{**TINY, "n_cls_tokens": 1}, apply_layernorm=False, hidden_act="silu", **overrides)


# -- parity with transformers -----------------------------------------------------------------------

PLAIN = "no-layernorm-silu-no-qkv-bias-one-class-token"
# Our parameter names (transformers' file names) to transformers' in-memory names.
KEY_RENAMES = (
    (r"^encoder\.encoder\.layer\.", "pixio.layers."),
    (r"^encoder\.embeddings\.", "pixio.embeddings."),
    (r"attention\.attention\.query", "attention.q_proj"),
    (r"attention\.attention\.key", "attention.k_proj"),
    (r"attention\.attention\.value", "attention.v_proj"),
    (r"attention\.output\.dense", "attention.o_proj"),
    (r"intermediate\.dense", "mlp.fc1"),
    (r"\.output\.dense", ".mlp.fc2"),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
)


class TestPixioParity(TransformersParity):
    config_class = PixioConfig
    backbone_class = PixioBackbone
    reference_task_class = "PixioModel"
    config = SMALL
    variants = {
        "default": {},
        PLAIN: {"apply_layernorm": False, "hidden_act": "silu", "qkv_bias": False, "n_cls_tokens": 1},
    }
    input_sizes = SIZES
    out_indices = ((0, 1, 2, 3, 4), (1, 2, 3, 4), (2,), (-1,))
    backbone_prefix = ""  # the keys match as they are
    hidden_state_count = 5
    compare_attentions = True
    task_out_indices = (0, 2, 4)
    round_trip_out_indices = (0, 2, 4)
    key_renames = KEY_RENAMES

    @staticmethod
    def _plain(variant: str) -> bool:
        return variant == PLAIN

    def expected_backbone_unused(self, variant: str, model: Backbone) -> list[str]:
        # Without apply_layernorm the backbone builds no norm; the trunk's own final norm is dropped silently
        # (ignored_checkpoint_keys): transformers' backbone never runs it either.
        return ["layernorm.bias", "layernorm.weight"] if self._plain(variant) else []

    def expected_round_trip_missing(self, variant: str) -> list[str]:
        # transformers puts our ``layernorm`` in ``pixio.layernorm`` (see load_reference_checkpoint), so it reports
        # its maps' norm missing; without apply_layernorm our file holds no norm at all.
        return sorted(MAPS_NORM + TRUNK_NORM) if self._plain(variant) else MAPS_NORM

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
        for size in self.input_sizes:
            inputs = self.pixels(size)
            with torch.no_grad():
                assert_parity(model(inputs).feature_maps, reference(inputs).feature_maps, self.tolerance)

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

    def test_training_gradients_match_transformers(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        """Every weight's gradient of a training step equals transformers' (by its in-memory name); its only
        weights without one of ours are the trunk's final norm, which gets no gradient."""
        directory, reference = self.reference_checkpoint("default", tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory).train()
        inputs = self.pixels()
        reference.train()
        try:
            for network in (model, reference):
                network.zero_grad()
                feature_map_loss(network(inputs).feature_maps).backward()
        finally:
            reference.eval()
        theirs = {name: parameter.grad for name, parameter in reference.named_parameters()}
        for name, parameter in model.named_parameters():
            grad, their_grad = parameter.grad, theirs.pop(self.reference_name(name))
            assert grad is not None and their_grad is not None, name
            assert_parity([grad], [their_grad], self.tolerance)
        assert sorted(theirs) == TRUNK_NORM and all(grad is None for grad in theirs.values())

    def test_token_and_attention_shapes(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        """Hidden states are the raw token sequences (8 class tokens, then 6x5 patches at 48x40)."""
        directory, _ = self.reference_checkpoint("default", tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory, out_indices=[1])
        with torch.no_grad():
            output = model(self.pixels((48, 40)), output_hidden_states=True, output_attentions=True)
        assert [tuple(state.shape) for state in output.hidden_states] == [(2, 8 + 30, 32)] * 5
        assert [tuple(weights.shape) for weights in output.attentions] == [(2, 4, 38, 38)] * 4

    def test_class_tokens_match_transformers(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        """``prefix_tokens`` are the 8 class tokens of transformers' hidden states, through the maps' norm."""
        directory, reference = self.reference_checkpoint("default", tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory, out_indices=[0, 2, 4])
        inputs = self.pixels((48, 40))
        with torch.no_grad():
            output = model(inputs, output_prefix_tokens=True)
            states = reference(inputs, output_hidden_states=True).hidden_states
            expected = [reference.layernorm(states[index])[:, :8] for index in (0, 2, 4)]
        assert [tuple(tokens.shape) for tokens in output.prefix_tokens] == [(2, 8, 32)] * 3
        assert_parity(output.prefix_tokens, expected, self.tolerance)

    def test_token_sequences_without_reshape(self, tmp_path: Path) -> None:
        """Without reshape_hidden_states a map is the whole normalised sequence, class tokens too."""
        reference = self.reference_model("PixioBackbone", "default", reshape_hidden_states=False, out_indices=[0, 4])
        reference.save_pretrained(tmp_path)
        model = AutoBackbone.from_pretrained(tmp_path)
        for size in self.input_sizes:
            inputs = self.pixels(size)
            with torch.no_grad():
                ours, theirs = model(inputs).feature_maps, reference(inputs).feature_maps
            tokens = 8 + (size[0] // 8) * (size[1] // 8)
            assert [tuple(fmap.shape) for fmap in ours] == [(2, tokens, 32)] * 2
            assert_parity(ours, theirs, self.tolerance)


# -- behaviour --------------------------------------------------------------------------------------


def test_every_class_token_has_its_own_position() -> None:
    model = randomize_weights_(AutoBackbone.from_config(PixioConfig(**SMALL, out_indices=[0]))).eval()
    embeddings = model.encoder.embeddings
    assert tuple(embeddings.cls_token.shape) == (1, 8, 32)
    assert tuple(embeddings.position_embeddings.shape) == (1, 8 + 16, 32)
    with torch.no_grad():
        (stem,) = model(pixels(), output_hidden_states=True).hidden_states[:1]
    expected = (embeddings.cls_token + embeddings.position_embeddings[:, :8]).expand(2, -1, -1)
    assert torch.equal(stem[:, :8], expected)


def test_positions_are_resampled_bicubically_without_antialiasing() -> None:
    model = randomize_weights_(AutoBackbone.from_config(PixioConfig(**TINY)))
    embeddings = model.encoder.embeddings
    table = embeddings.position_embeddings[:, 2:]
    square = table.reshape(1, 4, 4, 16).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(square, size=(3, 5), mode="bicubic", align_corners=False)
    assert torch.equal(embeddings._patch_positions(3, 5), expected.permute(0, 2, 3, 1).reshape(1, 15, 16))
    assert torch.equal(embeddings._patch_positions(4, 4), table)


def test_pruning_keeps_only_the_layers_that_run() -> None:
    model = AutoBackbone.from_config(PixioConfig(**SMALL, out_indices=[2]))
    assert model.prune_unused_stages() == ["stage3", "stage4"]
    assert len(model.encoder.encoder.layer) == 2
    with torch.no_grad():
        (fmap,) = model(pixels()).feature_maps
    assert tuple(fmap.shape) == (2, 32, 6, 5)


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
    imported = []
    for path in sorted(SOURCE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("backbones_dinov2"):
                imported.append((node.module, [alias.name for alias in node.names]))
    assert imported == [
        (
            "backbones_dinov2.blocks",
            ["Dinov2Attention", "Dinov2Embeddings", "resample_position_table", "tokens_to_map"],
        )
    ]


def test_default_config_is_pixio_vith16_at_its_training_size() -> None:
    """The defaults build pixio-vith16; on the meta device it runs a 256x256 image without allocating."""
    config = PixioConfig(out_indices=[8, 16, 24, 32])
    with torch.device("meta"):
        model = AutoBackbone.from_config(config)
        output = model(torch.empty(1, 3, 256, 256), output_prefix_tokens=True)
        reference = transformers.PixioBackbone(transformers.PixioConfig())
    assert all(parameter.device.type == "meta" for parameter in model.parameters())
    assert len(model.stage_names) == 33 and model.channels == [1280] * 4 and model.out_reductions == [16] * 4
    assert [tuple(fmap.shape) for fmap in output.feature_maps] == [(1, 1280, 16, 16)] * 4
    assert [tuple(tokens.shape) for tokens in output.prefix_tokens] == [(1, 8, 1280)] * 4
    count = sum(parameter.numel() for parameter in model.parameters())
    # transformers' count less the trunk's final norm its backbone never runs.
    assert count == sum(parameter.numel() for parameter in reference.parameters()) - 2 * 1280 == 631_013_120


# -- preprocessing ----------------------------------------------------------------------------------

# A BitImageProcessor file as transformers maps the model type (ImageNet statistics, bicubic), with sizes 64/56.
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
    """BitImageProcessor, also when the file names no type (this plugin declares it)."""
    PixioConfig(**TINY).save_pretrained(tmp_path)
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
        PixioConfig(**{**TINY, "num_attention_heads": 5})


def test_there_is_one_class_token_at_least() -> None:
    with pytest.raises(ConfigError, match=r"n_cls_tokens=0: Input should be greater than or equal to 1"):
        PixioConfig(**{**TINY, "n_cls_tokens": 0})


def test_mlp_ratio_is_a_positive_integer() -> None:
    with pytest.raises(ConfigError, match=r"mlp_ratio=2.5: Input should be a valid integer"):
        PixioConfig(**{**TINY, "mlp_ratio": 2.5})
    with pytest.raises(ConfigError, match=r"mlp_ratio=0: Input should be greater than or equal to 1"):
        PixioConfig(**{**TINY, "mlp_ratio": 0})


def test_position_grid_must_be_square() -> None:
    with pytest.raises(ConfigError, match=r"image_size \(32, 48\) gives a 4x6 grid of patches"):
        PixioConfig(**{**TINY, "image_size": [32, 48]})


def test_image_must_hold_a_patch() -> None:
    with pytest.raises(ConfigError, match=r"image_size 4 is smaller than patch_size 8"):
        PixioConfig(**{**TINY, "image_size": 4})


def test_patches_must_be_square() -> None:
    with pytest.raises(ConfigError, match=r"patch_size must be one int or a square pair such as \[16, 16\]"):
        PixioConfig(**{**TINY, "patch_size": [8, 16]})


def test_bad_config_file_names_the_file_and_field(tmp_path: Path) -> None:
    PixioConfig(**TINY).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(path.read_text().replace('"n_cls_tokens": 2', '"n_cls_tokens": -3'))
    with pytest.raises(ConfigError, match=r"invalid backbone config in .*config.json: .*n_cls_tokens=-3"):
        AutoBackbone.from_pretrained(tmp_path)
