"""RT-DETR's ResNet-vd backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["RTDetrImageProcessor", "RTDetrResNetBackbone", "RTDetrResNetConfig"]

_EXPORTS = {
    "RTDetrResNetConfig": "._config",
    "RTDetrResNetBackbone": "._model",
    "RTDetrImageProcessor": "._processing",
}

if TYPE_CHECKING:
    from ._config import RTDetrResNetConfig
    from ._model import RTDetrResNetBackbone
    from ._processing import RTDetrImageProcessor


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
