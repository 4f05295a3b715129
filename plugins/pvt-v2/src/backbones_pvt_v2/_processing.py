"""PVT's image processor (``PvtImageProcessor`` in the ``preprocessor_config.json`` of the OpenGVLab/pvt_v2_*
checkpoints): resize to a fixed 224x224, scale to [0, 1], normalise with the ImageNet mean and standard
deviation.

backbones-core has no family with these defaults (``ViTImageProcessor`` normalises with 0.5 and filters
bilinearly), so this plugin declares the class (``image_processor_classes``); core's pipeline does the work.
"""

from __future__ import annotations

import dataclasses

from backbones import ImageProcessor

__all__ = ["PvtImageProcessor"]

_BICUBIC = 3


@dataclasses.dataclass(frozen=True)
class PvtImageProcessor(ImageProcessor):
    """Resize to ``size``, rescale, normalise: transformers' ``PvtImageProcessor`` with its class defaults.

    The defaults are the values of keys a ``preprocessor_config.json`` leaves out: no RGB conversion,
    224x224 with bicubic filtering, scale by 1/255, ImageNet mean and standard deviation. Every field is
    :class:`backbones.ImageProcessor`'s.
    """

    do_convert_rgb: bool = False
    resample: int = _BICUBIC
