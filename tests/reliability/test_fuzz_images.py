"""Hostile images through AutoImageProcessor: every Pillow mode, tiny sizes, empty images, truncated and corrupt
files and decompression bombs give a correct result or the project's own error; EXIF rotation is handled as
transformers handles it."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from backbones import AutoImageProcessor, InputError

MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F"]
# Each family at a 16-pixel output, with the fields transformers' own class takes for it. BiT converts every
# image to RGB first (do_convert_rgb); the others take the image's own channels.
FAMILIES: dict[str, dict[str, Any]] = {
    "ViTImageProcessor": {"size": {"height": 16, "width": 16}},
    "BeitImageProcessor": {"size": {"height": 16, "width": 16}, "crop_size": {"height": 16, "width": 16}},
    "BitImageProcessor": {"size": {"shortest_edge": 16}, "crop_size": {"height": 16, "width": 16}},
    "ConvNextImageProcessor": {"size": {"shortest_edge": 16}, "crop_pct": 0.875},
}


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
        image = Image.fromarray(values.astype(dtype))  # Pillow picks I, I;16 or F from the dtype
        assert image.mode == mode
        return image
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


@pytest.mark.filterwarnings("ignore:image 0 is a float image with values in")  # mode F: the warning is ours
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    family=st.sampled_from(sorted(FAMILIES)),
    mode=st.sampled_from(MODES),
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    transparency=st.booleans(),
)
def test_every_pillow_mode_gives_a_correct_result_or_our_error(
    family: str, mode: str, width: int, height: int, seed: int, transparency: bool
) -> None:
    """A result equals transformers' where transformers reads the image the same way (RGB, or any mode
    converted to RGB first); otherwise it is the RGB reading (palette, CMYK, YCbCr through Pillow's
    conversion). A refusal is an InputError naming the image, never an error from inside NumPy or Pillow."""
    image = _image(mode, width, height, seed, transparency)
    fields = FAMILIES[family]
    processor = AutoImageProcessor.from_dict({"image_processor_type": family, **fields})
    try:
        ours = processor(image, return_tensors="np")["pixel_values"]
    except InputError as error:
        assert str(error).startswith("image 0 "), str(error)
        assert family != "BitImageProcessor", f"an RGB-converting processor refused a {mode} image: {error}"
        return
    assert ours.shape == (1, 3, 16, 16) and ours.dtype == np.float32 and np.isfinite(ours).all()
    if family == "BitImageProcessor" or mode == "RGB":
        oracle = getattr(transformers, family.replace("ImageProcessor", "ImageProcessorPil"))(**fields)
        np.testing.assert_allclose(ours, oracle(image, return_tensors="np")["pixel_values"], atol=1e-5)


def _png_declaring(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header claims ``width`` x ``height`` (valid CRC): what a decompression bomb's
    header looks like before a single pixel is decoded."""
    data = bytearray(_png(1, 1))
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    chunk = bytes(data[ihdr - 4 : ihdr + 13])
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(chunk))
    return bytes(data)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None
    side = int((1.5 * limit) ** 0.5)  # over the limit, under Pillow's own refusal at twice the limit
    with pytest.warns(Image.DecompressionBombWarning):
        image = Image.open(io.BytesIO(_png_declaring(side, side)))
    assert image.size == (side, side)
    processor = AutoImageProcessor.from_dict({"image_processor_type": "ViTImageProcessor"})
    message = rf"image 0 is {side}x{side} pixels, more than Pillow's limit of {limit} \(PIL.Image.MAX_IMAGE_PIXELS"
    with pytest.raises(InputError, match=message):
        processor(image)
    with pytest.raises(Image.DecompressionBombError):  # twice the limit: Pillow itself refuses to open it
        Image.open(io.BytesIO(_png_declaring(2 * side, 2 * side)))
