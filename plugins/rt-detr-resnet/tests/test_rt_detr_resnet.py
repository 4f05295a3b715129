"""Tests of backbones-rt-detr-resnet: the conformance kit, parity with transformers 5.23, the RT-DETR
detector's backbone, behaviour, config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from torch import nn

from backbones import AutoBackbone, ConfigError
from backbones.layers import FrozenBatchNorm2d
from backbones.testing import (
    FixedSizeProcessorParity,
    TransformersParity,
    assert_exports_with_dynamic_size,
    assert_frozen_norm_round_trip,
    assert_nested_checkpoint,
    assert_parity,
    randomize_weights_,
)
from backbones.testing.cnn import (
    SMALL_CNN,
    TINY_CNN,
    CNNConformance,
    assert_config_json_round_trips,
    assert_map_shapes,
    assert_reparameterize_folds_norms,
    assert_same_maps_at_sizes,
    detr_detector,
    dilated_backbone,
    save_randomized,
)
from backbones.testing.stages import assert_runs_up_to_deepest_selected_stage
from backbones_rt_detr_resnet import RTDetrImageProcessor, RTDetrResNetBackbone, RTDetrResNetConfig

TINY: dict[str, Any] = {"embedding_size": 8, **TINY_CNN}
SMALL: dict[str, Any] = {"embedding_size": 8, **SMALL_CNN}
ALL_STAGES = [0, 1, 2, 3, 4]


# -- conformance ------------------------------------------------------------------------------------


class _TinyConformance(CNNConformance):
    """Strided convolutions pad by kernel // 2 and the shortcuts' average-pools round up: ceil(size / 2) each."""

    config_class = RTDetrResNetConfig
    deepest_stride = 16


class TestBottleneckConformance(_TinyConformance):
    config = {**TINY, "layer_type": "bottleneck"}
    channel_error_name = "ResNet-vd"
    bad_config_value = ("freeze_at", 7, r"freeze_at=7: must be an int between")


class TestBasicConformance(_TinyConformance):
    config = {**TINY, "layer_type": "basic"}
    # The same operations as bottleneck blocks (convolution, BatchNorm, ReLU, average-pool shortcut, residual
    # add), only fewer of them: the bottleneck class's export, ONNX and DDP/FSDP2 checks cover this code path.
    deployment_checks = False


# -- parity with transformers -----------------------------------------------------------------------


class TestRTDetrResNetParity(TransformersParity):
    backbone_class = RTDetrResNetBackbone
    config = SMALL
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "basic": {"layer_type": "basic"},
        "bottleneck": {"layer_type": "bottleneck"},
        # gelu shows that hidden_act reaches the stem and the block outputs but not the inner activations.
        "bottleneck-downsample-in-bottleneck-gelu": {
            "layer_type": "bottleneck",
            "downsample_in_bottleneck": True,
            "hidden_act": "gelu",
        },
    }
    # 640: RT-DETR's training size; 50x38 exercises the ceil rounding of odd sizes.
    input_sizes = ((640, 640), (50, 38))
    batch_size = 1
    out_indices = ((1, 2, 3, 4), (2,), (-1,))
    hidden_state_count = 5
    hidden_state_shapes: ClassVar[tuple[tuple[int, ...], ...] | None] = (
        (1, 8, 160, 160),
        (1, 8, 160, 160),
        (1, 16, 80, 80),
        (1, 24, 40, 40),
        (1, 32, 20, 20),
    )
    round_trip_out_indices = (0, 2, 4)


class TestDownsampleFirstStageParity(TestRTDetrResNetParity):
    """Stride 2 in the first stage: a stride-2 projection (basic, same width) or an average-pool one."""

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "basic": {"layer_type": "basic", "downsample_in_first_stage": True},
        # A narrower stem than stage 1: the basic first block average-pools and projects.
        "basic-narrow-stem": {"layer_type": "basic", "downsample_in_first_stage": True, "embedding_size": 4},
        "bottleneck": {"layer_type": "bottleneck", "downsample_in_first_stage": True},
    }
    out_indices = ((1, 2, 3, 4), (-1,))
    hidden_state_shapes = None  # the stem's width differs between the variants; shapes are checked below


