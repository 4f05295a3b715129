"""TextNet backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["TextNetBackbone", "TextNetConfig", "TextNetImageProcessor"]

_EXPORTS = {
    "TextNetConfig": "._config",
    "TextNetBackbone": "._model",
    "TextNetImageProcessor": "._processing",
}

if TYPE_CHECKING:
    from ._config import TextNetConfig
    from ._model import TextNetBackbone
    from ._processing import TextNetImageProcessor


__getattr__ = lazy_getattr(__name__, _EXPORTS)
