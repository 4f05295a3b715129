"""RF-DETR's windowed DINOv2 backbone for backbones. Public names are imported on first access (no torch at
import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["RfDetrDinov2Backbone", "RfDetrDinov2Config", "RfDetrImageProcessor"]

_EXPORTS = {
    "RfDetrDinov2Config": "._config",
    "RfDetrDinov2Backbone": "._model",
    "RfDetrImageProcessor": "._processing",
}

if TYPE_CHECKING:
    from ._config import RfDetrDinov2Config
    from ._model import RfDetrDinov2Backbone
    from ._processing import RfDetrImageProcessor


__getattr__ = lazy_getattr(__name__, _EXPORTS)
