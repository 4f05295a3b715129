"""DINOv2-with-registers backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Dinov2WithRegistersBackbone", "Dinov2WithRegistersConfig"]

_EXPORTS = {"Dinov2WithRegistersConfig": "._config", "Dinov2WithRegistersBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import Dinov2WithRegistersConfig
    from ._model import Dinov2WithRegistersBackbone


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
