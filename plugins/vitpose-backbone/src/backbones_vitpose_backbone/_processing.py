"""ViTPose's image processor (``VitPoseImageProcessor`` in the ``preprocessor_config.json`` of the
usyd-community/vitpose-* checkpoints): top-down crops, one per person box, then rescale and normalise.

Each box ``(top_left_x, top_left_y, width, height)`` (COCO format) is widened or heightened to the crop's aspect
ratio, padded by 25%, and the image is warped onto a ``size`` crop with bilinear sampling (pixels from outside
the image are 0): the "unbiased" affine transform of Huang et al., "The Devil is in the Details" (CVPR 2020),
which maps the box's extent onto ``size - 1`` pixels. Without boxes (or with ``do_affine_transform`` false) the
images are only rescaled and normalised, as in transformers.

Core's pipeline does the RGB conversion, rescaling and normalisation; this processor adds the crops.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import NDArray

from backbones import ConfigError, ImageProcessor

__all__ = ["VitPoseImageProcessor", "box_to_center_and_scale", "warp_box"]

_PADDING = 1.25


def box_to_center_and_scale(
    box: Any, crop_width: int, crop_height: int, normalize_factor: float = 200.0
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The centre ``(x, y)`` and scale ``(w, h) / normalize_factor`` of a COCO box, fitted to the crop's aspect
    ratio and padded by 25%.

    Args:
        box: ``(top_left_x, top_left_y, width, height)``.
        crop_width: Width of the crop.
        crop_height: Height of the crop.
        normalize_factor: The unit of the scale (200 pixels, as in the original code).
    """
    x, y, width, height = (float(value) for value in box[:4])
    aspect = crop_width / crop_height
    center = np.array([x + width * 0.5, y + height * 0.5], dtype=np.float32)
    if width > aspect * height:
        height = width / aspect
    elif width < aspect * height:
        width = height * aspect
    scale = np.array([width / normalize_factor, height / normalize_factor], dtype=np.float32) * _PADDING
    return center, scale


def warp_box(
    image: NDArray[Any],
    center: NDArray[np.float32],
    scale: NDArray[np.float32],
    crop_height: int,
    crop_width: int,
    normalize_factor: float = 200.0,
    *,
    to_bytes: bool = False,
) -> NDArray[np.float32]:
    """The ``(channels, crop_height, crop_width)`` crop of a ``(channels, H, W)`` image around a box.

    With ``to_bytes`` the crop is rounded to whole 8-bit values (halves up), as warping an 8-bit image in
    place does in the reference.

    Output pixel ``(row, col)`` samples the image bilinearly at ``x = col * w / (crop_width - 1) + cx - w / 2``
    and ``y = row * h / (crop_height - 1) + cy - h / 2`` (``(w, h) = scale * normalize_factor``); samples outside
    ``[0, W - 1] x [0, H - 1]`` are 0.
    """
    # The crop-from-image matrix is built in float32 and inverted in float64, as the reference does: the
    # sample positions then agree to the last bit, which matters where 8-bit rounding sits on a half.
    box = (scale * np.float32(normalize_factor)).astype(np.float32)
    forward = np.zeros((3, 3), dtype=np.float32)
    for axis, pixels_out in ((0, crop_width), (1, crop_height)):
        factor = (pixels_out - 1.0) / box[axis]
        forward[axis, axis] = factor
        forward[axis, 2] = factor * (-center[axis] + 0.5 * box[axis])
    forward[2, 2] = 1
    inverse = np.linalg.inv(forward.astype(np.float64))
    cols = inverse[0, 0] * np.arange(crop_width, dtype=np.float64) + inverse[0, 2]
    rows = inverse[1, 1] * np.arange(crop_height, dtype=np.float64) + inverse[1, 2]
    height, width = image.shape[1:]
    row_inside = (rows >= 0) & (rows <= height - 1)
    col_inside = (cols >= 0) & (cols <= width - 1)
    top = np.clip(np.floor(rows), 0, height - 1).astype(np.int64)
    left = np.clip(np.floor(cols), 0, width - 1).astype(np.int64)
    bottom, right = np.minimum(top + 1, height - 1), np.minimum(left + 1, width - 1)
    down = np.clip(rows - top, 0, 1)[:, None]
    across = np.clip(cols - left, 0, 1)[None, :]
    pixels = image.astype(np.float64)
    upper = pixels[:, top][:, :, left] * (1 - across) + pixels[:, top][:, :, right] * across
    lower = pixels[:, bottom][:, :, left] * (1 - across) + pixels[:, bottom][:, :, right] * across
    crop = upper * (1 - down) + lower * down
    crop *= (row_inside[:, None] & col_inside[None, :])[None]
    if to_bytes:
        crop = np.clip(np.floor(crop + 0.5), 0, 255)
    return crop.astype(np.float32)