def test_downsample_first_stage_reductions() -> None:
    model = RTDetrResNetBackbone(RTDetrResNetConfig(**SMALL, layer_type="basic", downsample_in_first_stage=True))
    assert model.reductions == [4, 8, 16, 32, 64]
    assert model.num_features == [8, 8, 16, 24, 32]
    with torch.no_grad():
        states = model.eval()(torch.zeros(1, 3, 640, 640), output_hidden_states=True).hidden_states
    assert [tuple(state.shape[2:]) for state in states] == [(160, 160), (80, 80), (40, 40), (20, 20), (10, 10)]


def pixels(height: int = 64, width: int = 48, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


# -- the RT-DETR detector's backbone ----------------------------------------------------------------

DETECTOR_BACKBONE_PREFIX = "model.backbone.model."


@pytest.fixture(scope="module", params=["bottleneck", "basic"])
def detector_checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A tiny RT-DETR on the SMALL ResNet-vd (frozen BatchNorm, as RT-DETR trains), randomised and saved."""
    backbone = transformers.RTDetrResNetConfig(**SMALL, layer_type=request.param, out_indices=[2, 3, 4])
    detector = detr_detector(
        "RTDetr", backbone, encoder_attention_heads=2, decoder_in_channels=[16, 16, 16], decoder_attention_heads=2
    )
    directory = tmp_path_factory.mktemp(f"rtdetr-{request.param}")
    return save_randomized(detector, directory), directory


def test_detector_checkpoint_loads_with_prefix(detector_checkpoint: tuple[Any, Path]) -> None:
    detector, directory = detector_checkpoint
    # RT-DETR freezes the backbone's BatchNorm, which then has no num_batches_tracked; ours keeps the counter.
    # Outside the prefix: the hybrid encoder, the decoder and the heads. RT-DETR's training size, and another.
    _, report = assert_nested_checkpoint(
        directory,
        detector.model.backbone.model,
        DETECTOR_BACKBONE_PREFIX,
        backbone_class=RTDetrResNetBackbone,
        out_indices=[2, 3, 4],  # the selection saved in backbone_config
        input_sizes=((640, 640), (96, 64)),
        min_unused=50,
        missing_counters=True,
        loader=RTDetrResNetBackbone,
    )
    assert len(report.missing_keys) > 10


def test_detector_checkpoint_through_auto_backbone(detector_checkpoint: tuple[Any, Path]) -> None:
    detector, directory = detector_checkpoint
    options = {"checkpoint_prefix": DETECTOR_BACKBONE_PREFIX, "config_key": "backbone_config"}
    model = AutoBackbone.from_pretrained(directory, out_indices=[1, -1], freeze_norm=True, freeze_at=0, **options)
    assert isinstance(model, RTDetrResNetBackbone)
    assert model.frozen_stages == ["stem"]
    assert not any(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    batch = pixels(96, 64, batch=1)
    detector.model.backbone.model.out_indices = [1, 4]
    try:
        with torch.no_grad():
            assert_parity(model.train()(batch).feature_maps, detector.model.backbone.model(batch).feature_maps)
    finally:
        detector.model.backbone.model.out_indices = [2, 3, 4]


# -- transformers' config.json in, ours out ---------------------------------------------------------


def test_transformers_config_json_round_trips(tmp_path: Path) -> None:
    fields = {**SMALL, "layer_type": "basic"}
    assert_config_json_round_trips(RTDetrResNetConfig, "RTDetrResNetConfig", fields, ["stage2", "stage4"], tmp_path)


def test_freeze_fields_round_trip_through_both_libraries(tmp_path: Path) -> None:
    config = RTDetrResNetConfig(**SMALL, freeze_at=2, freeze_norm=True)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["freeze_at"], saved["freeze_norm"]) == (2, True)
    again = RTDetrResNetConfig.from_pretrained(tmp_path)
    assert (again.freeze_at, again.freeze_norm) == (2, True)
    reference = transformers.RTDetrResNetConfig.from_pretrained(tmp_path)
    assert (reference.freeze_at, reference.freeze_norm) == (2, True)


# -- real sizes -------------------------------------------------------------------------------------

# RT-DETR's ResNet-vd sizes (its configs' PResNet depth 18, 34, 50, 101).
REAL_SIZES: dict[str, dict[str, Any]] = {
    "r18vd": {"layer_type": "basic", "depths": [2, 2, 2, 2], "hidden_sizes": [64, 128, 256, 512]},
    "r34vd": {"layer_type": "basic", "depths": [3, 4, 6, 3], "hidden_sizes": [64, 128, 256, 512]},
    "r50vd": {},
    "r101vd": {"depths": [3, 4, 23, 3]},
}


@pytest.mark.parametrize("size", list(REAL_SIZES))
def test_real_sizes_build_on_meta(size: str) -> None:
    fields = REAL_SIZES[size]
    with torch.device("meta"):
        model = RTDetrResNetBackbone(RTDetrResNetConfig(**fields, out_indices=[2, 3, 4]))
        reference = transformers.RTDetrResNetBackbone(transformers.RTDetrResNetConfig(**fields, out_indices=[2, 3, 4]))
        maps = model(torch.empty(1, 3, 640, 640)).feature_maps
    ours = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert ours == {name: tuple(tensor.shape) for name, tensor in reference.state_dict().items()}
    widths = model.config.hidden_sizes
    assert [tuple(fmap.shape) for fmap in maps] == [
        (1, widths[1], 80, 80),
        (1, widths[2], 40, 40),
        (1, widths[3], 20, 20),
    ]
    assert model.channels == widths[1:] and model.out_reductions == [8, 16, 32]


# -- behaviour --------------------------------------------------------------------------------------


def test_built_on_backbones_resnet_blocks() -> None:
    # (That only public names are imported is checked for every plugin by tests/test_plugin_imports.py.)
    model = RTDetrResNetBackbone(RTDetrResNetConfig(**TINY))
    kinds = {
        type(module).__name__ for module in model.modules() if type(module).__module__ == "backbones_resnet.blocks"
    }
    assert kinds == {"ConvNormLayer", "ResidualBlock", "ResNetStage", "ResNetEmbeddings", "ResNetEncoder"}


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = RTDetrResNetBackbone(RTDetrResNetConfig(**SMALL))
    norm = model.encoder.stages[3].layers[0].layer[1].normalization
    assert torch.equal(norm.weight, torch.ones(8)) and torch.equal(norm.bias, torch.zeros(8))
    assert torch.equal(norm.running_mean, torch.zeros(8)) and torch.equal(norm.running_var, torch.ones(8))
    conv = model.encoder.stages[3].layers[0].shortcut[1].convolution.weight  # 32 x 24 x 1 x 1
    assert conv.std().item() == pytest.approx((2 / 32) ** 0.5, rel=0.15)


def test_forward_stops_at_the_deepest_requested_stage() -> None:
    model = RTDetrResNetBackbone(RTDetrResNetConfig(**SMALL, out_indices=[2])).eval()
    assert len(model.encoder.stages) == 4
    assert_runs_up_to_deepest_selected_stage(model, model.encoder.stages, pixels())


@pytest.mark.parametrize("freeze_at", [-1, 0, 1, 3, 4])
def test_freeze_at_maps_onto_freeze_stages(freeze_at: int) -> None:
    model = RTDetrResNetBackbone(RTDetrResNetConfig(**SMALL, freeze_at=freeze_at))
    expected = RTDetrResNetBackbone(RTDetrResNetConfig(**SMALL))
    names = expected.freeze_stages(freeze_at + 1)
    assert model.frozen_stages == names == ["stem", "stage1", "stage2", "stage3", "stage4"][: freeze_at + 1]
    assert [name for name, p in model.named_parameters() if not p.requires_grad] == [
        name for name, p in expected.named_parameters() if not p.requires_grad
    ]
    model.train()
    assert model.embedder.training == (freeze_at < 0)


def test_freeze_norm_is_freeze_batch_norm(tmp_path: Path) -> None:
    reference = transformers.RTDetrResNetBackbone(transformers.RTDetrResNetConfig(**SMALL, out_indices=ALL_STAGES))
    randomize_weights_(reference).eval().save_pretrained(tmp_path)
    assert_frozen_norm_round_trip(tmp_path, reference, "RTDetrResNetBackbone", pixels())


# -- preprocessing ----------------------------------------------------------------------------------

# PekingU/rtdetr_r50vd's preprocessor_config.json, with a 64x48 size instead of 640x640.
PREPROCESSOR: dict[str, Any] = {
    "do_convert_annotations": True,
    "do_normalize": False,
    "do_pad": False,
    "do_rescale": True,
    "do_resize": True,
    "format": "coco_detection",
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "RTDetrImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 64, "width": 48},
}


def _image(height: int = 75, width: int = 101) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8))


class TestRTDetrResNetProcessorParity(FixedSizeProcessorParity):
    """The hub checkpoints' RTDetrImageProcessor (and, with no type named, the one this plugin declares)."""

    model_type = "rt_detr_resnet"
    processor_class = RTDetrImageProcessor
    preprocessor = PREPROCESSOR
    variants = {"normalized": {"do_normalize": True}}
    suffixes = ("Fast", "Pil")


def test_padding_to_pad_size_matches_transformers() -> None:
    fields = {**PREPROCESSOR, "do_pad": True, "pad_size": {"height": 80, "width": 56}}
    ours = RTDetrImageProcessor(**{key: value for key, value in fields.items() if key != "image_processor_type"})
    oracle = transformers.RTDetrImageProcessorPil(**fields)
    images = [_image(), _image(40, 30)]
    expected = oracle(images, return_tensors="pt")["pixel_values"]
    actual = ours(images, return_tensors="pt")["pixel_values"]
    assert tuple(actual.shape) == tuple(expected.shape) == (2, 3, 80, 56)
    assert (actual - expected).abs().max().item() <= 1e-5


def test_processor_defaults_are_transformers_defaults() -> None:
    ours, oracle = RTDetrImageProcessor(), transformers.RTDetrImageProcessorPil()
    assert ours.size == dict(oracle.size) == {"height": 640, "width": 640}
    assert (
        (ours.do_normalize, ours.do_pad, ours.resample) == (oracle.do_normalize, oracle.do_pad, 2) == (False, False, 2)
    )
    expected = oracle(_image(), return_tensors="pt")["pixel_values"]
    assert (ours(_image(), return_tensors="pt")["pixel_values"] - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"size": {"shortest_edge": 640}}, r"resizes to a fixed size only; give \{\"height\": H, \"width\": W\}"),
        ({"do_pad": True, "pad_size": {"height": 32, "width": 640}}, r"pad_size=.* at least as large as size="),
        ({"do_pad": True, "do_resize": False}, r"do_pad=true without do_resize pads each image to the largest"),
    ],
)
def test_processor_rejects_what_it_does_not_implement(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RTDetrImageProcessor(**fields)


# -- config errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"layer_type": "basic", "embedding_size": 4},
            r"with layer_type='basic', hidden_sizes\[0\]=8 must equal embedding_size=4 unless "
            r"downsample_in_first_stage is true",
        ),
        (
            {"hidden_sizes": [8, 2, 24, 32]},
            r"hidden_sizes\[1\]=2 must be at least 4 with layer_type='bottleneck'",
        ),
        ({"embedding_size": 1}, r"embedding_size=1 must be at least 2"),
        ({"freeze_at": 5}, r"freeze_at=5: must be an int between -1 \(freeze nothing\) and 4 \(the stages after"),
        ({"freeze_at": -2}, r"freeze_at=-2: must be an int between -1 .* and 4"),
        ({"layer_type": "wide"}, r"layer_type 'wide' is not supported"),
        ({"depths": [1, 1, 1]}, r"hidden_sizes has 4 entries but depths has 3"),
    ],
)
def test_bad_configs_name_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RTDetrResNetConfig(**{**SMALL, **overrides})


