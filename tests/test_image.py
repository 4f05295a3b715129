"""Image preprocessing: parity with transformers' PIL-backend image processors, inputs, errors, loading.

transformers (the oracle) is built from the same preprocessor_config.json with ``backend="pil"``: its
Pillow/NumPy processors resize with Pillow as backbones does, so pixel values agree to 1e-5.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from backbones import CheckpointError, ConfigError
from backbones._image import (
    AutoImageProcessor,
    ImageProcessor,
    ProcessedImages,
    _capped_size,
    _center_crop,
    _shortest_edge_size,
    checkpoint_image_processor,
)

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

TOLERANCE = 1e-5
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}

# preprocessor_config.json files as the hub has them (legacy and current spellings), at small sizes.
CONFIGS: dict[str, dict[str, Any]] = {
    # microsoft/swin-tiny-patch4-window7-224's file, size 48 instead of 224.
    "vit-swin-legacy": {"feature_extractor_type": "ViTFeatureExtractor", "size": 48, "resample": 3, **IMAGENET},
    "vit-height-width": {"image_processor_type": "ViTImageProcessor", "size": {"height": 40, "width": 56}},
    "vit-capped-lanczos": {
        "image_processor_type": "ViTImageProcessor",
        "size": {"shortest_edge": 40, "longest_edge": 60},
        "resample": 1,
    },
    "vit-crop-only": {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": False,
        "do_center_crop": True,
        "crop_size": {"height": 45, "width": 31},
    },
    "vit-nearest-unscaled": {
        "image_processor_type": "ViTImageProcessorFast",
        "size": [33, 29],
        "resample": 0,
        "do_rescale": False,
        "image_mean": 127.5,
        "image_std": 127.5,
    },
    # facebook/convnext-tiny-224's and microsoft/resnet-50's file, size 56 instead of 224.
    "convnext-crop-pct": {
        "feature_extractor_type": "ConvNextFeatureExtractor",
        "crop_pct": 0.875,
        "size": 56,
        "resample": 3,
        **IMAGENET,
    },
    "convnext-warp-box": {
        "image_processor_type": "ConvNextImageProcessor",
        "size": {"shortest_edge": 384},
        "resample": 4,
    },
    # facebook/dinov2-small's file, sizes 64/56 instead of 256/224.
    "bit-dinov2": {
        "image_processor_type": "BitImageProcessor",
        "size": {"shortest_edge": 64},
        "crop_size": {"height": 56, "width": 56},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        **IMAGENET,
    },
    "bit-defaults-pil-name": {
        "image_processor_type": "BitImageProcessorPil",
        "size": {"shortest_edge": 32},
        "crop_size": {"height": 24, "width": 24},
    },
    # microsoft/beit-base-patch16-224's file, size 48 instead of 224.
    "beit-legacy": {
        "feature_extractor_type": "BeitFeatureExtractor",
        "size": 48,
        "crop_size": 32,
        "do_center_crop": False,
        "resample": 2,
        "reduce_labels": False,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    },
    "beit-crop-pads-hamming": {
        "image_processor_type": "BeitImageProcessor",
        "size": {"height": 30, "width": 27},
        "do_center_crop": True,
        "crop_size": {"height": 33, "width": 24},
        "resample": 5,
        "do_normalize": False,
    },
}


def _pixels(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _palette_image() -> Image.Image:
    image = Image.fromarray(_pixels((26, 34, 3), 9)).quantize(colors=16)
    image.info["transparency"] = 3
    return image


# Generated images: several sizes (smaller and larger than the targets), PIL modes, array layouts and dtypes.
IMAGES: dict[str, Any] = {
    "pil-rgb-37x53": lambda: Image.fromarray(_pixels((37, 53, 3), 0)),
    "pil-rgb-100x64": lambda: Image.fromarray(_pixels((100, 64, 3), 1)),
    "pil-rgb-20x20": lambda: Image.fromarray(_pixels((20, 20, 3), 2)),
    "pil-L-41x29": lambda: Image.fromarray(_pixels((41, 29), 3)),
    "pil-RGBA-50x38": lambda: Image.fromarray(_pixels((50, 38, 4), 4)),
    "pil-LA-30x44": lambda: Image.fromarray(_pixels((30, 44, 2), 5)),
    "pil-P-transparent-26x34": _palette_image,
    "np-uint8-hwc-45x61": lambda: _pixels((45, 61, 3), 6),
    "np-uint8-chw-45x61": lambda: _pixels((3, 45, 61), 7),
    "np-uint8-hw1-33x47": lambda: _pixels((33, 47, 1), 8),
    "np-uint8-hw-31x23": lambda: _pixels((31, 23), 10),
    "np-uint8-rgba-40x30": lambda: _pixels((40, 30, 4), 11),
    "np-float32-hwc-52x39": lambda: _pixels((52, 39, 3), 12).astype(np.float32),
    "np-float64-chw-39x52": lambda: _pixels((3, 39, 52), 13).astype(np.float64),
    "torch-uint8-chw-36x52": lambda: torch.from_numpy(_pixels((3, 36, 52), 14)),
    "torch-float32-hwc-28x70": lambda: torch.from_numpy(_pixels((28, 70, 3), 15).astype(np.float32)),
}

# transformers accepts no 2-D arrays; backbones reads them as grayscale, so their oracle gets (H, W, 1).
_ORACLE_INPUT = {"np-uint8-hw-31x23": lambda image: image[:, :, None]}


def _three_channels(name: str) -> bool:
    return any(tag in name for tag in ("rgb-", "hwc", "chw")) and "rgba" not in name


def _write(directory: Path, data: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "preprocessor_config.json").write_text(json.dumps(data))
    return directory


_PAIRS: dict[str, tuple[ImageProcessor, Any]] = {}


def _processors(name: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageProcessor, Any]:
    if name not in _PAIRS:
        directory = _write(tmp_path_factory.mktemp(name), CONFIGS[name])
        oracle = transformers.AutoImageProcessor.from_pretrained(directory, backend="pil")
        _PAIRS[name] = AutoImageProcessor.from_pretrained(directory), oracle
    return _PAIRS[name]


def _oracle_pixels(oracle: Any, images: Any, **kwargs: Any) -> np.ndarray:
    return oracle(images, return_tensors="pt", **kwargs)["pixel_values"].numpy()


@pytest.mark.parametrize("image_name", list(IMAGES))
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_pixel_values_match_transformers(
    config_name: str, image_name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ours, oracle = _processors(config_name, tmp_path_factory)
    image = IMAGES[image_name]()
    # Images that are not 3-channel need RGB conversion to meet a 3-channel mean (transformers too).
    kwargs: dict[str, Any] = {} if _three_channels(image_name) else {"do_convert_rgb": True}
    expected = _oracle_pixels(oracle, _ORACLE_INPUT.get(image_name, lambda x: x)(image), **kwargs)
    inputs = ours(image, return_tensors="pt", **kwargs)
    actual = inputs["pixel_values"]
    assert set(inputs) == {"pixel_values"}
    assert actual.dtype == torch.float32
    assert tuple(actual.shape) == expected.shape
    assert np.abs(actual.numpy() - expected).max() <= TOLERANCE


def test_the_expected_transformers_classes_are_the_oracle(tmp_path_factory: pytest.TempPathFactory) -> None:
    classes = {name: type(_processors(name, tmp_path_factory)[1]).__name__ for name in CONFIGS}
    assert set(classes.values()) == {
        "ViTImageProcessorPil",
        "ConvNextImageProcessorPil",
        "BitImageProcessorPil",
        "BeitImageProcessorPil",
    }
    types = {name: _processors(name, tmp_path_factory)[0].image_processor_type for name in CONFIGS}
    assert all(classes[name] == f"{types[name]}Pil" for name in CONFIGS)


def test_batches_match_transformers(tmp_path_factory: pytest.TempPathFactory) -> None:
    ours, oracle = _processors("bit-dinov2", tmp_path_factory)
    batch = [IMAGES[name]() for name in ("pil-rgb-37x53", "np-uint8-chw-45x61", "torch-uint8-chw-36x52", "pil-L-41x29")]
    actual = ours(batch, return_tensors="pt")["pixel_values"]
    assert tuple(actual.shape) == (4, 3, 56, 56)
    assert np.abs(actual.numpy() - _oracle_pixels(oracle, batch)).max() <= TOLERANCE
    stacked = np.stack([_pixels((30, 40, 3), seed) for seed in range(3)])  # a 4-D (batch, H, W, C) array
    actual = ours(stacked, return_tensors="np")["pixel_values"]
    assert isinstance(actual, np.ndarray) and actual.shape == (3, 3, 56, 56)
    assert np.abs(actual - _oracle_pixels(oracle, stacked)).max() <= TOLERANCE


def test_fractional_float_images_without_resizing_match_transformers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    ours, oracle = _processors("vit-crop-only", tmp_path_factory)
    image = np.random.default_rng(20).uniform(0, 255, size=(50, 20, 3))
    assert np.abs(ours(image, return_tensors="np")["pixel_values"] - _oracle_pixels(oracle, image)).max() <= TOLERANCE


def test_fractional_float_images_are_resized_without_8_bit_truncation(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # transformers truncates a [0, 1] float image to 8 bits before Pillow resizes it; backbones resizes
    # the floats, so a flat 0.3 stays 0.3: (0.3 - 0.5) / 0.5 = -0.4, where transformers has 76/255.
    ours, oracle = _processors("vit-height-width", tmp_path_factory)
    image = np.full((30, 20, 3), 0.3, dtype=np.float32)
    actual = ours(image, return_tensors="np", do_rescale=False)["pixel_values"]
    expected = _oracle_pixels(oracle, image, do_rescale=False)
    assert actual.shape == expected.shape == (1, 3, 40, 56)
    assert np.abs(actual - (-0.4)).max() <= 1e-6
    assert np.abs(expected - (76 / 255 - 0.5) / 0.5).max() <= 1e-6
    # On varied content the two differ by at most the 8-bit step over the std (1/255 / 0.5).
    image = np.random.default_rng(21).uniform(0, 1, size=(30, 20, 3)).astype(np.float32)
    difference = np.abs(
        ours(image, return_tensors="np", do_rescale=False)["pixel_values"]
        - _oracle_pixels(oracle, image, do_rescale=False)
    )
    assert 0 < difference.max() <= 2 / 255 / 0.5


def test_float_images_in_0_1_with_rescaling_warn() -> None:
    processor = ImageProcessor(do_resize=False)
    with pytest.warns(
        UserWarning,
        match=r"image 0 is a float image with values in \[0, 1\], and do_rescale multiplies it by 0.00392157; if it is already scaled, pass do_rescale=False",
    ):
        processor(np.full((4, 4, 3), 0.5))


def test_float_rgba_composites_onto_the_white_of_its_scale() -> None:
    pixels = np.zeros((2, 2, 4))
    pixels[..., :3], pixels[..., 3] = 100.0, 127.5  # half-transparent grey over white: 100 / 2 + 255 / 2
    plain = ImageProcessor(do_resize=False, do_normalize=False)
    assert np.allclose(plain(pixels, return_tensors="np")["pixel_values"], 177.5 / 255)
    pixels[..., :3], pixels[..., 3] = 0.2, 0.5  # on the [0, 1] scale when do_rescale is off
    assert np.allclose(plain(pixels, return_tensors="np", do_rescale=False)["pixel_values"], 0.6)


def test_swin_tiny_feature_maps_from_a_processed_image() -> None:
    pytest.importorskip("backbones_swin")
    from backbones import AutoBackbone, AutoBackboneConfig

    # The seed guide's example: swin-tiny's preprocessing, then its first stage is 96 x 56 x 56.
    processor = AutoImageProcessor.from_dict(
        {"feature_extractor_type": "ViTFeatureExtractor", "size": 224, "resample": 3, **IMAGENET}
    )
    model = AutoBackbone.from_config(AutoBackboneConfig.for_model("swin", depths=[2], num_heads=[3], out_indices=[1]))
    inputs = processor(Image.fromarray(_pixels((80, 100, 3), 30)), return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    assert list(outputs.feature_maps[0].shape) == [1, 96, 56, 56]


# -- outputs and the processor object ---------------------------------------------------------------


def test_output_forms() -> None:
    processor = ImageProcessor(size={"height": 8, "width": 6})
    images = [_pixels((10, 12, 3), 40), _pixels((20, 9, 3), 41)]
    listed = processor(images)
    assert isinstance(listed, ProcessedImages)
    assert [array.shape for array in listed.pixel_values] == [(3, 8, 6), (3, 8, 6)]
    assert all(array.dtype == np.float32 for array in listed.pixel_values)
    as_numpy = processor(images, return_tensors="np").pixel_values
    as_torch = processor(images, return_tensors="pt").pixel_values
    assert np.array_equal(as_numpy, np.stack(listed.pixel_values))
    assert torch.equal(as_torch, torch.from_numpy(as_numpy))
    assert processor(images, return_tensors="pt").to(torch.float64).pixel_values.dtype == torch.float64


def test_defaults_are_the_documented_ones() -> None:
    processor = ImageProcessor()
    assert processor.describe() == (
        "RGB, resize to 224x224 (bilinear), scale to [0, 1], normalise with mean (0.485, 0.456, 0.406) "
        "and std (0.229, 0.224, 0.225)"
    )
    image = _pixels((5, 7, 3), 42)
    expected = np.asarray(Image.fromarray(image).resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32)
    expected = (expected / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    actual = processor(image, return_tensors="np").pixel_values[0]
    assert np.abs(actual - expected.transpose(2, 0, 1)).max() <= TOLERANCE


def test_describe_says_what_each_type_does(tmp_path_factory: pytest.TempPathFactory) -> None:
    descriptions = {name: _processors(name, tmp_path_factory)[0].describe() for name in CONFIGS}
    assert descriptions["convnext-crop-pct"] == (
        "channels as given, resize the shortest edge to 64 and centre-crop 56x56 (ConvNeXt crop_pct 0.875, bicubic), "
        "scale to [0, 1], normalise with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)"
    )
    assert descriptions["convnext-warp-box"].startswith("channels as given, resize to 384x384 (box), ")
    assert descriptions["bit-dinov2"].startswith("RGB, resize the shortest edge to 64 (bicubic), centre-crop 56x56, ")
    assert descriptions["vit-capped-lanczos"].startswith(
        "channels as given, resize the shortest edge to 40, the longest to at most 60 (lanczos), "
    )
    assert descriptions["vit-crop-only"].startswith("channels as given, native size, centre-crop 45x31, ")
    assert descriptions["beit-crop-pads-hamming"] == (
        "channels as given, resize to 30x27 (hamming), centre-crop 33x24, scale to [0, 1]"
    )
    assert descriptions["vit-nearest-unscaled"] == (
        "channels as given, resize to 33x29 (nearest), normalise with mean 127.5 and std 127.5"
    )


def test_to_dict_round_trips_through_transformers(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    ours, _ = _processors("convnext-crop-pct", tmp_path_factory)
    directory = _write(tmp_path / "saved", ours.to_dict())
    assert AutoImageProcessor.from_pretrained(directory) == ours
    oracle = transformers.AutoImageProcessor.from_pretrained(directory, backend="pil")
    image = IMAGES["pil-rgb-100x64"]()
    assert np.abs(ours(image, return_tensors="np").pixel_values - _oracle_pixels(oracle, image)).max() <= TOLERANCE


def test_overrides_apply_per_call_and_from_pretrained(tmp_path: Path) -> None:
    directory = _write(tmp_path, CONFIGS["bit-dinov2"])
    processor = AutoImageProcessor.from_pretrained(directory, crop_size=16, do_normalize=False)
    assert (processor.crop_size, processor.do_normalize) == ({"height": 16, "width": 16}, False)
    assert processor(_pixels((20, 20, 3), 43), return_tensors="np", do_center_crop=False).pixel_values.shape == (
        1,
        3,
        64,
        64,
    )
    assert processor.replace(size=32).size == {"shortest_edge": 32}, "BiT reads an int size as the shortest edge"


# -- loading ----------------------------------------------------------------------------------------


def test_a_config_without_a_type_falls_back_to_config_json(tmp_path: Path) -> None:
    data = {"size": 48, "resample": 3, **IMAGENET}
    directory = _write(tmp_path, data)
    with pytest.raises(
        ConfigError, match=r"preprocessor_config.json names no image_processor_type and there is no config.json"
    ):
        AutoImageProcessor.from_pretrained(directory)
    (directory / "config.json").write_text(json.dumps({"model_type": "swin"}))
    processor = AutoImageProcessor.from_pretrained(directory)
    assert processor.image_processor_type == "ViTImageProcessor"
    oracle = transformers.AutoImageProcessor.from_pretrained(directory, backend="pil")
    assert type(oracle).__name__ == "ViTImageProcessorPil"
    image = IMAGES["pil-rgb-37x53"]()
    assert np.abs(processor(image, return_tensors="np").pixel_values - _oracle_pixels(oracle, image)).max() <= TOLERANCE
    (directory / "config.json").write_text(json.dumps({"model_type": "vitdet"}))
    with pytest.raises(
        ConfigError, match=r"names no image_processor_type and config.json's model_type 'vitdet' has no known one"
    ):
        AutoImageProcessor.from_pretrained(directory)


def test_a_cached_hub_file_is_read_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--swin"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    _write(repo / "snapshots" / commit, CONFIGS["vit-swin-legacy"])
    processor = AutoImageProcessor.from_pretrained("org/swin", cache_dir=tmp_path)
    assert processor.size == {"height": 48, "width": 48} and processor.resample == 3
    assert checkpoint_image_processor("org/swin", cache_dir=tmp_path) == processor
    assert checkpoint_image_processor("org/other", cache_dir=tmp_path) is None
    with pytest.raises(
        CheckpointError,
        match=r"preprocessor_config.json of hub repository 'org/other' is not in the local cache and HF_HUB_OFFLINE is set",
    ):
        AutoImageProcessor.from_pretrained("org/other", cache_dir=tmp_path)


def test_missing_preprocessor_config(tmp_path: Path) -> None:
    where = re.escape(str(tmp_path.resolve()))
    with pytest.raises(CheckpointError, match=f"^preprocessor_config.json not found in checkpoint directory {where}$"):
        AutoImageProcessor.from_pretrained(tmp_path)
    assert checkpoint_image_processor(tmp_path) is None
    with pytest.raises(CheckpointError, match="checkpoint directory .*nowhere does not exist"):
        AutoImageProcessor.from_pretrained(tmp_path / "nowhere")


CORE_FAMILIES_TEXT = (
    "BeitImageProcessor, BitImageProcessor, ConvNextImageProcessor, DINOv3ViTImageProcessor, "
    "DeformableDetrImageProcessor, RTDetrImageProcessor and ViTImageProcessor"
)


def _plugin_processors_text() -> str:
    """The installed plugins' own processors as the error lists them (plugins come and go in a checkout)."""
    from backbones import get_registry

    processors = get_registry().image_processors()
    assert processors, "the test environment installs plugins that implement processors (e.g. backbones-pvt-v2)"
    return ", ".join(f"{name} ({processor.distribution})" for name, processor in sorted(processors.items()))


