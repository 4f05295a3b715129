"""The processor families core implements: transformers' image-processor classes shared by many plugins.

A family is a transformers class name (the ``image_processor_type`` a checkpoint's
``preprocessor_config.json`` writes) and its class defaults, all run by one pipeline,
:class:`backbones.ImageProcessor`. Which family a model type uses is not written here: each plugin
declares it when it registers (``image_processor=...``), so a new architecture needs no core release.

This module is light (no NumPy, no Pillow): the registry reads the family names to check what a plugin
declares while ``backbones list`` runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CLASS_FAMILIES", "FAMILIES", "FAMILY_NAMES", "RESCALE_FIRST", "family_names_text"]

NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING = range(6)

HALF = (0.5, 0.5, 0.5)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_COMMON_DEFAULTS: dict[str, Any] = {
    "do_convert_rgb": False,
    "do_resize": True,
    "default_to_square": True,
    "crop_pct": None,
    "do_center_crop": False,
    "crop_size": None,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
}


def _family(
    size: dict[str, int], resample: int, mean: tuple[float, ...], std: tuple[float, ...], **settings: Any
) -> dict[str, Any]:
    """A family's class defaults: the common ones with its size, filter and statistics, then ``settings``."""
    return {**_COMMON_DEFAULTS, "size": size, "resample": resample, "image_mean": mean, "image_std": std, **settings}


_SQUARE_224 = {"height": 224, "width": 224}

# The class defaults of transformers' image processors (the PIL backend's are the same). A key missing
# from preprocessor_config.json, or null there, takes these values.
FAMILIES: dict[str, dict[str, Any]] = {
    "ViTImageProcessor": _family(_SQUARE_224, BILINEAR, HALF, HALF),
    # ConvNeXt's crop_pct rule: the only family that reads crop_pct.
    "ConvNextImageProcessor": _family(
        {"shortest_edge": 384}, BICUBIC, HALF, HALF, default_to_square=False, crop_pct=224 / 256
    ),
    "BitImageProcessor": _family(
        {"shortest_edge": 224},
        BICUBIC,
        OPENAI_CLIP_MEAN,
        OPENAI_CLIP_STD,
        do_convert_rgb=True,
        default_to_square=False,
        do_center_crop=True,
        crop_size=_SQUARE_224,
    ),
    "BeitImageProcessor": _family(_SQUARE_224, BICUBIC, HALF, HALF, crop_size=_SQUARE_224),
    # DINOv3's (ViT and ConvNeXt checkpoints): transformers has only a torchvision-backed class, which
    # scales to [0, 1] before resizing (see RESCALE_FIRST).
    "DINOv3ViTImageProcessor": _family(_SQUARE_224, BILINEAR, IMAGENET_MEAN, IMAGENET_STD),
}

# Families whose pipeline has a step of its own (padding a batch to one size, with a pixel mask), so they
# are ImageProcessor subclasses, given as "module:Class" (imported when used): detector processors that
# the checkpoints of several backbones name (see backbones.detection_processing).
CLASS_FAMILIES: dict[str, str] = {
    "DeformableDetrImageProcessor": "backbones.detection_processing:DeformableDetrImageProcessor",
    "RTDetrImageProcessor": "backbones.detection_processing:RTDetrImageProcessor",
}

FAMILY_NAMES = frozenset(FAMILIES) | frozenset(CLASS_FAMILIES)
"""Every processor family core implements."""

# Families whose transformers class rescales before resizing: the resize then filters [0, 1] floats
# rather than 8-bit values (a difference of up to about 1e-2 after normalising).
RESCALE_FIRST = frozenset({"DINOv3ViTImageProcessor"})


def family_names_text() -> str:
    """``"A, B, C and D"``: the family names, sorted, for error messages."""
    names = sorted(FAMILY_NAMES)
    return ", ".join(names[:-1]) + " and " + names[-1]
