"""Tests of backbones-rf-detr-dinov2: the conformance kit, parity with transformers 5.23 (backbone checkpoints
and the RF-DETR detector's backbone), the window layout, config errors, the real sizes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

import backbones_rf_detr_dinov2
from backbones import AutoBackbone, ConfigError
from backbones.testing import (
    TokenShapes,
    assert_parity,
    assert_random_only_in_training,
    imported_names,
    patch_token_count,
    random_pixels,
    randomize_weights_,
    vit,
)
from backbones.testing.stages import assert_runs_up_to_deepest_selected_stage
from backbones_rf_detr_dinov2 import RfDetrDinov2Backbone, RfDetrDinov2Config
from backbones_rf_detr_dinov2._model import _partition, _unpartition

# 2x2 windows of 4x4-pixel patches: inputs are multiples of 8 pixels. Layer 1 attends globally.
TINY: dict[str, Any] = {**vit.TINY_VIT, "patch_size": 4, "num_windows": 2, "window_block_indexes": [0, 2]}
# Parity: four layers, an 8x8 grid of pre-training positions.
SMALL: dict[str, Any] = {**vit.SMALL_VIT, "patch_size": 4, "num_windows": 2}


# -- conformance ------------------------------------------------------------------------------------


class TestRfDetrDinov2Conformance(vit.ViTConformance):
    config_class = RfDetrDinov2Config
    config = TINY
    # The patch grid must divide into the windows: sides are multiples of patch_size * num_windows.
    export_multiple = 8
    bad_config_value = ("num_windows", 0, r"num_windows=0: Input should be greater than or equal to 1")


class TestRfDetrDinov2SwiGLUConformance(TestRfDetrDinov2Conformance):
    """SwiGLU, no final norm, 4x4 windows with every layer windowed (inputs: multiples of 16 pixels)."""

    deployment_checks = False  # the stem, the windows and the attention are the graph above
    config = {
        **TINY,
        "use_swiglu_ffn": True,
        "apply_layernorm": False,
        "num_windows": 4,
        "window_block_indexes": [0, 1, 2],
    }
    input_sizes = ((32, 32), (48, 32))
    export_multiple = 16


class TestRfDetrDinov2UnwindowedConformance(TestRfDetrDinov2Conformance):
    """num_windows=1: plain DINOv2 attention (any grid)."""

    deployment_checks = False
    config = {**TINY, "num_windows": 1}
    input_sizes = ((32, 32), (44, 28))
    export_multiple = 1


# -- parity with transformers -----------------------------------------------------------------------

NO_LAYERNORM = "no-layernorm-silu-no-qkv-bias-unwindowed"


class TestRfDetrDinov2Parity(vit.ViTParity):
    # vit.ViTParity's defaults: the mask token and (without apply_layernorm) the final norm are never built.
    config_class = RfDetrDinov2Config
    backbone_class = RfDetrDinov2Backbone
    config = SMALL
    # The oracle checkpoint is saved with every stage selected, which would make every layer global (see
    # test_window_layers_follow_transformers_rule): the variants name their windowed layers.
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "mlp-2x2-windows": {"window_block_indexes": [0, 2]},
        "swiglu-4x4-windows": {"use_swiglu_ffn": True, "num_windows": 4, "window_block_indexes": [0, 1, 3]},
        NO_LAYERNORM: {"apply_layernorm": False, "hidden_act": "silu", "qkv_bias": False, "num_windows": 1},
    }
    # The training size (positions as stored), a larger size (positions upsampled), a non-square size, whose
    # windows and maps follow the reference's layout (see the module notes of _model), and one whose rows are
    # downsampled (where antialiasing changes the table).
    input_sizes = ((32, 32), (48, 48), (48, 32), (16, 32))
    out_indices = ((1, 2, 3, 4), (0, 1, 2, 3, 4), (2,), (-1,))
    compare_gradients = True
    # Hidden states are the windowed sequences (4 windows of a class token and 4x4 patches at 32x32); windowed
    # layers attend per window, global layers (1 and 3) per image over all 4 windows.
    token_shapes = {
        "mlp-2x2-windows": TokenShapes(
            (32, 32), ((8, 17, 32),) * 5, ((8, 4, 17, 17), (2, 4, 68, 68), (8, 4, 17, 17), (2, 4, 68, 68))
        )
    }
    # Without reshape_hidden_states a map is the normalised windowed sequence, class tokens included.
    unreshaped_out_indices = (0, 2, 4)

    def unreshaped_map_shape(self, size: tuple[int, int]) -> tuple[int, ...]:
        # Each image's 2x2 windows of 4-pixel patches: a sequence a window, its class-token copy first.
        return (self.batch_size * 4, patch_token_count(size, 4 * 2, prefix_tokens=1), 32)

    @pytest.mark.parametrize(
        ("variant", "extra"),
        [
            ("mlp-2x2-windows", {}),
            ("mlp-2x2-windows", {"num_windows": 1}),
            ("swiglu-4x4-windows", {}),
            (NO_LAYERNORM, {}),
        ],
        ids=["2x2-windows", "unwindowed", "4x4-windows", "no-layernorm"],
    )
    def test_prefix_tokens_are_each_windows_class_token(
        self, variant: str, extra: dict[str, Any], tmp_path: Path
    ) -> None:
        """An image's prefix tokens are its windows' class-token copies, in the order of transformers' windowed
        hidden states (image-major, windows row by row), through its final layer norm; the maps are unchanged."""
        reference = self.reference_model(self.reference_backbone_class, variant, out_indices=[0, 1, 2, 3, 4], **extra)
        reference.save_pretrained(tmp_path)
        model = AutoBackbone.from_pretrained(tmp_path, out_indices=[0, 1, 3, 4])
        windows = reference.config.num_windows**2
        assert model.num_prefix_tokens == windows
        for size in ((32, 32), (48, 32)):
            inputs = self.pixels(size)
            with torch.no_grad():
                plain = model(inputs).feature_maps
                output = model(inputs, output_prefix_tokens=True)
                states = reference(inputs, output_hidden_states=True).hidden_states
            assert all(torch.equal(ours, theirs) for ours, theirs in zip(output.feature_maps, plain))
            assert [tuple(tokens.shape) for tokens in output.prefix_tokens] == [(self.batch_size, windows, 32)] * 4
            expected = []
            for position in (0, 1, 3, 4):
                state = states[position]
                if reference.config.apply_layernorm:
                    state = reference.layernorm(state)
                expected.append(state[:, 0].reshape(self.batch_size, windows, 32))
            assert_parity(output.prefix_tokens, expected)


# -- the RF-DETR detector's backbone ----------------------------------------------------------------

# Where transformers' RfDetrForObjectDetection files (and RF-DETR's original checkpoints) hold the backbone;
# in memory it is model.backbone.backbone.
DETECTOR_BACKBONE_PREFIX = "backbone.0.encoder.encoder."


@pytest.fixture(scope="module", params=["mlp", "swiglu"])
def detector_checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A tiny RF-DETR on the SMALL backbone (stages 1 and 3 selected, so layers 0 and 2 windowed), saved."""
    backbone = transformers.RfDetrDinov2Config(**SMALL, use_swiglu_ffn=request.param == "swiglu", out_indices=[1, 3])
    config = transformers.RfDetrConfig(backbone_config=backbone, c2f_num_blocks=1, **vit.TINY_DETR_DECODER)
    detector = randomize_weights_(transformers.RfDetrForObjectDetection(config)).eval()
    directory = tmp_path_factory.mktemp(f"rfdetr-{request.param}")
    detector.save_pretrained(directory)
    return detector, directory


