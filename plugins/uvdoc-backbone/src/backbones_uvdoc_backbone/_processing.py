"""UVDoc's image processor (``UVDocImageProcessor`` in the ``preprocessor_config.json`` of the PaddlePaddle/UVDoc
checkpoints): scale to [0, 1], reverse the channels to BGR (PaddlePaddle's models were trained on OpenCV's BGR
images), then resize to 712x488 by bilinear interpolation with aligned corners (``F.interpolate(...,
align_corners=True)``, no antialiasing).

backbones-core has no family that resizes after scaling this way or ends in BGR, so this plugin declares the
class (``image_processor_classes``); core's pipeline does the rest. transformers has only a torchvision-backed
class for it; the results agree with it to float rounding.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from backbones import ConfigError, ImageProcessor

__all__ = ["UVDocImageProcessor"]

_BILINEAR = 2


def _aligned_corner_weights(source: int, target: int) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
    """For each output position along one axis: the two source positions and the weight of the second, with
    the first and last samples of both grids aligned (PyTorch's ``align_corners=True``).

    The positions are computed in float32, as PyTorch computes them for float32 images, so that the weights
    (and the results, to about 1e-6) are PyTorch's: in float64 they would differ by up to ~2e-5 at 712 pixels.
    """
    scale = np.float32(source - 1) / np.float32(target - 1) if target > 1 else np.float32(0.0)
    positions = np.arange(target, dtype=np.float32) * scale
    low = np.clip(np.floor(positions).astype(np.intp), 0, source - 1)
    high = np.minimum(low + 1, source - 1)
    return low, high, (positions - low.astype(np.float32)).astype(np.float64)


def resize_aligned_corners(pixels: NDArray[Any], height: int, width: int) -> NDArray[np.float32]:
    """Bilinear resize of a ``(height, width, channels)`` image with aligned corners and no antialiasing.

    Args:
        pixels: The image (any real dtype).
        height: Output height.
        width: Output width.

    Returns:
        The resized image as float32.
    """
    values = pixels.astype(np.float64)
    top, bottom, row_weight = _aligned_corner_weights(values.shape[0], height)
    left, right, column_weight = _aligned_corner_weights(values.shape[1], width)
    rows = values[top] * (1 - row_weight)[:, None, None] + values[bottom] * row_weight[:, None, None]
    resized = rows[:, left] * (1 - column_weight)[None, :, None] + rows[:, right] * column_weight[None, :, None]
    return resized.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class UVDocImageProcessor(ImageProcessor):
    """transformers' ``UVDocImageProcessor`` with its class defaults.

    The defaults are the values of keys a ``preprocessor_config.json`` leaves out: channels as given, scale by
    1/255, no normalisation, RGB to BGR, resize to 712x488 (bilinear, aligned corners, after scaling). The
    resize interpolates as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=True)`` whatever
    ``resample`` says, as transformers does. Every field is :class:`backbones.ImageProcessor`'s.

    transformers' class also returns the scaled images at their own size (``original_images``), which UVDoc's
    post-processing warps with the predicted grid; this processor returns ``pixel_values`` only.
    """

    rescale_before_resize: ClassVar[bool] = True

    do_convert_rgb: bool = False
    size: dict[str, int] | None = dataclasses.field(default_factory=lambda: {"height": 712, "width": 488})
    resample: int = _BILINEAR
    do_normalize: bool = False
    image_mean: float | tuple[float, ...] | None = None
    image_std: float | tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.do_resize and self.size is not None and set(self.size) != {"height", "width"}:
            raise ConfigError(
                f"UVDocImageProcessor resizes to a fixed size only: size={self.size!r} must be "
                "{'height': H, 'width': W} (or set do_resize to false)"
            )

    def resize_image(self, pixels: NDArray[Any], height: int, width: int) -> NDArray[Any]:
        """Bilinear interpolation with aligned corners (see :func:`resize_aligned_corners`)."""
        return resize_aligned_corners(pixels, height, width)

    def postprocess(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """Reverse the channel order (RGB to BGR)."""
        return pixels[::-1]

    def describe(self) -> str:
        """One line saying what the processor does."""
        return super().describe().replace("(bilinear)", "(bilinear, aligned corners)") + ", RGB to BGR"
