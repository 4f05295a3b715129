"""ConvNeXt backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on ConvNeXt (backbones-convnextv2, ...) use ``ConvNextFamilyConfig``, ``ConvNextBackbone``
(its ``_make_block`` hook) and the public modules of :mod:`backbones_convnext.blocks`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["ConvNextBackbone", "ConvNextBlock", "ConvNextConfig", "ConvNextFamilyConfig"]

_EXPORTS = {
    "ConvNextBackbone": "._model",
    "ConvNextBlock": ".blocks",
    "ConvNextConfig": "._config",
    "ConvNextFamilyConfig": "._config",
}

if TYPE_CHECKING:
    from ._config import ConvNextConfig, ConvNextFamilyConfig
    from ._model import ConvNextBackbone
    from .blocks import ConvNextBlock


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