def test_detector_checkpoint_loads_with_prefix(detector_checkpoint: tuple[Any, Path]) -> None:
    detector, directory = detector_checkpoint
    model, report = RfDetrDinov2Backbone.from_pretrained(
        directory, checkpoint_prefix=DETECTOR_BACKBONE_PREFIX, config_key="backbone_config", output_loading_info=True
    )
    # The selection and the window layout saved in backbone_config.
    assert model.out_indices == [1, 3] and model.config.window_block_indexes == [0, 2]
    assert report.missing_keys == []
    with safe_open(directory / "model.safetensors", "pt") as handle:
        saved = list(handle.keys())
    outside = sorted(key for key in saved if not key.startswith(DETECTOR_BACKBONE_PREFIX))
    assert len(outside) > 50  # the projector, the decoder and the heads
    assert report.unused_keys == sorted([*outside, DETECTOR_BACKBONE_PREFIX + "embeddings.mask_token"])
    # The detector's files name the projections as DINOv2 did (attention.attention.query, ...).
    assert report.prefix == f"'{DETECTOR_BACKBONE_PREFIX}' selected, keys renamed"
    trunk = detector.model.backbone.backbone
    for size in ((32, 32), (64, 48)):  # the backbone's training size, and another
        batch = random_pixels(*size)
        with torch.no_grad():
            assert_parity(model(batch).feature_maps, trunk(batch).feature_maps)


