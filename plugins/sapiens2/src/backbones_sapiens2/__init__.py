"""Sapiens2 backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["Sapiens2Backbone", "Sapiens2Config", "Sapiens2ImageProcessor"]

_EXPORTS = {
    "Sapiens2Config": "._config",
    "Sapiens2Backbone": "._model",
    "Sapiens2ImageProcessor": "._processing",
}

if TYPE_CHECKING:
    from ._config import Sapiens2Config
    from ._model import Sapiens2Backbone
    from ._processing import Sapiens2ImageProcessor


__getattr__ = lazy_getattr(__name__, _EXPORTS)