def _eight_bit(images: Any) -> bool:
    """Whether every image is 8-bit (a PIL image of 8-bit bands, or a uint8 array or tensor)."""
    items = images if isinstance(images, (list, tuple)) else [images]
    for image in items:
        mode = getattr(image, "mode", None)
        if isinstance(mode, str):
            if mode not in ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LA", "RGBX", "HSV", "LAB"):
                return False
        elif "uint8" not in str(getattr(image, "dtype", "")):
            return False
    return True


@dataclasses.dataclass(frozen=True)
class VitPoseImageProcessor(ImageProcessor):
    """Crop each person box to ``size``, rescale, normalise: transformers' ``VitPoseImageProcessor``.

    The defaults are the values of keys a ``preprocessor_config.json`` leaves out: 256x192 crops, scale by
    1/255, ImageNet mean and standard deviation, no RGB conversion and no resize (the crop sets the size).

    Args:
        do_affine_transform: Crop the boxes (else images are only rescaled and normalised).
        normalize_factor: Unit of the box scale (200 pixels).

    Call it as ``processor(images, boxes=[[box, ...], ...], return_tensors="pt")``: one list of COCO boxes per
    image; the result holds one crop per box, image by image.
    """

    do_convert_rgb: bool = False
    do_resize: bool = False
    size: dict[str, int] | None = dataclasses.field(default_factory=lambda: {"height": 256, "width": 192})
    do_affine_transform: bool = True
    normalize_factor: float = 200.0

    def __call__(  # type: ignore[override]  # boxes is second, as in transformers
        self,
        images: Any,
        boxes: Any = None,
        return_tensors: Literal["pt", "np"] | None = None,
        *,
        input_data_format: Literal["channels_first", "channels_last"] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Preprocess images, one crop per box (see the class docstring and :meth:`ImageProcessor.__call__`).

        Raises:
            ConfigError: ``boxes`` does not hold one list of 4-number boxes per image, or ``size`` is not a
                ``{"height", "width"}`` pair.
        """
        processor = cast(VitPoseImageProcessor, self.replace(**overrides)) if overrides else self
        if boxes is None or not processor.do_affine_transform:
            return ImageProcessor.__call__(processor, images, return_tensors, input_data_format=input_data_format)
        size = processor.size or {}
        if set(size) != {"height", "width"}:
            raise ConfigError(f"size={processor.size!r} must be {{'height': H, 'width': W}}: the size of each crop")
        # RGB conversion only (if asked): the crops are rescaled and normalised below.
        raw = ImageProcessor.__call__(
            processor.replace(do_resize=False, do_center_crop=False, do_rescale=False, do_normalize=False),
            images,
            None,
            input_data_format=input_data_format,
        ).pixel_values
        if len(boxes) != len(raw):
            raise ConfigError(
                f"boxes must hold one list of boxes per image: got {len(boxes)} lists for {len(raw)} images"
            )
        crops = []
        to_bytes = _eight_bit(images)
        for index, (image, image_boxes) in enumerate(zip(raw, boxes)):
            for box in image_boxes:
                if len(box) < 4:
                    raise ConfigError(
                        f"boxes[{index}] holds {list(box)}; a box is (top_left_x, top_left_y, width, height)"
                    )
                center, scale = box_to_center_and_scale(
                    box, size["width"], size["height"], normalize_factor=processor.normalize_factor
                )
                height, width, factor = size["height"], size["width"], processor.normalize_factor
                crops.append(warp_box(image, center, scale, height, width, factor, to_bytes=to_bytes))
        finish = processor.replace(do_resize=False, do_center_crop=False, do_convert_rgb=False)
        return ImageProcessor.__call__(finish, crops, return_tensors, input_data_format="channels_first")