def test_detector_checkpoint_through_auto_backbone(detector_checkpoint: tuple[Any, Path]) -> None:
    """Another selection keeps the detector's window layout, as transformers keeps a saved one."""
    detector, directory = detector_checkpoint
    options = {"checkpoint_prefix": DETECTOR_BACKBONE_PREFIX, "config_key": "backbone_config"}
    model = AutoBackbone.from_pretrained(directory, out_indices=[2, -1], **options)
    assert isinstance(model, RfDetrDinov2Backbone)
    assert model.config.window_block_indexes == [0, 2]
    trunk = detector.model.backbone.backbone
    trunk.out_indices = [2, 4]
    try:
        with torch.no_grad():
            assert_parity(model(random_pixels(48, 48)).feature_maps, trunk(random_pixels(48, 48)).feature_maps)
    finally:
        trunk.out_indices = [1, 3]


def test_detector_state_dict_in_transformers_memory_layout(
    detector_checkpoint: tuple[Any, Path], tmp_path: Path
) -> None:
    """A detector saved with transformers' in-memory names (model.backbone.backbone., q_proj) loads too."""
    detector, directory = detector_checkpoint
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    state = {key: value.contiguous() for key, value in detector.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    prefix = "model.backbone.backbone."
    model, report = AutoBackbone.from_pretrained(
        tmp_path, checkpoint_prefix=prefix, config_key="backbone_config", output_loading_info=True
    )
    assert report.missing_keys == [] and report.prefix == f"'{prefix}' selected"
    assert report.unused_keys == sorted(
        [key for key in state if not key.startswith(prefix)] + [prefix + "embeddings.mask_token"]
    )
    with torch.no_grad():
        assert_parity(
            model(random_pixels(32, 32)).feature_maps,
            detector.model.backbone.backbone(random_pixels(32, 32)).feature_maps,
        )


# -- transformers' config.json in, ours out ---------------------------------------------------------


@pytest.mark.parametrize(
    ("out_indices", "layers"),
    [([1, 3], 4), ([-1], 4), ([0], 4), ([0, 4], 4), ([2, 5, 8, 11], 12), (None, 12)],
    ids=str,
)
def test_window_layers_follow_transformers_rule(out_indices: list[int] | None, layers: int) -> None:
    """Left out, window_block_indexes derives from the selection exactly as transformers' config does."""
    options: dict[str, Any] = {**SMALL, "num_hidden_layers": layers}
    if out_indices is not None:
        options["out_indices"] = out_indices
    ours = RfDetrDinov2Config(**options)
    theirs = transformers.RfDetrDinov2Config(**options)
    assert ours.window_block_indexes == sorted(theirs.window_block_indexes)
    assert ours.global_layers == [index not in theirs.window_block_indexes for index in range(layers)]


def test_window_layout_is_fixed_once_made(tmp_path: Path) -> None:
    config = RfDetrDinov2Config(**SMALL, out_indices=[1, 3])
    assert config.window_block_indexes == [0, 2]
    config.out_indices = [4]
    assert config.window_block_indexes == [0, 2]
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["window_block_indexes"] == [0, 2]
    assert RfDetrDinov2Config.from_pretrained(tmp_path, out_indices=[2]).window_block_indexes == [0, 2]
    # transformers reads the same layout back from our file, whatever it then selects.
    theirs = transformers.RfDetrDinov2Config.from_pretrained(tmp_path, out_indices=[2])
    assert theirs.window_block_indexes == [0, 2] and theirs.num_windows == 2


def test_transformers_config_json_round_trips(tmp_path: Path) -> None:
    options = {**SMALL, "num_windows": 4}
    reference = transformers.RfDetrDinov2Config(**options, out_features=["stage2", "stage4"])
    reference.save_pretrained(tmp_path)
    config = RfDetrDinov2Config.from_pretrained(tmp_path)
    assert config.out_features == ["stage2", "stage4"] and config.out_indices == [2, 4]
    assert (config.num_windows, config.window_block_indexes) == (4, [0, 1, 3])
    assert config.use_mask_token is True
    config.save_pretrained(tmp_path / "ours")
    data = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert data["model_type"] == "rf_detr_dinov2"
    again = transformers.RfDetrDinov2Config.from_pretrained(tmp_path / "ours")
    assert (again.num_windows, again.window_block_indexes, again.out_indices) == (4, [0, 1, 3], [2, 4])


# -- behaviour --------------------------------------------------------------------------------------


def test_positions_are_resampled_with_antialiasing() -> None:
    """Bicubic by target size in float32 with antialiasing (unlike DINOv2's), even for bfloat16."""
    config = RfDetrDinov2Config(**TINY)  # an 8x8 grid of positions
    vit.assert_model_resamples_positions(config, (3, 10), antialias=True, dtype=torch.bfloat16)


def test_square_windows_are_spatial_and_invert() -> None:
    """On a square grid a window holds a square block of patches, and the maps put them back in place."""
    grid = torch.arange(16.0).reshape(1, 16, 1)  # a 4x4 grid, value = row-major position
    tokens = torch.cat((torch.full((1, 1, 1), -1.0), grid), dim=1)
    windows = _partition(tokens, 4, 4, 2)
    assert windows[:, :, 0].tolist() == [
        [-1, 0, 1, 4, 5],
        [-1, 2, 3, 6, 7],
        [-1, 8, 9, 12, 13],
        [-1, 10, 11, 14, 15],
    ]
    assert torch.equal(_unpartition(windows[:, 1:], 4, 4, 2).reshape(1, 16, 1), grid)


def test_non_square_grids_follow_the_reference_layout() -> None:
    """A 2x4 grid is read as 4 rows of 2 (RF-DETR's and transformers' layout): the maps come back permuted."""
    grid = torch.arange(8.0).reshape(1, 8, 1)
    tokens = torch.cat((torch.full((1, 1, 1), -1.0), grid), dim=1)
    windows = _partition(tokens, 2, 4, 2)
    assert windows[:, 1:, 0].tolist() == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert _unpartition(windows[:, 1:], 2, 4, 2).flatten().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.mark.parametrize(
    "rates",
    [
        {"hidden_dropout_prob": 0.3},
        {"attention_probs_dropout_prob": 0.3},
        {"drop_path_rate": 0.3},
    ],
    ids=["embeddings", "attention", "drop-path"],
)
def test_randomness_acts_in_training_only(rates: dict[str, float]) -> None:
    model = RfDetrDinov2Backbone(RfDetrDinov2Config(**TINY, **rates, out_indices=[1, 3]))
    assert_random_only_in_training(model, random_pixels(32, 32))


def test_embedding_dropout_masks_each_window_copy_of_the_class_token() -> None:
    """As transformers: dropout after the windows are cut, so each copy of the class token has its own mask."""
    model = RfDetrDinov2Backbone(RfDetrDinov2Config(**TINY, hidden_dropout_prob=0.5, out_indices=[0])).train()
    torch.manual_seed(0)
    with torch.no_grad():
        copies = model(random_pixels(32, 32), output_hidden_states=True).hidden_states[0][
            :, 0
        ]  # (2 images * 4 windows, C)
    cls = (model.embeddings.cls_token + model.embeddings.position_embeddings[:, 0])[0, 0].detach()
    kept = copies != 0
    assert torch.allclose(copies[kept], (2 * cls).expand_as(copies)[kept])
    assert len({tuple(mask.tolist()) for mask in kept}) == 8  # eight different masks


def test_grid_must_divide_into_the_windows() -> None:
    model = RfDetrDinov2Backbone(RfDetrDinov2Config(**TINY)).eval()
    message = (
        r"a 20x32 input's 5x8 grid of patches does not divide into num_windows=2 windows per side; use an image whose "
        r"height and width are multiples of patch_size \* num_windows = 8 pixels"
    )
    with pytest.raises(ValueError, match=message):
        model(random_pixels(20, 32))


def test_forward_stops_at_the_deepest_requested_stage() -> None:
    model = RfDetrDinov2Backbone(RfDetrDinov2Config(**TINY, out_indices=[1])).eval()
    assert_runs_up_to_deepest_selected_stage(model, model.encoder.layer, random_pixels(32, 32))
    with torch.no_grad():
        (fmap,) = model(random_pixels(32, 32)).feature_maps
    assert tuple(fmap.shape) == (2, 16, 8, 8)
    assert model.prune_unused_stages() == ["stage2", "stage3"] and len(model.encoder.layer) == 1


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = RfDetrDinov2Backbone(RfDetrDinov2Config(**SMALL, layerscale_value=0.5))
    layer = model.encoder.layer[0]
    assert torch.equal(layer.layer_scale1.lambda1, torch.full((32,), 0.5))
    assert torch.equal(layer.attention.q_proj.bias, torch.zeros(32))
    assert 0.015 < layer.mlp.fc1.weight.std().item() < 0.025
    assert 0.015 < model.embeddings.position_embeddings.std().item() < 0.025
    assert model.embeddings.cls_token.abs().max().item() > 0  # drawn, not zero


def test_imports_only_public_names_of_backbones_dinov2() -> None:
    """This plugin builds on backbones-dinov2's public API: no ``_``-prefixed module or name of it."""
    imported = imported_names(backbones_rf_detr_dinov2, "backbones_dinov2")
    assert sorted(imported) == [
        ("backbones_dinov2", ["Dinov2Config"]),
        (
            "backbones_dinov2.blocks",
            [
                "Dinov2Embeddings",
                "Dinov2Encoder",
                "LayerScaledLayer",
                "Mlp",
                "PlainViTBackbone",
                "init_dinov2_weights_",
                "swiglu_hidden_features",
            ],
        ),
    ]


@pytest.mark.slow
def test_rf_detr_base_backbone_at_560() -> None:
    """RF-DETR base's backbone (ViT-S/14, positions for 518, 4x4 windows) at its 560x560 resolution."""
    options: dict[str, Any] = {
        "hidden_size": 384,
        "num_attention_heads": 6,
        "image_size": 518,
        "out_indices": [2, 5, 8, 11],
    }
    model = AutoBackbone.from_config(RfDetrDinov2Config(**options)).eval()
    assert model.config.window_block_indexes == [0, 1, 3, 4, 6, 7, 9, 10]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 560, 560)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [(1, 384, 40, 40)] * 4
    assert model.channels == [384] * 4 and model.out_reductions == [14] * 4
    with torch.device("meta"):
        reference = transformers.RfDetrDinov2Backbone(transformers.RfDetrDinov2Config(**options))
    # transformers' count less the mask token it holds but never runs.
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters()) - 384


