"""HGNetV2 backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["VARIANTS", "HGNetV2Backbone", "HGNetV2Config"]

_EXPORTS = {"HGNetV2Config": "._config", "VARIANTS": "._config", "HGNetV2Backbone": "._model"}

if TYPE_CHECKING:
    from ._config import VARIANTS, HGNetV2Config
    from ._model import HGNetV2Backbone


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
