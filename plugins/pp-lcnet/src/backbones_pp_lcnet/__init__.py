"""PP-LCNet, PP-LCNetV3 and PP-LCNetV4 backbones for backbones. Public names are imported on first access
(no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = [
    "SCALES",
    "PPLCNetBackbone",
    "PPLCNetConfig",
    "PPLCNetImageProcessor",
    "PPLCNetV3Backbone",
    "PPLCNetV3Config",
    "PPLCNetV4Backbone",
    "PPLCNetV4Config",
]

_EXPORTS = {
    "SCALES": "._config",
    "PPLCNetConfig": "._config",
    "PPLCNetV3Config": "._config",
    "PPLCNetV4Config": "._config",
    "PPLCNetBackbone": "._model",
    "PPLCNetV3Backbone": "._model",
    "PPLCNetV4Backbone": "._model",
    "PPLCNetImageProcessor": "._processing",
}

if TYPE_CHECKING:
    from ._config import SCALES, PPLCNetConfig, PPLCNetV3Config, PPLCNetV4Config
    from ._model import PPLCNetBackbone, PPLCNetV3Backbone, PPLCNetV4Backbone
    from ._processing import PPLCNetImageProcessor


__getattr__ = lazy_getattr(__name__, _EXPORTS)
