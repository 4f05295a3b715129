"""ConvNeXt backbone for backbones. Public names are imported on first access (no torch at import).

``ConvNextFamilyConfig`` and ``ConvNextBlock`` are the extension points backbones-convnextv2 builds on.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["ConvNextBackbone", "ConvNextBlock", "ConvNextConfig", "ConvNextFamilyConfig"]

_EXPORTS = {
    "ConvNextBackbone": "._model",
    "ConvNextBlock": "._model",
    "ConvNextConfig": "._config",
    "ConvNextFamilyConfig": "._config",
}

if TYPE_CHECKING:
    from ._config import ConvNextConfig, ConvNextFamilyConfig
    from ._model import ConvNextBackbone, ConvNextBlock


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
