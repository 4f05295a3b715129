"""DiNAT backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["DinatBackbone", "DinatConfig"]

_EXPORTS = {"DinatConfig": "._config", "DinatBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import DinatConfig
    from ._model import DinatBackbone


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