# -- output stride by dilation ----------------------------------------------------------------------

# timm's resnet50d layout: a deep stem 8, 8, 16 wide (stem_width=8), average-pool shortcuts.
TIMM_LIKE: dict[str, Any] = {"embedding_size": 16, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 2, 2, 2]}


def _timm_resnet_d_key(key: str) -> str:
    """Our ResNet-vd key as timm's ``resnet50d`` names it (``conv1.{0,3,6}``/``conv1.{1,4}``/``bn1`` deep stem,
    ``layerN.B.convK``/``bnK``, ``downsample.1``/``.2`` after the pool)."""
    if key.startswith("embedder.embedder."):
        index, part, leaf = key.removeprefix("embedder.embedder.").split(".", 2)
        if part == "convolution":
            return f"conv1.{3 * int(index)}.{leaf}"
        return f"conv1.{3 * int(index) + 1}.{leaf}" if index != "2" else f"bn1.{leaf}"
    _, _, stage, _, block, rest = key.split(".", 5)
    prefix = f"layer{int(stage) + 1}.{block}."
    if rest.startswith("shortcut."):
        part, leaf = rest.removeprefix("shortcut.").removeprefix("1.").split(".", 1)
        return prefix + ("downsample.1." if part == "convolution" else "downsample.2.") + leaf
    _, index, part, leaf = rest.split(".", 3)
    return prefix + ("conv" if part == "convolution" else "bn") + f"{int(index) + 1}.{leaf}"


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_output_stride_matches_timm_resnet_d(output_stride: int) -> None:
    timm = pytest.importorskip("timm")
    model = dilated_backbone(RTDetrResNetConfig(**TIMM_LIKE, output_stride=output_stride, out_indices=[1, 2, 3, 4]))
    reference = timm.create_model(
        "resnet50d",
        pretrained=False,
        layers=[1, 2, 2, 2],
        channels=(4, 8, 16, 32),
        stem_width=8,
        output_stride=output_stride,
        features_only=True,
        out_indices=(1, 2, 3, 4),
    ).eval()
    state = {_timm_resnet_d_key(key): value for key, value in model.state_dict().items()}
    reference.load_state_dict(state, strict=True)
    # Odd sizes: the shortcuts' pools (ceil mode when strided, padded at the bottom and right when dilated)
    # handle their last row and column specially.
    assert_same_maps_at_sizes(lambda images: model(images).feature_maps, reference, [(64, 64), (50, 38)])


