"""Deformable DETR's image processor (``DeformableDetrImageProcessor``, named in the ``preprocessor_config.json``
of LW-DETR checkpoints): resize keeping the aspect ratio (shortest edge 800, longest at most 1333) or to a
fixed size, scale to [0, 1], normalise with the ImageNet mean and std, then pad the bottom and right of
every image with zeros to the largest of the batch (or to ``pad_size``) and return a ``pixel_mask`` (1 on
image pixels, 0 on padding).

backbones-core has no such processor family, so this plugin implements it (``image_processor_classes``).
Only the image path is implemented: annotations (``format``, ``do_convert_annotations``) are a detector's
concern, and the fields are accepted and kept so the file round-trips.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np

from backbones import ConfigError, ImageProcessor

__all__ = ["DeformableDetrImageProcessor"]


@dataclasses.dataclass(frozen=True)
class DeformableDetrImageProcessor(ImageProcessor):
    """Resize, rescale, normalise, then pad the batch to one size and return its ``pixel_mask``.

    The defaults are transformers' ``DeformableDetrImageProcessor`` defaults (what a ``preprocessor_config.json``
    leaves out): no RGB conversion, the shortest edge resized to 800 with the longest at most 1333
    (bilinear), scale by 1/255, the ImageNet mean and std, padding on. An int ``size`` means
    ``{"shortest_edge": size, "longest_edge": 1333}``, as in transformers.

    The output is ``{"pixel_values": ..., "pixel_mask": ...}``; the mask is ``(batch, height, width)`` int64.
    The backbone takes ``pixel_values`` only; the mask tells a detector which pixels are padding.

    Args:
        do_pad: Pad each image with zeros at the bottom and right, to ``pad_size`` or else to the largest
            height and width of the batch, and return the ``pixel_mask``.
        pad_size: ``{"height": H, "width": W}``, or ``None`` for the largest image of each batch.
        format: The annotation format of the checkpoint (kept, unused: no annotations here).
        do_convert_annotations: Whether the detector normalises box annotations (kept, unused).
    """

    do_convert_rgb: bool = False
    size: dict[str, int] | None = dataclasses.field(
        default_factory=lambda: {"shortest_edge": 800, "longest_edge": 1333}
    )
    default_to_square: bool = False
    do_pad: bool = True
    pad_size: dict[str, int] | None = None
    format: str = "coco_detection"
    do_convert_annotations: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.size, int) and not isinstance(self.size, bool):
            object.__setattr__(self, "size", {"shortest_edge": self.size, "longest_edge": 1333})
        super().__post_init__()
        if not isinstance(self.do_pad, bool):
            raise ConfigError(f"do_pad={self.do_pad!r} must be true or false")
        if self.pad_size is not None and (
            not isinstance(self.pad_size, dict)
            or set(self.pad_size) != {"height", "width"}
            or not all(isinstance(value, int) and value > 0 for value in self.pad_size.values())
        ):
            raise ConfigError(
                f"pad_size={self.pad_size!r} must be {{'height': H, 'width': W}} with positive ints, or null to "
                "pad to the largest image of each batch"
            )

    def __call__(
        self,
        images: Any,
        return_tensors: Literal["pt", "np"] | None = None,
        *,
        input_data_format: Literal["channels_first", "channels_last"] | None = None,
        **overrides: Any,
    ) -> Any:
        """Preprocess one image or a batch (see :meth:`backbones.ImageProcessor.__call__`), then pad.

        Returns:
            ``{"pixel_values": ..., "pixel_mask": ...}`` (the mask only with ``do_pad``), as tensors,
            arrays or lists like ``pixel_values``.

        Raises:
            ValueError: An image is larger than ``pad_size``, or (without padding) the batch cannot be stacked.
        """
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors={return_tensors!r} must be 'pt', 'np' or None")
        processor = self.replace(**overrides) if overrides else self
        assert isinstance(processor, DeformableDetrImageProcessor)
        inputs = ImageProcessor.__call__(processor, images, None, input_data_format=input_data_format)
        arrays: list[Any] = inputs["pixel_values"]
        if processor.do_pad:
            if processor.pad_size is not None:
                height, width = processor.pad_size["height"], processor.pad_size["width"]
            else:
                height = max(array.shape[1] for array in arrays)
                width = max(array.shape[2] for array in arrays)
            masks = []
            for index, array in enumerate(arrays):
                rows, cols = array.shape[1:]
                if rows > height or cols > width:
                    raise ValueError(
                        f"image {index} is {rows}x{cols} after resizing, larger than pad_size={processor.pad_size}; "
                        "raise pad_size or resize to at most that size"
                    )
                arrays[index] = np.pad(array, ((0, 0), (0, height - rows), (0, width - cols)))
                mask = np.zeros((height, width), dtype=np.int64)
                mask[:rows, :cols] = 1
                masks.append(mask)
            inputs["pixel_mask"] = _pack(masks, return_tensors)
        inputs["pixel_values"] = _pack(arrays, return_tensors)
        return inputs


def _pack(arrays: list[Any], return_tensors: str | None) -> Any:
    if return_tensors is None:
        return arrays
    shapes = sorted({array.shape for array in arrays})
    if len(shapes) > 1:
        raise ValueError(
            f"cannot stack the images into one batch: they end up with different shapes {shapes}; set do_pad "
            "to true, or pass return_tensors=None for a list"
        )
    batch = np.stack(arrays)
    if return_tensors == "np":
        return batch
    import torch

    return torch.from_numpy(batch)