def test_unknown_processor_type(tmp_path: Path) -> None:
    directory = _write(tmp_path, {"image_processor_type": "DeiTImageProcessor", "size": 224})
    with pytest.raises(ConfigError) as caught:
        AutoImageProcessor.from_pretrained(directory)
    assert str(caught.value) == (
        f"{directory / 'preprocessor_config.json'}: image_processor_type 'DeiTImageProcessor' is not supported; "
        f"backbones implements {CORE_FAMILIES_TEXT}; installed plugins add {_plugin_processors_text()} "
        "(preprocess with that transformers class, or build an ImageProcessor with the same steps)"
    )
    with pytest.raises(ConfigError, match=r"image_processor_type 'CLIPImageProcessor' is not supported"):
        AutoImageProcessor.from_dict({"feature_extractor_type": "CLIPFeatureExtractor"})
    with pytest.raises(
        ConfigError,
        match=r"the preprocessor config names no image_processor_type, so its pipeline is unknown \(keys: \['size'\]\)",
    ):
        AutoImageProcessor.from_dict({"size": 224})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"size": {"max_height": 9, "max_width": 9}},
            r"size={'max_height': 9, 'max_width': 9} is not supported: its keys must be {'height', 'width'}, {'shortest_edge'}, {'shortest_edge', 'longest_edge'} or {'longest_edge'}",
        ),
        ({"size": {"height": 0, "width": 9}}, r"size={'height': 0, 'width': 9}: 'height' must be a positive int"),
        ({"size": "224"}, r"size='224' must be an int, \[height, width\] or a dict"),
        (
            {"crop_size": {"shortest_edge": 9}, "do_center_crop": True},
            r"crop_size={'shortest_edge': 9} is not supported: its keys must be {'height', 'width'}",
        ),
        ({"resample": 9}, r"resample=9 is not a Pillow resampling filter; use one of 0 \(nearest\), 1 \(lanczos\)"),
        ({"image_std": [0.5, 0.0, 0.5]}, r"image_std=\[0.5, 0.0, 0.5\] has a zero, and normalising divides by it"),
        (
            {"image_mean": [0.5, 0.5]},
            r"image_mean=\(0.5, 0.5\) and image_std=\(0.5, 0.5, 0.5\) must have as many values",
        ),
        ({"do_resize": "yes"}, r"do_resize='yes' must be true or false"),
        (
            {"do_pad": True},
            r"do_pad=true \(padding the images of a batch to one size\) is not supported; set it to false",
        ),
        (
            {"image_processor_type": "ConvNextImageProcessor", "size": {"height": 9, "width": 9}},
            r"crop_pct \(ConvNeXt's resize rule\) needs size={'shortest_edge': ...}, got size={'height': 9, 'width': 9}",
        ),
    ],
)
def test_invalid_values_name_the_file_and_the_field(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    directory = _write(tmp_path, {"image_processor_type": "ViTImageProcessor", **change})
    with pytest.raises(ConfigError, match=f"^{re.escape(str(directory / 'preprocessor_config.json'))}: {message}"):
        AutoImageProcessor.from_pretrained(directory)


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"preprocessor_config.json is not valid JSON"):
        AutoImageProcessor.from_pretrained(tmp_path)


