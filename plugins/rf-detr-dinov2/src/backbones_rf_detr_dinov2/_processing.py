"""RF-DETR's image processor (``RfDetrImageProcessor`` in the ``preprocessor_config.json`` of RF-DETR checkpoints).

It is Deformable DETR's (core's :class:`~backbones.detection_processing.DeformableDetrImageProcessor`: resize
keeping the aspect ratio, normalise with the ImageNet mean and std, pad the batch with a ``pixel_mask``) with
two differences that transformers' class has, which only exists on the torchvision backend: it scales to
[0, 1] *before* resizing, and it resizes with bilinear interpolation *without* antialiasing (the output
pixel reads the four nearest input pixels, also when shrinking).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from backbones import ConfigError
from backbones.detection_processing import DeformableDetrImageProcessor

__all__ = ["RfDetrImageProcessor"]

_BILINEAR = 2  # PIL.Image.Resampling.BILINEAR, the only filter transformers' class is used with


def _source_positions(length: int, target: int) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float32]]:
    """For each output index along an axis, the two input indices it reads and the weight of the second
    (half-pixel centres, as ``torch.nn.functional.interpolate(..., align_corners=False)``, in float32 as
    torch computes them for float32 images)."""
    scale = np.float32(length / target)
    position = (np.arange(target, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    position = np.maximum(position, np.float32(0.0))
    low = np.minimum(position.astype(np.intp), length - 1)
    high = np.minimum(low + 1, length - 1)
    return low, high, (position - low.astype(np.float32)).astype(np.float32)


def bilinear_without_antialias(pixels: NDArray[Any], height: int, width: int) -> NDArray[np.float32]:
    """Resize a ``(height, width, channels)`` float image with plain bilinear interpolation (no antialiasing)."""
    image = pixels.astype(np.float32, copy=False)
    rows_low, rows_high, row_weight = _source_positions(image.shape[0], height)
    cols_low, cols_high, col_weight = _source_positions(image.shape[1], width)
    row_high_weight, col_high_weight = row_weight[:, None, None], col_weight[None, :, None]
    row_low_weight, col_low_weight = np.float32(1) - row_high_weight, np.float32(1) - col_high_weight
    top = image[rows_low][:, cols_low] * col_low_weight + image[rows_low][:, cols_high] * col_high_weight
    bottom = image[rows_high][:, cols_low] * col_low_weight + image[rows_high][:, cols_high] * col_high_weight
    return (top * row_low_weight + bottom * row_high_weight).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class RfDetrImageProcessor(DeformableDetrImageProcessor):
    """Deformable DETR's processor, scaling before a bilinear resize without antialiasing, as RF-DETR's does.

    The defaults are transformers' ``RfDetrImageProcessor`` defaults: the shortest edge resized to 800 with
    the longest at most 1333, scale by 1/255, the ImageNet mean and std, padding on (with a ``pixel_mask``).
    """

    rescale_before_resize: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.do_resize and self.resample != _BILINEAR:
            raise ConfigError(
                f"resample={self.resample!r}: RfDetrImageProcessor resizes with bilinear interpolation only "
                f"(resample={_BILINEAR}), as transformers' class does"
            )

    def resize_image(self, pixels: NDArray[Any], height: int, width: int) -> NDArray[Any]:
        return bilinear_without_antialias(pixels, height, width)
