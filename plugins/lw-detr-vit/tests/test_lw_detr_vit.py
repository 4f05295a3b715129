"""Tests of backbones-lw-detr-vit: the conformance kit, parity with transformers 5.23 (the backbone checkpoint
and the backbone inside an LW-DETR detector checkpoint), the window layout, real sizes, config errors."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open

from backbones import AutoBackbone, ConfigError
from backbones.testing import (
    ProcessorParity,
    TransformersParity,
    assert_parity,
    load_reference,
    random_image,
    random_pixels,
    randomize_weights_,
    vit,
)
from backbones.testing.stages import assert_runs_up_to_deepest_selected_stage
from backbones_lw_detr_vit import DeformableDetrImageProcessor, LwDetrViTBackbone, LwDetrViTConfig

# 2x2 windows of a 4x4 grid of 8-pixel patches at 32 pixels; layers 1 and 3 windowed, layer 2 global.
TINY: dict[str, Any] = {**vit.TINY_VIT, "pretrain_image_size": 32, "num_windows": 4, "window_block_indices": [0, 2]}
# Parity: LW-DETR's patches (16) and windows (16, 4 per side) at its 640-pixel training size, windowed and global
# layers alternating; the 4x4 position table is resampled to every input's grid.
SMALL: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "patch_size": 16,
    "image_size": 640,
    "pretrain_image_size": 64,
    "num_windows": 16,
    "window_block_indices": [0, 2],
}
ALL_STAGES = [0, 1, 2, 3, 4]
DETECTOR_BACKBONE_PREFIX = "model.backbone.backbone."


# -- conformance ------------------------------------------------------------------------------------


class TestLwDetrViTConformance(vit.ViTConformance):
    config_class = LwDetrViTConfig
    config = TINY
    # Patch grids of 8x8 and 6x10: both split into 2x2 windows (the 6x10 ones are 3x5, not square).
    input_sizes = ((64, 64), (48, 80))
    # The patch grid must split into sqrt(num_windows) windows a side: multiples of 2 patches of 8 pixels.
    # From 32: a 2x2 grid of 1-token windows would make torch.export specialise the size-1 window axes.
    export_multiple = 16
    export_range = (32, 256)
    channel_error_name = "LW-DETR ViT"
    bad_config_value = ("num_windows", 8, r"num_windows=8 is not a perfect square")


class TestLwDetrViTAllGlobalConformance(TestLwDetrViTConformance):
    """Every layer global, no absolute positions (transformers' default window_block_indices is empty)."""

    deployment_checks = False  # the same operations as above, minus the windowed attention
    config = {**TINY, "window_block_indices": [], "use_absolute_position_embeddings": False}


# -- parity with transformers -----------------------------------------------------------------------


@contextlib.contextmanager
def _transformers_without_position_table() -> Iterator[None]:
    """transformers 5.23 cannot build or load this ViT without absolute positions: its ``_init_weights``
    initialises the position table even when there is none (an AttributeError on None). Skip that one case."""
    from transformers.models.lw_detr import modeling_lw_detr as modeling

    original = modeling.LwDetrViTPreTrainedModel._init_weights

    def init_weights(self: Any, module: Any) -> None:
        if isinstance(module, modeling.LwDetrViTEmbeddings) and module.position_embeddings is None:
            return
        original(self, module)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(modeling.LwDetrViTPreTrainedModel, "_init_weights", init_weights)
        yield


class TestLwDetrViTParity(TransformersParity):
    backbone_class = LwDetrViTBackbone
    config = SMALL
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "windowed-and-global": {},
        # 2x2 windows, one windowed layer, no position table, no query/value bias, silu.
        "four-windows-no-positions-silu-no-qkv-bias": {
            "num_windows": 4,
            "window_block_indices": [1],
            "use_absolute_position_embeddings": False,
            "qkv_bias": False,
            "hidden_act": "silu",
        },
    }
    # A non-square size first (hidden states, attentions and gradients are checked there), then 640, the
    # training size of LW-DETR.
    input_sizes = ((256, 384), (640, 640))
    batch_size = 1
    out_indices = ((0, 1, 2, 3, 4), (1, 2, 3, 4), (2,), (-1,))
    backbone_prefix = ""  # the keys match as they are
    hidden_state_count = 5
    compare_attentions = True
    round_trip_out_indices = (0, 2, 4)
    compare_gradients = True

    def build_reference(self, model_class: str, config: Any) -> Any:
        with _transformers_without_position_table():
            return super().build_reference(model_class, config)

    def load_reference_checkpoint(self, directory: Path, missing: Iterable[str]) -> Any:
        with _transformers_without_position_table():
            return super().load_reference_checkpoint(directory, missing)

    def test_attention_shapes_follow_the_window_layout(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        """Windowed layers: per window; global layers: every token of an image, in window-major order."""
        directory, _ = self.reference_checkpoint("windowed-and-global", tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory)
        with torch.no_grad():
            output = model(self.pixels(), output_hidden_states=True, output_attentions=True)
        # Window-major tokens, as transformers': 16 windows of 4x6 patches (a 16x24 grid).
        assert [tuple(state.shape) for state in output.hidden_states] == [(16, 24, 32)] * 5
        assert [tuple(weights.shape) for weights in output.attentions] == [
            (16, 4, 24, 24),
            (1, 4, 384, 384),
            (16, 4, 24, 24),
            (1, 4, 384, 384),
        ]


# -- the backbone inside an LW-DETR detector checkpoint ---------------------------------------------


@pytest.fixture(scope="module")
def detector_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A tiny ``LwDetrForObjectDetection`` (transformers' detector) with random weights, saved by transformers."""
    backbone = transformers.LwDetrViTConfig(**SMALL, out_indices=[1, 2, 4])
    config = transformers.LwDetrConfig(
        backbone_config=backbone, projector_scale_factors=[2.0, 0.5], **vit.TINY_DETR_DECODER
    )
    detector = randomize_weights_(transformers.LwDetrForObjectDetection(config), seed=3).eval()
    directory = tmp_path_factory.mktemp("lw-detr")
    detector.save_pretrained(directory)
    return detector, directory


def test_detector_checkpoint_loads_with_prefix(detector_checkpoint: tuple[Any, Path]) -> None:
    detector, directory = detector_checkpoint
    model, report = LwDetrViTBackbone.from_pretrained(
        directory,
        checkpoint_prefix=DETECTOR_BACKBONE_PREFIX,
        config_key="backbone_config",
        output_loading_info=True,
    )
    assert model.out_indices == [1, 2, 4]  # the selection saved in backbone_config
    assert report.missing_keys == []
    assert report.prefix == "'model.backbone.backbone.' selected, keys renamed"
    with safe_open(directory / "model.safetensors", "pt") as handle:
        saved = list(handle.keys())
    outside = sorted(key for key in saved if not key.startswith(DETECTOR_BACKBONE_PREFIX))
    assert report.unused_keys == outside
    assert len(outside) > 50  # the projector, the decoder and the heads
    # The stem's 3 weights and 17 a layer (its key projection has no bias).
    assert len(saved) - len(outside) == len(model.state_dict()) == 3 + 17 * 4
    trunk = detector.model.backbone.backbone
    sizes = ((640, 640), (256, 384))  # LW-DETR's training size, and another
    vit.assert_same_maps(model, trunk, (random_pixels(*size, batch=1) for size in sizes))


def _stage_maps(tokens: tuple[torch.Tensor, ...], side: int, height: int, width: int) -> list[torch.Tensor]:
    """transformers' window-major hidden states reassembled into maps, as its LwDetrViTBackbone does."""
    maps = []
    for state in tokens:
        channels = state.shape[-1]
        grid = state.reshape(-1, side, side, height // side, width // side, channels)
        maps.append(grid.permute(0, 5, 1, 3, 2, 4).reshape(-1, channels, height, width))
    return maps


@pytest.mark.parametrize("selection", [[1, 2, 3, 4], [2], [-1], [0, -1]], ids=str)
def test_detector_checkpoint_through_auto_backbone(detector_checkpoint: tuple[Any, Path], selection: list[int]) -> None:
    """Any selection from the detector's trunk, against the maps of transformers' trunk (from its hidden states:
    the detector selects stages 1, 2 and 4 only)."""
    detector, directory = detector_checkpoint
    options = {"checkpoint_prefix": DETECTOR_BACKBONE_PREFIX, "config_key": "backbone_config"}
    model = AutoBackbone.from_pretrained(directory, out_indices=selection, **options)
    assert isinstance(model, LwDetrViTBackbone)
    assert model.out_features == [model.stage_names[index] for index in selection]
    trunk = detector.model.backbone.backbone
    for size in ((640, 640), (256, 384)):
        batch = random_pixels(*size, batch=1)
        with torch.no_grad():
            expected = trunk(batch, output_hidden_states=True)
            output = model(batch, output_hidden_states=True)
        assert_parity(output.hidden_states, expected.hidden_states)
        maps = _stage_maps(expected.hidden_states, 4, size[0] // 16, size[1] // 16)
        assert_parity([maps[index] for index in (1, 2, 4)], expected.feature_maps)  # the reassembly is transformers'
        assert_parity(output.feature_maps, [maps[index] for index in selection])


# -- transformers' config.json in, ours out ---------------------------------------------------------


def test_transformers_config_json_round_trips(tmp_path: Path) -> None:
    reference = transformers.LwDetrViTConfig(**SMALL, out_features=["stage2", "stage4"], cae_init_values=0.5)
    reference.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_windows_side"] == 4  # derived; written by transformers, recomputed by both
    config = LwDetrViTConfig.from_pretrained(tmp_path)
    assert config.out_features == ["stage2", "stage4"] and config.out_indices == [2, 4]
    assert (config.num_windows, config.num_windows_side, config.window_block_indices) == (16, 4, [0, 2])
    assert (config.cae_init_values, config.pretrain_image_size, config.image_size) == (0.5, 64, 640)
    assert "num_windows_side" not in config.to_dict()
    out = tmp_path / "ours"
    config.num_windows = 4
    config.save_pretrained(out)
    back = transformers.LwDetrViTConfig.from_pretrained(out)
    assert back.stage_names == config.stage_names
    assert back.out_features == ["stage2", "stage4"]
    assert (back.num_windows, back.num_windows_side, back.cae_init_values) == (4, 2, 0.5)


# -- real sizes -------------------------------------------------------------------------------------

# transformers' defaults (ViT-B/16, 16 windows), and the ViT of LwDetrConfig's default (LW-DETR's small size).
REAL_SIZES: dict[str, dict[str, Any]] = {
    "default": {"out_indices": [3, 6, 9, 12]},
    "lw-detr-default": {
        "image_size": 1024,
        "hidden_size": 192,
        "num_hidden_layers": 10,
        "window_block_indices": [0, 1, 3, 6, 7, 9],
        "out_indices": [2, 4, 5, 9],
    },
}


@pytest.mark.parametrize("size", list(REAL_SIZES))
def test_real_sizes_build_on_meta(size: str) -> None:
    fields = REAL_SIZES[size]
    with torch.device("meta"):
        model = LwDetrViTBackbone(LwDetrViTConfig(**fields))
        reference = transformers.LwDetrViTBackbone(transformers.LwDetrViTConfig(**fields))
        maps = model(torch.empty(2, 3, 640, 640)).feature_maps
    ours = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert ours == {name: tuple(tensor.shape) for name, tensor in reference.state_dict().items()}
    width = model.config.hidden_size
    assert [tuple(fmap.shape) for fmap in maps] == [(2, width, 40, 40)] * 4
    assert model.channels == [width] * 4 and model.out_reductions == [16] * 4


# -- behaviour --------------------------------------------------------------------------------------


def test_built_on_backbones_vitdet_blocks() -> None:
    # (That only public names are imported is checked for every plugin by tests/test_plugin_imports.py.)
    model = LwDetrViTBackbone(LwDetrViTConfig(**TINY))
    kinds = sorted(
        type(module).__name__ for module in model.modules() if type(module).__module__ == "backbones_vitdet.blocks"
    )
    assert kinds == ["VitDetEmbeddings", "VitDetMlp", "VitDetMlp", "VitDetMlp"]


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = LwDetrViTBackbone(LwDetrViTConfig(**SMALL, cae_init_values=0.25))
    layer = model.encoder.layer[1]
    assert torch.equal(layer.gamma_1, torch.full((32,), 0.25)) and torch.equal(layer.gamma_2, torch.full((32,), 0.25))
    assert torch.equal(layer.attention.q_proj.bias, torch.zeros(32)) and layer.attention.k_proj.bias is None
    weight = layer.intermediate.fc1.weight
    assert weight.std().item() == pytest.approx(0.02, rel=0.1)
    table = model.embeddings.position_embeddings
    assert tuple(table.shape) == (1, 17, 32) and table.std().item() == pytest.approx(0.02, rel=0.3)


def test_forward_stops_at_the_deepest_requested_stage() -> None:
    model = LwDetrViTBackbone(LwDetrViTConfig(**SMALL, out_indices=[2])).eval()
    assert_runs_up_to_deepest_selected_stage(model, model.encoder.layer, random_pixels(256, 384, batch=1))


def test_sizes_that_do_not_split_into_windows_are_explained() -> None:
    model = LwDetrViTBackbone(LwDetrViTConfig(**SMALL)).eval()
    message = (
        r"a 256x368 input gives a 16x23 grid of 16-pixel patches, which does not split into "
        r"sqrt\(num_windows\)=4 windows per side; use an input whose height and width are multiples of 64 pixels"
    )
    with pytest.raises(ValueError, match=message):
        model(random_pixels(256, 368, batch=1))
    with torch.no_grad():  # 260 pixels still make 16 patches: the projection floors, as transformers'
        (fmap,) = model(random_pixels(260, 384, batch=1)).feature_maps
    assert tuple(fmap.shape) == (1, 32, 16, 24)


def test_our_checkpoint_with_every_option_loads_into_transformers(tmp_path: Path) -> None:
    fields = {**SMALL, "mlp_ratio": 2, "layer_norm_eps": 1e-5, "cae_init_values": 0.3, "num_windows": 1}
    model = randomize_weights_(AutoBackbone.from_config(LwDetrViTConfig(**fields, out_indices=[1, 3]))).eval()
    model.save_pretrained(tmp_path)
    reference = load_reference("LwDetrViTBackbone", tmp_path)
    assert (reference.config.mlp_ratio, reference.config.layer_norm_eps, reference.config.num_windows) == (2, 1e-5, 1)
    batch = random_pixels(128, 192, batch=1)
    with torch.no_grad():
        assert_parity(model(batch).feature_maps, reference(batch).feature_maps)


# -- preprocessing ----------------------------------------------------------------------------------

# A DeformableDetrImageProcessor preprocessor_config.json as LW-DETR checkpoints write it (transformers' class
# defaults spelled out), with sizes 64/96 instead of 800/1333.
PREPROCESSOR: dict[str, Any] = {
    "image_processor_type": "DeformableDetrImageProcessor",
    "do_convert_annotations": True,
    "do_normalize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_resize": True,
    "format": "coco_detection",
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 64, "longest_edge": 96},
}


class TestLwDetrViTProcessorParity(ProcessorParity):
    """The checkpoints' DeformableDetrImageProcessor, also when the file names no type (this plugin declares it)."""

    model_type = "lw_detr_vit"
    processor_class = DeformableDetrImageProcessor
    preprocessor = PREPROCESSOR
    variants = {
        "fixed-size": {"size": {"height": 64, "width": 64}},
        "pad-size": {"pad_size": {"height": 112, "width": 128}},
        "no-pad-one-image": {"do_pad": False},
        "int-size": {"size": 48},  # transformers reads it as {"shortest_edge": 48, "longest_edge": 1333}
    }
    image_sizes = ((75, 101), (40, 30), (30, 90))
    batched = True
    variant_settings = {"no-pad-one-image": {"image_sizes": ((75, 101),)}}


def test_processor_pads_to_the_largest_image_with_a_mask() -> None:
    processor = DeformableDetrImageProcessor(**{k: v for k, v in PREPROCESSOR.items() if k != "image_processor_type"})
    inputs = processor([random_image(75, 101), random_image(40, 30)], return_tensors="np")
    # 75x101 -> 64x86 (shortest edge 64); 40x30 -> 85x64; padded to 85x86.
    assert inputs["pixel_values"].shape == (2, 3, 85, 86)
    mask = inputs["pixel_mask"]
    assert mask.shape == (2, 85, 86) and mask.dtype == np.int64
    assert mask[0, :64, :86].all() and not mask[0, 64:].any()
    assert mask[1, :85, :64].all() and not mask[1, :, 64:].any()
    assert not inputs["pixel_values"][1, :, :, 64:].any()


def test_processor_defaults_are_transformers_defaults() -> None:
    ours, oracle = DeformableDetrImageProcessor(), transformers.DeformableDetrImageProcessorPil()
    assert ours.size == dict(oracle.size) == {"shortest_edge": 800, "longest_edge": 1333}
    assert (ours.do_pad, ours.do_normalize, ours.do_convert_rgb) == (oracle.do_pad, oracle.do_normalize, False)
    expected = oracle(random_image(75, 101), return_tensors="pt")["pixel_values"]
    actual = ours(random_image(75, 101), return_tensors="pt")["pixel_values"]
    assert tuple(actual.shape) == tuple(expected.shape) == (1, 3, 800, 1077)
    assert (actual - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"pad_size": {"height": 32}}, r"pad_size=\{'height': 32\} must be \{'height': H, 'width': W\}"),
        ({"do_pad": "yes"}, r"do_pad='yes' must be true or false"),
    ],
)
def test_processor_rejects_bad_fields(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DeformableDetrImageProcessor(**fields)


def test_processor_refuses_an_image_larger_than_pad_size() -> None:
    processor = DeformableDetrImageProcessor(size={"height": 64, "width": 64}, pad_size={"height": 48, "width": 80})
    with pytest.raises(ValueError, match=r"image 0 is 64x64 after resizing, larger than pad_size="):
        processor(random_image(75, 101))


# -- config errors ----------------------------------------------------------------------------------


class TestLwDetrViTConfigErrors(vit.ViTConfigErrors):
    config_class = LwDetrViTConfig
    config = SMALL
    vit_rules = (
        "heads-divide-the-width",
        "square-absolute-position-grid",
        "pre-training-size-holds-a-patch",
        "square-patches",
    )
    errors = {
        "square-window-count": ({"num_windows": 8}, r"num_windows=8 is not a perfect square; .* use 1, 4, 9, 16, 25"),
        "image-size-a-multiple-of-the-windows": (
            {"image_size": 600},
            r"image_size 600 must be a multiple of num_windows \* sqrt\(num_windows\) = 64 "
            r"\(transformers' LwDetrViTConfig rule\), e.g. 576",
        ),
        "window-blocks-are-layers": (
            {"window_block_indices": [0, 4]},
            r"window_block_indices \[4\] are not layers of this model; use 0-based layer indices from 0 to "
            r"num_hidden_layers - 1 = 3",
        ),
        "positive-mlp-ratio": ({"mlp_ratio": 0}, r"mlp_ratio=0: Input should be greater than or equal to 1"),
        "unknown-activation": ({"hidden_act": "swish-ish"}, r"hidden_act='swish-ish'"),
    }