def test_null_values_take_the_type_defaults() -> None:
    processor = AutoImageProcessor.from_dict(
        {"image_processor_type": "BitImageProcessor", "crop_size": None, "size": None, "crop_pct": 0.5}
    )
    assert (processor.size, processor.crop_size, processor.crop_pct) == (
        {"shortest_edge": 224},
        {"height": 224, "width": 224},
        None,
    )


# -- bad images -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (
            np.zeros((2, 3, 4, 5, 6), np.uint8),
            ValueError,
            r"an image array must have 2 \(H, W\), 3 \(C, H, W or H, W, C\) or 4 \(batch\) dimensions, got shape \(2, 3, 4, 5, 6\)",
        ),
        (np.zeros(7, np.uint8), ValueError, r"got shape \(7,\)"),
        (
            [np.zeros((4, 4, 3), np.uint8), np.zeros((1, 4, 4, 3), np.uint8)],
            ValueError,
            r"image 1 has shape \(1, 4, 4, 3\); an image must be \(H, W\), \(C, H, W\) or \(H, W, C\)",
        ),
        (
            np.zeros((5, 6, 7), np.uint8),
            ValueError,
            r"cannot tell which axis of image 0 \(shape \(5, 6, 7\)\) holds the channels: expected 1, 3 or 4 channels first \(C, H, W\) or last \(H, W, C\); pass input_data_format='channels_first' or 'channels_last'",
        ),
        (
            np.zeros((0, 10, 3), np.uint8),
            ValueError,
            r"image 0 is empty: its shape \(0, 10, 3\) has a zero-length axis",
        ),
        ([np.zeros((4, 4, 3), np.uint8), Image.new("RGB", (0, 5))], ValueError, r"image 1 is empty: it is 0x5 pixels"),
        (torch.zeros(3, 8, 0), ValueError, r"image 0 is empty: its shape \(3, 8, 0\) has a zero-length axis"),
        ([], ValueError, r"no images given: the list is empty"),
        (
            np.full((4, 4, 3), 300, np.int32),
            ValueError,
            r"image 0 is an integer \(int32\) image with values in \[300, 300\]; integer images must hold 8-bit values, 0 to 255",
        ),
        (np.zeros((4, 4, 3), bool), ValueError, r"image 0 has dtype bool; use uint8 or float pixel values"),
        (
            "cat.jpg",
            TypeError,
            r"images must be a PIL image, a NumPy array, a torch tensor or a list of them, got str \(open files with PIL.Image.open first\)",
        ),
        (
            [np.zeros((4, 4, 3)), [np.zeros((4, 4, 3))]],
            TypeError,
            r"image 1 of the list is a list; expected a PIL image, a NumPy array or a torch tensor",
        ),
    ],
)
def test_bad_images_are_refused_with_the_reason(images: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ImageProcessor(size={"height": 4, "width": 4})(images)


def test_channels_that_do_not_fit_the_normalisation() -> None:
    processor = AutoImageProcessor.from_dict({"image_processor_type": "ViTImageProcessor", "size": 8})
    with pytest.raises(
        ValueError,
        match=r"^image 0 has 1 channel\(s\) but image_mean has 3 values: give image_mean and image_std one value per "
        r"channel, as a model loaded with num_channels=1 needs \(or set do_convert_rgb=True to make it RGB\)$",
    ):
        processor(Image.new("L", (5, 5)))
    assert processor(Image.new("L", (5, 5)), return_tensors="np", do_convert_rgb=True).pixel_values.shape == (
        1,
        3,
        8,
        8,
    )
    with pytest.raises(ValueError, match=r"image 0 has 5 channels and cannot be converted to RGB"):
        processor(np.zeros((5, 6, 7), np.uint8), input_data_format="channels_first", do_convert_rgb=True)


def test_explicit_channel_layout_resolves_ambiguity() -> None:
    image = _pixels((3, 3, 4), 50)  # 3 could be the channels first, 4 the channels last
    processor = ImageProcessor(do_resize=False, do_normalize=False, do_convert_rgb=False)
    first = processor(image, return_tensors="np").pixel_values[0]
    last = processor(image, return_tensors="np", input_data_format="channels_last").pixel_values[0]
    assert first.shape == (3, 3, 4) and np.abs(first * 255 - image).max() < 1e-4
    assert last.shape == (4, 3, 3) and np.abs(last * 255 - image.transpose(2, 0, 1)).max() < 1e-4


def test_images_of_different_sizes_stack_only_after_a_fixed_size() -> None:
    processor = ImageProcessor(do_resize=False)
    images = [_pixels((10, 12, 3), 51), _pixels((11, 12, 3), 52)]
    with pytest.raises(
        ValueError,
        match=r"cannot stack the images into one batch: they end up with different shapes \[\(3, 10, 12\), \(3, 11, 12\)\]",
    ):
        processor(images, return_tensors="pt")
    assert [array.shape for array in processor(images).pixel_values] == [(3, 10, 12), (3, 11, 12)]


def test_bad_arguments() -> None:
    processor = ImageProcessor()
    with pytest.raises(TypeError, match=r"ImageProcessor has no field 'do_flip'"):
        processor(np.zeros((4, 4, 3)), do_flip=True)
    with pytest.raises(ValueError, match=r"return_tensors='tf' must be 'pt', 'np' or None"):
        processor(np.zeros((4, 4, 3)), return_tensors="tf")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"unexpected argument 'colour'"):
        AutoImageProcessor.from_dict({"image_processor_type": "ViTImageProcessor"}, colour="red")
    with pytest.raises(ConfigError, match=r"do_center_crop is true but crop_size is missing"):
        ImageProcessor(do_center_crop=True)
    with pytest.raises(TypeError, match=r"AutoImageProcessor is not instantiated"):
        AutoImageProcessor()


