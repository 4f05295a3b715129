"""LW-DETR's ViT backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["DeformableDetrImageProcessor", "LwDetrViTBackbone", "LwDetrViTConfig"]

_EXPORTS = {
    "LwDetrViTConfig": "._config",
    "LwDetrViTBackbone": "._model",
    "DeformableDetrImageProcessor": "backbones.detection_processing",  # core's family, kept here for existing imports
}

if TYPE_CHECKING:
    from backbones.detection_processing import DeformableDetrImageProcessor

    from ._config import LwDetrViTConfig
    from ._model import LwDetrViTBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
