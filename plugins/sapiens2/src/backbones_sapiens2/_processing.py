"""Sapiens2's image processor (``Sapiens2ImageProcessor`` in the ``preprocessor_config.json`` of the
facebook/sapiens2-* checkpoints): resize to 1024x768 (height x width), scale to [0, 1], normalise with the ImageNet
mean and standard deviation; with ``do_pad`` (the normal, albedo and pointmap checkpoints) the resize keeps the
aspect ratio and the image is padded with zeros to 1024x768.

backbones-core has no family with these defaults, so this plugin declares the class (``image_processor_classes``);
core's pipeline does the work and this class adds the aspect-preserving padded resize. transformers' class (only a
torchvision one exists) resizes 8-bit images with torchvision, core with Pillow: the two round a few downscaled
pixels to neighbouring 8-bit levels (one level, 1/255 before normalising, in a few percent of the pixels at most).

Not implemented here, because they are task-level inputs rather than image preprocessing: the person ``boxes``
of the pose checkpoints (an affine crop per person), segmentation maps and keypoint targets.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from backbones import ConfigError, ImageProcessor

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["Sapiens2ImageProcessor"]


@dataclasses.dataclass(frozen=True)
class Sapiens2ImageProcessor(ImageProcessor):
    """transformers' ``Sapiens2ImageProcessor`` with its class defaults.

    The defaults are the values of keys a ``preprocessor_config.json`` leaves out: no RGB conversion, 1024x768
    with bilinear filtering, scale by 1/255, ImageNet mean and standard deviation, no padding. Every field but
    ``do_pad`` is :class:`backbones.ImageProcessor`'s.

    Args:
        do_pad: Resize so the image fits inside ``size`` keeping its aspect ratio (each side scaled by the smaller
            of the two ratios, rounded down), then pad it with zeros, centred, to ``size`` (an odd leftover row or
            column goes after the image, as torchvision pads). Needs ``size={"height": H, "width": W}``.
    """

    do_convert_rgb: bool = False
    size: dict[str, int] | None = dataclasses.field(default_factory=lambda: {"height": 1024, "width": 768})
    do_pad: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.do_pad, bool):
            raise ConfigError(f"do_pad={self.do_pad!r} must be true or false")
        if self.do_pad and self.do_resize and (self.size is None or "height" not in self.size):
            raise ConfigError(
                f"do_pad (resize into size keeping the aspect ratio, then pad) needs size={{'height': ..., "
                f"'width': ...}}, got size={self.size!r}"
            )

    def _describe_resize(self, size: dict[str, int]) -> str:
        if not self.do_pad:
            return super()._describe_resize(size)
        described = super()._describe_resize(size).replace("resize to", "resize into", 1)
        return f"{described} keeping the aspect ratio, pad with zeros to {size['height']}x{size['width']}"

    def _resize(self, pixels: NDArray[Any]) -> NDArray[Any]:
        if not self.do_pad:
            return super()._resize(pixels)
        import numpy as np

        assert self.size is not None
        target_height, target_width = self.size["height"], self.size["width"]
        height, width = pixels.shape[:2]
        scale = min(target_height / height, target_width / width)
        fitted = self.replace(size={"height": int(height * scale), "width": int(width * scale)}, do_pad=False)
        resized = fitted._resize(pixels)
        canvas = np.zeros((target_height, target_width, resized.shape[-1]), dtype=resized.dtype)
        top = (target_height - resized.shape[0]) // 2
        left = (target_width - resized.shape[1]) // 2
        canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
        return canvas