# -- sizes and crops against transformers' own functions ---------------------------------------------

_edges = st.integers(min_value=1, max_value=400)


@settings(max_examples=300, deadline=None)
@given(height=_edges, width=_edges, shortest=_edges, extra=st.integers(min_value=1, max_value=400))
def test_resize_sizes_match_transformers(height: int, width: int, shortest: int, extra: int) -> None:
    from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
    from transformers.image_utils import ChannelDimension

    longest = shortest + extra
    assert _capped_size(height, width, shortest, longest) == get_size_with_aspect_ratio(
        (height, width), shortest, longest
    )
    image = np.empty((1, height, width))
    expected = get_resize_output_image_size(
        image, shortest, default_to_square=False, input_data_format=ChannelDimension.FIRST
    )
    assert _shortest_edge_size(height, width, shortest) == expected


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(min_value=1, max_value=12),
    width=st.integers(min_value=1, max_value=12),
    crop_height=st.integers(min_value=1, max_value=12),
    crop_width=st.integers(min_value=1, max_value=12),
)
def test_center_crop_matches_transformers(height: int, width: int, crop_height: int, crop_width: int) -> None:
    from transformers.image_transforms import center_crop
    from transformers.image_utils import ChannelDimension

    image = np.arange(1, height * width * 2 + 1, dtype=np.float32).reshape(height, width, 2)
    expected = center_crop(image, (crop_height, crop_width), input_data_format=ChannelDimension.LAST)
    assert np.array_equal(_center_crop(image, crop_height, crop_width), expected)


