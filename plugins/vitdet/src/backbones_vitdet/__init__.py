"""ViTDet backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on ViTDet use the public modules of :mod:`backbones_vitdet.blocks` (semver-stable API).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["VitDetBackbone", "VitDetConfig"]

_EXPORTS = {"VitDetConfig": "._config", "VitDetBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import VitDetConfig
    from ._model import VitDetBackbone


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
