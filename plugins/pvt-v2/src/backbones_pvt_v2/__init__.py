"""PVTv2 backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["PvtImageProcessor", "PvtV2Backbone", "PvtV2Config"]

_EXPORTS = {
    "PvtV2Config": "._config",
    "PvtV2Backbone": "._model",
    "PvtImageProcessor": "._processing",
}

if TYPE_CHECKING:
    from ._config import PvtV2Config
    from ._model import PvtV2Backbone
    from ._processing import PvtImageProcessor


__getattr__ = lazy_getattr(__name__, _EXPORTS)
