"""Swin Transformer backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on Swin (backbones-swinv2, backbones-maskformer-swin) use ``SwinFamilyConfig``,
``SwinBackbone`` (its hooks are listed in its module docstring) and the public modules of
:mod:`backbones_swin.blocks`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["SwinBackbone", "SwinConfig", "SwinFamilyConfig"]

_EXPORTS = {"SwinConfig": "._config", "SwinFamilyConfig": "._config", "SwinBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import SwinConfig, SwinFamilyConfig
    from ._model import SwinBackbone


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
