"""PP-LCNet's image processor (``PPLCNetImageProcessor`` in the ``preprocessor_config.json`` of the
PaddlePaddle/PP-LCNet_* checkpoints): resize the shortest edge to ``resize_short`` (rounding each side to the
nearest pixel, then up to a multiple of ``size_divisor``), centre-crop, scale to [0, 1], normalise, and
reverse the channels to BGR (PaddlePaddle's models were trained on OpenCV's BGR images).

backbones-core has no family that rounds the resize this way or ends in BGR, so this plugin declares the
class (``image_processor_classes``); core's pipeline does the rest.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from backbones import ConfigError, ImageProcessor

__all__ = ["PPLCNetImageProcessor"]

_BILINEAR = 2


@dataclasses.dataclass(frozen=True)
class PPLCNetImageProcessor(ImageProcessor):
    """transformers' ``PPLCNetImageProcessor`` with its class defaults.

    The defaults are the values of keys a ``preprocessor_config.json`` leaves out: shortest edge to 256
    (bilinear), centre-crop 224x224, scale by 1/255, normalise with PaddleClas' mean and standard deviation
    (given in BGR order, applied to the RGB channels as transformers does), then RGB to BGR.

    Args:
        resize_short: Target of the shortest edge; each side becomes ``round(side * resize_short / shortest)``.
            ``None`` resizes to ``size`` instead.
        size_divisor: After that rounding, each side is rounded up to a multiple of it.
    """

    do_convert_rgb: bool = False
    size: dict[str, int] | None = dataclasses.field(default_factory=lambda: {"height": 256, "width": 256})
    resample: int = _BILINEAR
    do_center_crop: bool = True
    crop_size: dict[str, int] | None = dataclasses.field(default_factory=lambda: {"height": 224, "width": 224})
    image_mean: float | tuple[float, ...] | None = (0.406, 0.456, 0.485)
    image_std: float | tuple[float, ...] | None = (0.225, 0.224, 0.229)
    resize_short: int | None = 256
    size_divisor: int | None = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("resize_short", "size_divisor"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name}={value!r} must be a positive int or null")

    def _resize(self, pixels: NDArray[Any]) -> NDArray[Any]:
        if self.resize_short is None:
            return super()._resize(pixels)
        height, width = pixels.shape[:2]
        factor = self.resize_short / min(height, width)
        target = [round(height * factor), round(width * factor)]
        if self.size_divisor is not None:
            target = [math.ceil(side / self.size_divisor) * self.size_divisor for side in target]
        fixed = ImageProcessor(size={"height": target[0], "width": target[1]}, resample=self.resample)
        return ImageProcessor._resize(fixed, pixels)

    def postprocess(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """Reverse the channel order (RGB to BGR)."""
        return pixels[::-1]

    def describe(self) -> str:
        """One line saying what the processor does."""
        text = super().describe()
        if self.do_resize and self.resize_short is not None:
            method = "bilinear" if self.resample == _BILINEAR else f"filter {self.resample}"
            rule = f"resize the shortest edge to {self.resize_short} ({method}"
            if self.size_divisor not in (None, 1):
                rule += f", sides rounded up to multiples of {self.size_divisor}"
            start = text.index("resize")
            end = text.index(")", start) + 1
            text = text[:start] + rule + ")" + text[end:]
        return f"{text}, RGB to BGR"
