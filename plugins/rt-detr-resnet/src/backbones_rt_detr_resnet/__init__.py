"""RT-DETR's ResNet-vd backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["RTDetrImageProcessor", "RTDetrResNetBackbone", "RTDetrResNetConfig"]

_EXPORTS = {
    "RTDetrResNetConfig": "._config",
    "RTDetrResNetBackbone": "._model",
    "RTDetrImageProcessor": "backbones.detection_processing",  # core's family, kept here for existing imports
}

if TYPE_CHECKING:
    from backbones.detection_processing import RTDetrImageProcessor

    from ._config import RTDetrResNetConfig
    from ._model import RTDetrResNetBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