def test_default_config_builds_at_its_real_size_on_meta() -> None:
    """transformers' defaults (ViT-B/14 at 224, 4x4 windows): shapes through the meta device."""
    with torch.device("meta"):
        model = RfDetrDinov2Backbone(RfDetrDinov2Config(out_indices=[3, 6, 9, 12]))
        maps = model(torch.empty(1, 3, 224, 224)).feature_maps
        reference = transformers.RfDetrDinov2Backbone(transformers.RfDetrDinov2Config())
    assert [tuple(fmap.shape) for fmap in maps] == [(1, 768, 16, 16)] * 4
    # transformers' count less the mask token: 85,724,928 (ViT-B/14 with positions for 224).
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) - 768 == 85_724_928


# -- config errors ----------------------------------------------------------------------------------


class TestRfDetrDinov2ConfigErrors(vit.ViTConfigErrors):
    config_class = RfDetrDinov2Config
    config = TINY
    vit_rules = ("heads-divide-the-width", "square-position-grid")
    errors = {
        "windows": ({"num_windows": 0}, r"num_windows=0: Input should be greater than or equal to 1"),
        "layer-range": ({"window_block_indexes": [0, 3]}, r"names layers \[3\] that do not exist; .* from 0 to 2"),
        "duplicate": ({"window_block_indexes": [1, 1]}, r"names a layer twice"),
    }


def test_bad_config_file_names_the_file_and_field(tmp_path: Path) -> None:
    RfDetrDinov2Config(**TINY).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    data = json.loads(path.read_text())
    data["window_block_indexes"] = [7]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"invalid backbone config in .*config.json: .*window_block_indexes"):
        AutoBackbone.from_pretrained(tmp_path)
