"""DINOv2 backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on DINOv2 use the public modules of :mod:`backbones_dinov2.blocks` (semver-stable API).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Dinov2Backbone", "Dinov2Config"]

_EXPORTS = {"Dinov2Config": "._config", "Dinov2Backbone": "._model"}

if TYPE_CHECKING:
    from ._config import Dinov2Config
    from ._model import Dinov2Backbone


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
