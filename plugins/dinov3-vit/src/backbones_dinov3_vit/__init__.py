"""DINOv3 ViT backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["Dinov3ViTBackbone", "Dinov3ViTConfig"]

_EXPORTS = {"Dinov3ViTConfig": "._config", "Dinov3ViTBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import Dinov3ViTConfig
    from ._model import Dinov3ViTBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
