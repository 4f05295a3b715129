"""Tests of backbones-textnet: the conformance kit, parity with transformers 5.23, reparameterisation,
preprocessing, config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from torch import Tensor, nn

from backbones import ConfigError, ReparameterizedError
from backbones.layers import FrozenBatchNorm2d
from backbones.testing import (
    ProcessorParity,
    TransformersParity,
    assert_exports_with_dynamic_size,
    random_pixels,
    randomize_weights_,
)
from backbones.testing.cnn import CNNConformance, assert_map_shapes
from backbones.testing.stages import assert_runs_up_to_deepest_selected_stage
from backbones_textnet import TextNetBackbone, TextNetConfig, TextNetImageProcessor

# Every branch kind: 3x3 (vertical and horizontal branches), 1x3 (a 1x1 vertical one), 3x1 (a 1x1 horizontal
# one), identity BatchNorms (stage 1's first layer keeps the shape) and strided layers without them.
SMALL: dict[str, Any] = {
    "stem_out_channels": 8,
    "hidden_sizes": [8, 8, 16, 16, 24],
    "conv_layer_kernel_sizes": [
        [[3, 3], [3, 3]],
        [[3, 3], [1, 3], [3, 1]],
        [[3, 3], [3, 1], [1, 3]],
        [[3, 3], [1, 3]],
    ],
    "conv_layer_strides": [[1, 2], [2, 1, 1], [2, 1, 1], [2, 1]],
}
# One layer a stage (the first keeps the shape: an identity branch), for the conformance kit: summed branches
# grow the random maps layer after layer, and the kit compares some of them to an absolute 1e-5.
TINY: dict[str, Any] = {
    "stem_out_channels": 8,
    "hidden_sizes": [8, 8, 16, 16, 24],
    "conv_layer_kernel_sizes": [[[3, 3]], [[3, 3]], [[1, 3]], [[3, 1]]],
    "conv_layer_strides": [[1], [2], [2], [2]],
}
ALL_STAGES = [0, 1, 2, 3, 4]


# -- conformance ------------------------------------------------------------------------------------


class TestTextNetConformance(CNNConformance):
    """Every padded stride-2 layer rounds up."""

    config_class = TextNetConfig
    config = TINY
    deepest_stride = 16
    bad_config_value = ("hidden_sizes", [8, 8, 16, 16], r"hidden_sizes has 4 entries but needs 5")


# -- parity with transformers -----------------------------------------------------------------------


class TestTextNetParity(TransformersParity):
    backbone_class = TextNetBackbone
    reference_task_class = "TextNetForImageClassification"
    config = SMALL
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "small": {},
        # Wider and asymmetric kernels (5x3: a 5x1 and a 1x3 branch; 1x5; 5x1; 1x1: the main branch alone),
        # a 5x5 stem of stride 1 and a GELU stem.
        "wide-kernels": {
            "stem_kernel_size": 5,
            "stem_stride": 1,
            "stem_act_func": "gelu",
            "conv_layer_kernel_sizes": [
                [[5, 3], [3, 5]],
                [[1, 5], [5, 1], [1, 1]],
                [[3, 3], [5, 5], [1, 3]],
                [[3, 1], [3, 3]],
            ],
        },
    }
    # 640: FAST's training size (czczup/textnet-base's image_size); 50x38 exercises the rounding up.
    input_sizes = ((640, 640), (50, 38))
    batch_size = 1
    out_indices = ((1, 2, 3, 4), (2,), (-1,))
    selection_variants = ("small",)
    hidden_state_count = 5
    hidden_state_shapes: ClassVar[tuple[tuple[int, ...], ...] | None] = None  # per variant, checked below
    task_unused_keys = ("fc.bias", "fc.weight")
    round_trip_out_indices = (0, 2, 4)
    compare_gradients = True


def test_hidden_state_shapes_at_the_training_size() -> None:
    model = TextNetBackbone(TextNetConfig(**SMALL)).eval()
    with torch.no_grad():
        states = model(random_pixels(640, 640, batch=1), output_hidden_states=True).hidden_states
    assert_map_shapes(states, 1, [8, 8, 16, 16, 24], [320, 160, 80, 40, 20])
    assert model.reductions == [2, 4, 8, 16, 32] and model.num_features == [8, 8, 16, 16, 24]


# -- transformers' config.json in, ours out ---------------------------------------------------------


def test_transformers_config_json_round_trips(tmp_path: Path) -> None:
    reference = transformers.TextNetConfig(**SMALL, stem_act_func="gelu", out_features=["stage2", "stage4"])
    reference.save_pretrained(tmp_path)
    config = TextNetConfig.from_pretrained(tmp_path)
    assert config.out_features == ["stage2", "stage4"] and config.out_indices == [2, 4]
    assert config.conv_layer_kernel_sizes == SMALL["conv_layer_kernel_sizes"]
    assert config.depths == [2, 3, 3, 2] and config.unknown_fields() == {}
    # A config built from the file (its depths [2, 3, 3, 2] included) with one layer less in stage 1.
    data = json.loads((tmp_path / "config.json").read_text())
    data["conv_layer_kernel_sizes"] = [[[3, 3]], *SMALL["conv_layer_kernel_sizes"][1:]]
    data["conv_layer_strides"] = [[1], *SMALL["conv_layer_strides"][1:]]
    config = TextNetConfig.from_dict(data)
    out = tmp_path / "ours"
    config.save_pretrained(out)
    saved = json.loads((out / "config.json").read_text())
    assert saved["depths"] == [1, 3, 3, 2]  # the file's stale count is replaced
    assert saved["image_size"] == [640, 640]
    back = transformers.TextNetConfig.from_pretrained(out)
    assert back.stage_names == config.stage_names
    assert back.out_features == ["stage2", "stage4"]
    assert (back.stem_act_func, back.depths, back.hidden_sizes) == ("gelu", [1, 3, 3, 2], SMALL["hidden_sizes"])


def test_null_layer_lists_are_textnet_base() -> None:
    # transformers' config.json may carry null for them: its __post_init__ fills in TextNet-base's.
    config = TextNetConfig.from_dict({"conv_layer_kernel_sizes": None, "conv_layer_strides": None})
    reference = transformers.TextNetConfig()
    assert config.conv_layer_kernel_sizes == reference.conv_layer_kernel_sizes
    assert config.conv_layer_strides == reference.conv_layer_strides


# -- the default size -------------------------------------------------------------------------------


def test_default_size_builds_on_meta_with_transformers_shapes() -> None:
    with torch.device("meta"):
        model = TextNetBackbone(TextNetConfig(out_indices=[1, 2, 3, 4]))
        reference = transformers.TextNetBackbone(transformers.TextNetConfig(out_indices=[1, 2, 3, 4]))
        maps = model(torch.empty(1, 3, 640, 640)).feature_maps
    ours = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert ours == {name: tuple(tensor.shape) for name, tensor in reference.state_dict().items()}
    assert [tuple(fmap.shape) for fmap in maps] == [
        (1, 64, 160, 160),
        (1, 128, 80, 80),
        (1, 256, 40, 40),
        (1, 512, 20, 20),
    ]
    assert model.channels == [64, 128, 256, 512] and model.out_reductions == [4, 8, 16, 32]


# -- reparameterisation -----------------------------------------------------------------------------


def _relative_difference(ours: tuple[Tensor, ...], reference: tuple[Tensor, ...]) -> float:
    """The largest ``max|a - b| / max|b|`` over the maps."""
    return max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(ours, reference))


def _randomised(config: TextNetConfig, seed: int = 0) -> TextNetBackbone:
    model = TextNetBackbone(config)
    return randomize_weights_(model, seed).eval()  # type: ignore[return-value]


@pytest.mark.parametrize("variant", ["small", "wide-kernels"])
def test_reparameterize_folds_every_layer_with_the_same_outputs(variant: str) -> None:
    config = TextNetConfig(**{**SMALL, **TestTextNetParity.variants[variant]}, out_indices=ALL_STAGES)
    model = _randomised(config)
    sizes = ((64, 64), (50, 38))
    with torch.no_grad():
        expected = [model(random_pixels(*size)).feature_maps for size in sizes]
    assert model.supports_reparameterize and not model.is_reparameterized
    layers = sum(len(stage) for stage in config.conv_layer_kernel_sizes)
    assert model.reparameterize() == layers + 1  # every layer and the stem
    assert model.is_reparameterized
    # Only convolutions (with biases) and activations are left.
    kinds = {type(module) for module in model.modules() if not list(module.children())}
    assert kinds == {nn.Conv2d, nn.ReLU} | ({nn.GELU} if variant == "wide-kernels" else set())
    first = model.textnet.encoder.stages[0].stage[0]
    assert [name for name, _ in first.named_children()] == ["main_conv", "activation"]
    assert first.main_conv.kernel_size == tuple(config.conv_layer_kernel_sizes[0][0])
    with torch.no_grad():
        for size, reference in zip(sizes, expected):
            assert _relative_difference(model(random_pixels(*size)).feature_maps, reference) <= 1e-5
    assert model.reparameterize() == 0  # a second call folds nothing and changes nothing
    with torch.no_grad():
        assert _relative_difference(model(random_pixels(*sizes[0])).feature_maps, expected[0]) <= 1e-5


def test_reparameterize_folds_frozen_batch_norms() -> None:
    model = _randomised(TextNetConfig(**SMALL, out_indices=[2, 4]))
    assert model.freeze_batch_norm() == 1 + sum(
        1
        + (module.vertical_conv is not None)
        + (module.horizontal_conv is not None)
        + (module.rbr_identity is not None)
        for module in model.modules()
        if type(module).__name__ == "TextNetRepConvLayer"
    )
    batch = random_pixels(64, 48)
    with torch.no_grad():
        expected = model(batch).feature_maps
    model.reparameterize()
    assert not any(isinstance(module, FrozenBatchNorm2d) for module in model.modules())
    with torch.no_grad():
        assert _relative_difference(model(batch).feature_maps, expected) <= 1e-5


def test_folded_model_refuses_training_and_saving(tmp_path: Path) -> None:
    model = TextNetBackbone(TextNetConfig(**SMALL)).train()
    model.reparameterize()
    assert not model.training
    with pytest.raises(ReparameterizedError, match="cannot train; load the checkpoint again"):
        model.train()
    with pytest.raises(ReparameterizedError, match="save the model before calling reparameterize"):
        model.save_pretrained(tmp_path)


def test_folded_model_exports_with_dynamic_size(tmp_path: Path) -> None:
    model = _randomised(TextNetConfig(**SMALL, out_indices=[1, 4]))
    model.reparameterize()
    inputs = [random_pixels(*size, seed=3) for size in ((64, 64), (50, 38))]
    assert_exports_with_dynamic_size(
        model, random_pixels(64, 48), inputs, size_range=(33, 4096), onnx_path=tmp_path / "textnet.onnx"
    )


# -- behaviour --------------------------------------------------------------------------------------


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = TextNetBackbone(TextNetConfig(**{**SMALL, "hidden_sizes": [8, 8, 16, 16, 256]}))
    layer = model.textnet.encoder.stages[3].stage[1]
    norm = layer.main_batch_norm
    assert isinstance(norm, nn.BatchNorm2d)
    assert torch.equal(norm.weight, torch.ones(256)) and torch.equal(norm.running_var, torch.ones(256))
    assert layer.main_conv.weight.std().item() == pytest.approx(0.02, rel=0.05)  # 256 x 256 x 1 x 3


def test_forward_stops_at_the_deepest_requested_stage() -> None:
    model = TextNetBackbone(TextNetConfig(**SMALL, out_indices=[2])).eval()
    assert_runs_up_to_deepest_selected_stage(model, model.textnet.encoder.stages, random_pixels(64, 48))


def test_wrong_channel_count_names_the_field() -> None:
    model = TextNetBackbone(TextNetConfig(**SMALL))
    with pytest.raises(
        ValueError, match=r"pixel_values has 1 channels but this TextNet expects 3 \(config\.stem_num_channels\)"
    ):
        model(torch.zeros(1, 1, 64, 64))


# -- preprocessing ----------------------------------------------------------------------------------

# czczup/textnet-base's preprocessor_config.json, with a 64-pixel shortest edge instead of 640.
PREPROCESSOR: dict[str, Any] = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": False,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "TextNetImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 64},
    "size_divisor": 32,
}


def _image(height: int = 75, width: int = 101, mode: str = "RGB") -> Image.Image:
    array = np.random.default_rng(height).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(array).convert(mode)


class TestTextNetProcessorParity(ProcessorParity):
    model_type = "textnet"
    processor_class = TextNetImageProcessor
    preprocessor = PREPROCESSOR
    variants = {"divisor-16": {"size_divisor": 16}}
    suffixes = ("Pil",)

    def images(self, variant: str) -> list[Image.Image]:
        # 75x101 resizes to 64x86, rounded up to 64x96; a grey image becomes RGB.
        return [_image(), _image(130, 70, "L")]

    def compare(self, ours: Any, reference: Any, variant: str) -> list[float]:
        worst = super().compare(ours, reference, variant)
        # 64x70 keeps its size, then its width is rounded up to 96 (80 with a divisor of 16).
        width = 80 if variant == "divisor-16" else 96
        assert tuple(ours(_image(64, 70), return_tensors="pt")["pixel_values"].shape) == (1, 3, 64, width)
        return worst


def test_processor_defaults_are_transformers_defaults() -> None:
    ours, oracle = TextNetImageProcessor(), transformers.TextNetImageProcessorPil()
    assert ours.size == dict(oracle.size) == {"shortest_edge": 640} and ours.size_divisor == oracle.size_divisor == 32
    assert (ours.do_convert_rgb, ours.do_center_crop, ours.resample) == (True, False, 2)
    image = _image(100, 150)
    expected = oracle(image, return_tensors="pt")["pixel_values"]
    actual = ours(image, return_tensors="pt")["pixel_values"]
    assert tuple(actual.shape) == tuple(expected.shape) == (1, 3, 640, 960)
    assert (actual - expected).abs().max().item() <= 1e-5
    assert ours.describe() == (
        "RGB, resize the shortest edge to 640 (bilinear), scale to [0, 1], normalise with mean "
        "(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) (the resized sides rounded up to multiples of 32)"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"size": {"height": 64, "width": 64}}, r"resizes the shortest edge only: size=.* must be"),
        ({"size_divisor": 0}, r"size_divisor=0 must be a positive int"),
    ],
)
def test_processor_rejects_what_transformers_cannot_do(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TextNetImageProcessor(**fields)


# -- config errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_sizes": [16, 8, 16, 16, 24]}, r"hidden_sizes\[0\]=16 must equal stem_out_channels=8"),
        ({"hidden_sizes": [8, 8, 0, 16, 24]}, r"hidden_sizes\[2\]=0 must be 1 or more"),
        (
            {"conv_layer_kernel_sizes": SMALL["conv_layer_kernel_sizes"][:3]},
            r"conv_layer_kernel_sizes has 3 stages but TextNet has 4",
        ),
        (
            {"conv_layer_strides": [[1, 2], [2, 1], [2, 1, 1], [2, 1]]},
            r"conv_layer_strides\[1\] has 2 entries but conv_layer_kernel_sizes\[1\] has 3",
        ),
        (
            {"conv_layer_kernel_sizes": [[[3, 3], [2, 3]], *SMALL["conv_layer_kernel_sizes"][1:]]},
            r"conv_layer_kernel_sizes\[0\]\[1\]=\[2, 3\] must be \[height, width\] with odd positive sides",
        ),
        (
            {
                "conv_layer_kernel_sizes": [[[3]], *SMALL["conv_layer_kernel_sizes"][1:]],
                "conv_layer_strides": [[1], *SMALL["conv_layer_strides"][1:]],
            },
            r"conv_layer_kernel_sizes\[0\]\[0\]=\[3\] must be \[height, width\]",
        ),
        (
            {"conv_layer_kernel_sizes": [[], *SMALL["conv_layer_kernel_sizes"][1:]]},
            r"conv_layer_kernel_sizes\[0\] is empty",
        ),
        ({"conv_layer_strides": [[1, 0], [2, 1, 1], [2, 1, 1], [2, 1]]}, r"conv_layer_strides\[0\]\[1\]=0 must be 1"),
        ({"stem_act_func": "swishy"}, r"stem_act_func 'swishy' is not supported"),
        ({"stem_stride": 0}, r"stem_stride=0: Input should be greater than or equal to 1"),
        ({"batch_norm_eps": 0.0}, r"batch_norm_eps=0.0: Input should be greater than 0"),
    ],
)
def test_bad_configs_name_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TextNetConfig(**{**SMALL, **overrides})
