"""TIPSv2 vision backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["Tipsv2ImageProcessor", "Tipsv2VisionBackbone", "Tipsv2VisionConfig"]

_EXPORTS = {
    "Tipsv2VisionConfig": "._config",
    "Tipsv2VisionBackbone": "._model",
    "Tipsv2ImageProcessor": "._processing",
}

if TYPE_CHECKING:
    from ._config import Tipsv2VisionConfig
    from ._model import Tipsv2VisionBackbone
    from ._processing import Tipsv2ImageProcessor


__getattr__ = lazy_getattr(__name__, _EXPORTS)
