"""RT-DETR's image processor (``RTDetrImageProcessor`` in the ``preprocessor_config.json`` of RT-DETR and
D-FINE checkpoints): resize to a fixed 640x640 with bilinear filtering and scale to [0, 1], without
normalisation; optionally pad the bottom and right with zeros to ``pad_size``.

backbones-core has no such processor family, so this plugin implements it (``image_processor_classes``).
Only the image path is implemented: annotations (``format``, ``do_convert_annotations``) are a detector's
concern, and the fields are accepted and kept so the file round-trips.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from backbones import ConfigError, ImageProcessor

__all__ = ["RTDetrImageProcessor"]


@dataclasses.dataclass(frozen=True)
class RTDetrImageProcessor(ImageProcessor):
    """Resize to ``size`` (a fixed ``{"height", "width"}``), rescale, optionally normalise and pad.

    The defaults are transformers' ``RTDetrImageProcessor`` defaults (what a ``preprocessor_config.json``
    leaves out): no RGB conversion, 640x640 bilinear, scale by 1/255, no normalisation (its ImageNet mean
    and std apply only with ``do_normalize=true``), no padding.

    Args:
        do_pad: Pad each image with zeros at the bottom and right to ``pad_size``.
        pad_size: ``{"height": H, "width": W}``, needed with ``do_pad`` (padding to the largest image of a
            batch is a no-op after a fixed-size resize, and is not supported without one).
        format: The annotation format of the checkpoint (kept, unused: no annotations here).
        do_convert_annotations: Whether the detector normalises box annotations (kept, unused).
    """

    do_convert_rgb: bool = False
    size: dict[str, int] | None = dataclasses.field(default_factory=lambda: {"height": 640, "width": 640})
    default_to_square: bool = False
    do_normalize: bool = False
    do_pad: bool = False
    pad_size: dict[str, int] | None = None
    format: str = "coco_detection"
    do_convert_annotations: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.do_resize and (self.size is None or set(self.size) != {"height", "width"}):
            raise ConfigError(
                f"size={self.size!r}: RTDetrImageProcessor here resizes to a fixed size only; give "
                '{"height": H, "width": W} (the hub checkpoints use {"height": 640, "width": 640})'
            )
        if not isinstance(self.do_pad, bool):
            raise ConfigError(f"do_pad={self.do_pad!r} must be true or false")
        if self.do_pad:
            if not self.do_resize:
                raise ConfigError(
                    "do_pad=true without do_resize pads each image to the largest of its batch, which is not "
                    "supported; resize to a fixed size, or give pad_size"
                )
            if self.pad_size is not None and (
                set(self.pad_size) != {"height", "width"}
                or self.pad_size["height"] < self.size["height"]  # type: ignore[index]
                or self.pad_size["width"] < self.size["width"]  # type: ignore[index]
            ):
                raise ConfigError(
                    f"pad_size={self.pad_size!r} must be {{'height': H, 'width': W}} at least as large as size={self.size!r}"
                )

    def postprocess(self, pixels: Any) -> Any:
        if not self.do_pad or self.pad_size is None:
            return pixels
        _, height, width = pixels.shape
        return np.pad(pixels, ((0, 0), (0, self.pad_size["height"] - height), (0, self.pad_size["width"] - width)))