# -- processors declared by plugins -----------------------------------------------------------------

# What each plugin of this repository declares for checkpoints whose preprocessor config names no type
# (transformers' model_type fallback); core holds no such table.
DECLARED_FALLBACKS = {
    "beit": "BeitImageProcessor",
    "bit": "BitImageProcessor",
    "convnext": "ConvNextImageProcessor",
    "convnextv2": "ConvNextImageProcessor",
    "dinat": "ViTImageProcessor",
    "dinov2": "BitImageProcessor",
    "dinov2_with_registers": "BitImageProcessor",
    "dinov3_convnext": "DINOv3ViTImageProcessor",
    "dinov3_vit": "DINOv3ViTImageProcessor",
    "focalnet": "BitImageProcessor",
    "hgnet_v2": "RTDetrImageProcessor",
    "hiera": "BitImageProcessor",
    "lw_detr_vit": "DeformableDetrImageProcessor",
    "pixio": "BitImageProcessor",
    "pp_lcnet": "PPLCNetImageProcessor",
    "pvt_v2": "PvtImageProcessor",
    "resnet": "ConvNextImageProcessor",
    "rt_detr_resnet": "RTDetrImageProcessor",
    "sapiens2": "Sapiens2ImageProcessor",
    "swin": "ViTImageProcessor",
    "swinv2": "ViTImageProcessor",
    "textnet": "TextNetImageProcessor",
    "tipsv2_vision_model": "Tipsv2ImageProcessor",
    "uvdoc_backbone": "UVDocImageProcessor",
    "vitpose_backbone": "VitPoseImageProcessor",
}


