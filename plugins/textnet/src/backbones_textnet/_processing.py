"""TextNet's image processor (``TextNetImageProcessor`` in the ``preprocessor_config.json`` of the
czczup/textnet-* checkpoints): RGB, resize the shortest edge to 640 (bilinear) and round each side up to a
multiple of ``size_divisor`` (32), scale to [0, 1], normalise with the ImageNet mean and standard deviation.

backbones-core has no family that rounds the resized sides up, so this plugin declares the class
(``image_processor_classes``); core's pipeline does the rest.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from numpy.typing import NDArray

from backbones import ConfigError, ImageProcessor

__all__ = ["TextNetImageProcessor"]

_BILINEAR = 2


@dataclasses.dataclass(frozen=True)
class TextNetImageProcessor(ImageProcessor):
    """transformers' ``TextNetImageProcessor`` with its class defaults.

    The defaults are the values of keys a ``preprocessor_config.json`` leaves out: RGB, shortest edge to 640
    (bilinear), each side then rounded up to a multiple of 32 (the image is stretched to it), no centre crop,
    scale by 1/255, ImageNet mean and standard deviation. Every field but ``size_divisor`` is
    :class:`backbones.ImageProcessor`'s.

    Args:
        size_divisor: The resized height and width are rounded up to multiples of it, so every stage's map
            tiles the image exactly (TextNet's deepest stride is 32).

    Raises:
        ConfigError: ``size`` is not ``{"shortest_edge": S}`` while resizing is on, or ``size_divisor`` is not
            a positive int.
    """

    do_convert_rgb: bool = True
    size: dict[str, int] | None = dataclasses.field(default_factory=lambda: {"shortest_edge": 640})
    default_to_square: bool = False
    resample: int = _BILINEAR
    crop_size: dict[str, int] | None = dataclasses.field(default_factory=lambda: {"height": 224, "width": 224})
    size_divisor: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        value = self.size_divisor
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"size_divisor={value!r} must be a positive int")
        if self.do_resize and self.size is not None and set(self.size) != {"shortest_edge"}:
            raise ConfigError(
                f"TextNetImageProcessor resizes the shortest edge only: size={self.size!r} must be "
                "{'shortest_edge': S} (or set do_resize to false)"
            )

    def resize_image(self, pixels: NDArray[Any], height: int, width: int) -> NDArray[Any]:
        """Resize to ``height`` x ``width``, each first rounded up to a multiple of ``size_divisor``."""
        step = self.size_divisor
        return super().resize_image(pixels, math.ceil(height / step) * step, math.ceil(width / step) * step)

    def describe(self) -> str:
        """One line saying what the processor does."""
        text = super().describe()
        if self.do_resize and self.size_divisor > 1:
            text += f" (the resized sides rounded up to multiples of {self.size_divisor})"
        return text
