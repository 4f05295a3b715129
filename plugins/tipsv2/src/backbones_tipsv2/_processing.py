"""TIPSv2's image processor (``Tipsv2ImageProcessor``, the type the google/tipsv2-* checkpoints'
``preprocessor_config.json`` names): RGB, resize to a fixed 448x448 with bilinear filtering, scale to [0, 1],
no normalisation (the model sees [0, 1] pixels).

backbones-core has no family with these defaults (``ViTImageProcessor`` normalises with 0.5), so this plugin
declares the class (``image_processor_classes``); core's pipeline does the work.
"""

from __future__ import annotations

import dataclasses

from backbones import ImageProcessor

__all__ = ["Tipsv2ImageProcessor"]

_BILINEAR = 2


@dataclasses.dataclass(frozen=True)
class Tipsv2ImageProcessor(ImageProcessor):
    """Convert to RGB, resize to ``size``, rescale: transformers' ``Tipsv2ImageProcessor`` with its class defaults.

    The defaults are the values of keys a ``preprocessor_config.json`` leaves out: RGB conversion, 448x448
    with bilinear filtering, scale by 1/255, no normalisation. Every field is :class:`backbones.ImageProcessor`'s.
    """

    do_convert_rgb: bool = True
    size: dict[str, int] | None = dataclasses.field(default_factory=lambda: {"height": 448, "width": 448})
    resample: int = _BILINEAR
    do_normalize: bool = False
