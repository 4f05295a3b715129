"""ResNet backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on ResNet use the public modules of :mod:`backbones_resnet.blocks` (semver-stable API).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["ResNetBackbone", "ResNetConfig"]

_EXPORTS = {"ResNetConfig": "._config", "ResNetBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import ResNetConfig
    from ._model import ResNetBackbone


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