def test_output_stride_loads_the_same_weights(tmp_path: Path) -> None:
    randomize_weights_(AutoBackbone.from_config(RTDetrResNetConfig(**SMALL))).save_pretrained(tmp_path)
    model, report = AutoBackbone.from_pretrained(tmp_path, output_stride=16, output_loading_info=True)
    assert (report.missing_keys, report.unused_keys, report.unknown_config_fields) == ([], [], {})
    assert model.reductions == [4, 4, 8, 16, 16]
    with torch.no_grad():
        states = model(pixels(), output_hidden_states=True).hidden_states
    assert_map_shapes(states, 2, [8, 8, 16, 24, 32], [(16, 12), (16, 12), (8, 6), (4, 3), (4, 3)])


def test_output_stride_lists_the_valid_values() -> None:
    with pytest.raises(ConfigError, match=r"output_stride=24: output_stride must be one of \[8, 16, 32\]"):
        RTDetrResNetConfig(output_stride=24)


# -- reparameterisation -----------------------------------------------------------------------------


@pytest.mark.parametrize("freeze_norm", [False, True])
def test_reparameterize_folds_every_norm(freeze_norm: bool) -> None:
    config = RTDetrResNetConfig(**SMALL, freeze_norm=freeze_norm, out_indices=ALL_STAGES)
    model = randomize_weights_(AutoBackbone.from_config(config)).eval()
    norm_type = FrozenBatchNorm2d if freeze_norm else nn.BatchNorm2d
    inputs = [pixels(height=height, width=width) for height, width in [(64, 48), (45, 71)]]
    assert_reparameterize_folds_norms(model, (norm_type,), inputs)
    # The other kind of norm is not there either.
    assert not any(isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)) for module in model.modules())


def test_folded_dilated_model_exports_with_dynamic_size() -> None:
    config = RTDetrResNetConfig(**SMALL, output_stride=16, out_indices=ALL_STAGES)
    model = randomize_weights_(AutoBackbone.from_config(config)).eval()
    model.reparameterize()
    inputs = [pixels(height=height, width=width) for height, width in [(64, 48), (45, 71)]]
    assert_exports_with_dynamic_size(model, pixels(), inputs, size_range=(17, 1024), scaled=True)
