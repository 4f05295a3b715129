"""LW-DETR's ViT backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["DeformableDetrImageProcessor", "LwDetrViTBackbone", "LwDetrViTConfig"]

_EXPORTS = {
    "LwDetrViTConfig": "._config",
    "LwDetrViTBackbone": "._model",
    "DeformableDetrImageProcessor": "._processing",
}

if TYPE_CHECKING:
    from ._config import LwDetrViTConfig
    from ._model import LwDetrViTBackbone
    from ._processing import DeformableDetrImageProcessor


__getattr__ = lazy_getattr(__name__, _EXPORTS)
