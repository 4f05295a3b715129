"""DINOv3 ConvNeXt backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["DINOv3ConvNextBackbone", "DINOv3ConvNextConfig"]

_EXPORTS = {"DINOv3ConvNextConfig": "._config", "DINOv3ConvNextBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import DINOv3ConvNextConfig
    from ._model import DINOv3ConvNextBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
