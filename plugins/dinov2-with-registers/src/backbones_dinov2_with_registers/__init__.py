"""DINOv2-with-registers backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["Dinov2WithRegistersBackbone", "Dinov2WithRegistersConfig"]

_EXPORTS = {"Dinov2WithRegistersConfig": "._config", "Dinov2WithRegistersBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import Dinov2WithRegistersConfig
    from ._model import Dinov2WithRegistersBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