def test_each_plugin_declares_the_fallback_transformers_uses() -> None:
    from backbones._image import _fallback_type

    assert {model_type: _fallback_type(model_type) for model_type in DECLARED_FALLBACKS} == DECLARED_FALLBACKS
    assert {
        model_type: _fallback_type(model_type) for model_type in ("vitdet", "nat", "rf_detr_dinov2", "unknown", None)
    } == dict.fromkeys(("vitdet", "nat", "rf_detr_dinov2", "unknown", None))
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    for model_type, declared in DECLARED_FALLBACKS.items():
        if model_type in IMAGE_PROCESSOR_MAPPING_NAMES:
            # DINOv3's processor has a torchvision class only, named without a suffix.
            names = IMAGE_PROCESSOR_MAPPING_NAMES[model_type]
            assert names.get("pil", names["torchvision"] + "Pil") == declared + "Pil", model_type


@pytest.fixture
def toynet_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """backbones-toynet installed as a distribution (a dist-info with its entry point), found by discovery."""
    from backbones._registry import reset_registry

    site = tmp_path / "site"
    info = site / "backbones_toynet-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: backbones-toynet\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[backbones]\ntoynet = backbones_toynet.plugin\n")
    monkeypatch.syspath_prepend(str(site))
    for name in ("BACKBONES_DISABLE_PLUGIN_AUTOLOAD", "BACKBONES_DISABLE_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    reset_registry()
    yield tmp_path / "checkpoint"
    reset_registry()


def test_a_third_party_plugin_declares_its_own_processor(toynet_installed: Path) -> None:
    from backbones import AutoBackbone, AutoBackboneConfig, get_registry
    from backbones_toynet.processing import ToyNetImageProcessor

    assert [f.distribution for f in get_registry().failures if f.distribution == "backbones-toynet"] == []
    directory = toynet_installed
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "toynet", "widths": [4, 8]}))
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[..., 0] = 255  # pure red: RGB (1, -1, -1) after scaling to [-1, 1], BGR (-1, -1, 1)

    # preprocessor_config.json names the plugin's type: its class, its defaults, the file's settings.
    _write(directory, {"image_processor_type": "ToyNetImageProcessor", "size": {"height": 16, "width": 24}})
    processor = AutoImageProcessor.from_pretrained(directory)
    assert type(processor) is ToyNetImageProcessor
    assert processor.image_processor_type == "ToyNetImageProcessor"
    assert (processor.size, processor.resample, processor.image_mean) == ({"height": 16, "width": 24}, 0, (0.5,) * 3)
    pixels = processor(image, return_tensors="pt").pixel_values
    assert tuple(pixels.shape) == (1, 3, 16, 24)
    assert pixels[0, :, 0, 0].tolist() == [-1.0, -1.0, 1.0]
    assert processor.describe() == (
        "RGB, resize to 16x24 (nearest), scale to [0, 1], normalise with mean (0.5, 0.5, 0.5) and std "
        "(0.5, 0.5, 0.5), reverse the channels (RGB to BGR)"
    )
    assert processor.to_dict()["do_reverse_channels"] is True
    model = AutoBackbone.from_config(AutoBackboneConfig.for_model("toynet", widths=[4, 8], out_indices=[1, 2]))
    assert [tuple(fmap.shape) for fmap in model(pixels).feature_maps] == [(1, 4, 4, 6), (1, 8, 2, 3)]

    # A file that names no type: the processor the plugin declares for config.json's model type (an alias here).
    (directory / "config.json").write_text(json.dumps({"model_type": "toy-net"}))
    _write(directory, {"do_reverse_channels": False})
    processor = AutoImageProcessor.from_pretrained(directory)
    assert type(processor) is ToyNetImageProcessor and processor.size == {"height": 32, "width": 32}
    assert processor(image, return_tensors="np").pixel_values[0, :, 0, 0].tolist() == [1.0, -1.0, -1.0]
    assert AutoImageProcessor.from_dict({"image_processor_type": "ToyNetImageProcessor"}) == ToyNetImageProcessor(
        image_processor_type="ToyNetImageProcessor"
    )
    with pytest.raises(
        TypeError, match=r"ToyNetImageProcessor has no field 'do_flip'; its fields are \[.*'do_reverse_channels'"
    ):
        processor.replace(do_flip=True)
    with pytest.raises(ConfigError, match=r"do_reverse_channels=1 must be true or false"):
        AutoImageProcessor.from_pretrained(directory, do_reverse_channels=1)

    # No preprocessor_config.json at all: as in transformers, an error (the checkpoint's preprocessing is unknown).
    (directory / "preprocessor_config.json").unlink()
    where = re.escape(str(directory.resolve()))
    with pytest.raises(CheckpointError, match=f"^preprocessor_config.json not found in checkpoint directory {where}$"):
        AutoImageProcessor.from_pretrained(directory)
    assert checkpoint_image_processor(directory) is None

    # An unknown type lists core's families and the processors installed plugins add.
    with pytest.raises(ConfigError) as caught:
        AutoImageProcessor.from_dict({"image_processor_type": "DeiTImageProcessor"})
    assert "ToyNetImageProcessor (backbones-toynet)" in _plugin_processors_text()
    assert str(caught.value) == (
        f"image_processor_type 'DeiTImageProcessor' is not supported; backbones implements {CORE_FAMILIES_TEXT}; "
        f"installed plugins add {_plugin_processors_text()} (preprocess with that transformers class, or build an "
        "ImageProcessor with the same steps)"
    )


# -- dependencies -----------------------------------------------------------------------------------


def test_importing_the_module_needs_neither_torch_nor_pillow() -> None:
    code = (
        "import sys\n"
        "sys.modules['PIL'] = None\n"
        "import backbones._image as image\n"
        "assert 'torch' not in sys.modules\n"
        "try:\n"
        "    image.ImageProcessor()([])\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == (
        "BackboneError image preprocessing needs Pillow and NumPy: pip install 'backbones-core[image]'"
    )
