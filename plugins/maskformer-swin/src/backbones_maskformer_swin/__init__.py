"""MaskFormer's Swin backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["MASKFORMER_BACKBONE_PREFIX", "MaskFormerSwinBackbone", "MaskFormerSwinConfig"]

MASKFORMER_BACKBONE_PREFIX = "model.pixel_level_module.encoder."
"""Key prefix of the backbone inside transformers' MaskFormer segmentation checkpoints
(``MaskFormerForInstanceSegmentation``); pass it as ``checkpoint_prefix`` with ``config_key="backbone_config"``."""

_EXPORTS = {"MaskFormerSwinConfig": "._config", "MaskFormerSwinBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import MaskFormerSwinConfig
    from ._model import MaskFormerSwinBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
