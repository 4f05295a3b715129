"""Hostile images through AutoImageProcessor: empty images, truncated and corrupt files are the project's own
errors; EXIF rotation is handled as transformers handles it."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import transformers
from PIL import Image

from backbones import AutoImageProcessor, InputError

FAMILIES = ["ViTImageProcessor", "ConvNextImageProcessor", "BitImageProcessor", "BeitImageProcessor"]
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F"]
SMALL = {"size": {"height": 16, "width": 16}, "crop_size": {"height": 16, "width": 16}}


def _image(mode: str, width: int, height: int, seed: int, transparency: bool) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    if mode in ("P", "PA"):
        image = rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        if mode == "PA":
            image = image.convert("PA")
        elif transparency:
            image.info["transparency"] = 0
        return image
    if mode in ("I", "I;16", "F"):
        scale = {"I": 2**20, "I;16": 2**16 - 1, "F": 1.0}[mode]
        values = rng.random((height, width)) * scale
        dtype = {"I": np.int32, "I;16": np.uint16, "F": np.float32}[mode]
        return Image.fromarray(values.astype(dtype), mode if mode != "I;16" else "I;16")
    return rgba.convert(mode)


@pytest.mark.parametrize("size", [(0, 5), (5, 0)])
def test_empty_image_is_named(size: tuple[int, int]) -> None:
    processor = AutoImageProcessor.from_dict({"image_processor_type": "ViTImageProcessor"})
    with pytest.raises(InputError, match=rf"image 0 is empty: it is {size[0]}x{size[1]} pixels"):
        processor(Image.new("RGB", size))


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("cut", [0.6])
def test_truncated_file_is_named(cut: int) -> None:
    data = _png(32, 24)
    image = Image.open(io.BytesIO(data[: int(len(data) * cut)]))
    processor = AutoImageProcessor.from_dict({"image_processor_type": "BitImageProcessor"})
    with pytest.raises(InputError, match=r"image 0 \(PNG, RGB, 32x24\) cannot be decoded: .*truncated or corrupt"):
        processor(image)


def test_corrupt_bytes_are_named() -> None:
    data = bytearray(_png(32, 24))
    data[60:120] = bytes(range(60))  # inside the compressed pixel data
    image = Image.open(io.BytesIO(bytes(data)))
    processor = AutoImageProcessor.from_dict({"image_processor_type": "ViTImageProcessor"})
    with pytest.raises(InputError, match=r"image 0 \(PNG, RGB, 32x24\) cannot be decoded"):
        processor(image)


def test_exif_rotation_is_not_applied_as_in_transformers() -> None:
    """Like transformers' processors, EXIF orientation is left to the caller (PIL.ImageOps.exif_transpose)."""
    rng = np.random.default_rng(3)
    source = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    exif = source.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    source.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    image = Image.open(io.BytesIO(buffer.getvalue()))
    assert image.getexif()[0x0112] == 6
    fields: dict[str, Any] = {"size": {"height": 16, "width": 24}}
    ours = AutoImageProcessor.from_dict({"image_processor_type": "ViTImageProcessor", **fields})(
        image, return_tensors="np"
    )
    oracle = transformers.ViTImageProcessorPil(**fields)(image, return_tensors="np")
    np.testing.assert_allclose(ours["pixel_values"], oracle["pixel_values"], atol=1e-5)
