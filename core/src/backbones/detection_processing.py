"""Image processors of DETR-style detectors, shared by the plugins whose checkpoints name them.

Detector checkpoints name their detector's processor in ``preprocessor_config.json``, and one detector
processor serves several backbones: RT-DETR's ResNet-vd and D-FINE/DEIM's HGNetV2 checkpoints both write
``RTDetrImageProcessor``; LW-DETR's and the DETR family's write ``DeformableDetrImageProcessor``. So these
are processor families of core (a plugin declares ``image_processor="RTDetrImageProcessor"`` without
implementing it), written as :class:`~backbones.ImageProcessor` subclasses because they add a step to the
pipeline: padding the images of a batch to one size, with a ``pixel_mask``.

Only the image path is implemented: annotations (``format``, ``do_convert_annotations``) are a detector's
concern; those fields are accepted and kept so that the file round-trips.

A plugin's own detector processor derives from these (RF-DETR's, for instance, is Deformable DETR's with
another resize).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ._errors import ConfigError
from ._image import ImageProcessor, ProcessedImages, _pack

__all__ = ["DeformableDetrImageProcessor", "RTDetrImageProcessor"]

_NOT_STACKABLE_HINT = "set do_pad to true, or pass return_tensors=None for a list"


def _check_pad_size(pad_size: Any) -> None:
    if pad_size is not None and (
        not isinstance(pad_size, dict)
        or set(pad_size) != {"height", "width"}
        or not all(isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in pad_size.values())
    ):
        raise ConfigError(
            f"pad_size={pad_size!r} must be {{'height': H, 'width': W}} with positive ints, or null to pad to the "
            "largest image of each batch"
        )


@dataclasses.dataclass(frozen=True)
class _DetectorProcessor(ImageProcessor):
    """The fields and checks DETR-style detector processors share: optional padding and annotation settings.

    Args:
        do_pad: Pad each image with zeros at the bottom and right.
        pad_size: ``{"height": H, "width": W}`` to pad to, or ``None``.
        format: The annotation format of the checkpoint (kept, unused: no annotations here).
        do_convert_annotations: Whether the detector normalises box annotations (kept, unused).
    """

    do_convert_rgb: bool = False
    default_to_square: bool = False
    do_pad: bool = False
    pad_size: dict[str, int] | None = None
    format: str = "coco_detection"
    do_convert_annotations: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.do_pad, bool):
            raise ConfigError(f"do_pad={self.do_pad!r} must be true or false")
        _check_pad_size(self.pad_size)


@dataclasses.dataclass(frozen=True)
class RTDetrImageProcessor(_DetectorProcessor):
    """RT-DETR's processor: resize to a fixed size (640x640 bilinear), scale to [0, 1], optionally pad.

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

    size: dict[str, int] | None = dataclasses.field(default_factory=lambda: {"height": 640, "width": 640})
    do_normalize: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.do_resize and (self.size is None or set(self.size) != {"height", "width"}):
            raise ConfigError(
                f"size={self.size!r}: RTDetrImageProcessor resizes to a fixed size only; give "
                '{"height": H, "width": W} (the hub checkpoints use {"height": 640, "width": 640})'
            )
        if self.do_pad:
            if not self.do_resize:
                raise ConfigError(
                    "do_pad=true without do_resize pads each image to the largest of its batch, which is not "
                    "supported; resize to a fixed size, or give pad_size"
                )
            assert self.size is not None
            if self.pad_size is not None and (
                self.pad_size["height"] < self.size["height"] or self.pad_size["width"] < self.size["width"]
            ):
                raise ConfigError(f"pad_size={self.pad_size!r} must be at least as large as size={self.size!r}")

    def postprocess(self, pixels: Any) -> Any:
        if not self.do_pad or self.pad_size is None:
            return pixels
        _, height, width = pixels.shape
        return np.pad(pixels, ((0, 0), (0, self.pad_size["height"] - height), (0, self.pad_size["width"] - width)))


@dataclasses.dataclass(frozen=True)
class DeformableDetrImageProcessor(_DetectorProcessor):
    """Deformable DETR's processor: resize, rescale, normalise, then pad the batch to one size with a mask.

    The defaults are transformers' ``DeformableDetrImageProcessor`` defaults (what a ``preprocessor_config.json``
    leaves out): no RGB conversion, the shortest edge resized to 800 with the longest at most 1333
    (bilinear), scale by 1/255, the ImageNet mean and std, padding on. An int ``size`` means
    ``{"shortest_edge": size, "longest_edge": 1333}``, as in transformers.

    The output is ``{"pixel_values": ..., "pixel_mask": ...}``; the mask is ``(batch, height, width)`` int64,
    1 on image pixels and 0 on padding. The backbone takes ``pixel_values`` only; the mask tells a detector
    which pixels are padding.

    Args:
        do_pad: Pad each image with zeros at the bottom and right, to ``pad_size`` or else to the largest
            height and width of the batch, and return the ``pixel_mask``.
        pad_size: ``{"height": H, "width": W}``, or ``None`` for the largest image of each batch.
        format: The annotation format of the checkpoint (kept, unused: no annotations here).
        do_convert_annotations: Whether the detector normalises box annotations (kept, unused).
    """

    size: dict[str, int] | None = dataclasses.field(
        default_factory=lambda: {"shortest_edge": 800, "longest_edge": 1333}
    )
    do_pad: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.size, int) and not isinstance(self.size, bool):
            object.__setattr__(self, "size", {"shortest_edge": self.size, "longest_edge": 1333})
        super().__post_init__()

    def batch_outputs(self, arrays: list[Any], return_tensors: str | None) -> ProcessedImages:
        """``pixel_values``, padded (see :meth:`backbones.ImageProcessor.batch_outputs`), and with ``do_pad`` the
        ``pixel_mask``: ``{"pixel_values": ..., "pixel_mask": ...}``, as tensors, arrays or lists.

        Raises:
            ValueError: An image is larger than ``pad_size``, or (without padding) the batch cannot be stacked.
        """
        if not self.do_pad:
            return ProcessedImages(pixel_values=_pack(arrays, return_tensors, hint=_NOT_STACKABLE_HINT))
        if self.pad_size is not None:
            height, width = self.pad_size["height"], self.pad_size["width"]
        else:
            height = max(array.shape[1] for array in arrays)
            width = max(array.shape[2] for array in arrays)
        masks = []
        for index, array in enumerate(arrays):
            rows, cols = array.shape[1:]
            if rows > height or cols > width:
                raise ValueError(
                    f"image {index} is {rows}x{cols} after resizing, larger than pad_size={self.pad_size}; "
                    "raise pad_size or resize to at most that size"
                )
            arrays[index] = np.pad(array, ((0, 0), (0, height - rows), (0, width - cols)))
            mask = np.zeros((height, width), dtype=np.int64)
            mask[:rows, :cols] = 1
            masks.append(mask)
        return ProcessedImages(
            pixel_values=_pack(arrays, return_tensors, hint=_NOT_STACKABLE_HINT),
            pixel_mask=_pack(masks, return_tensors, hint=_NOT_STACKABLE_HINT),
        )
