"""timm models as backbones. Public names are imported on first access (neither torch nor timm at import)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["TimmBackbone", "TimmBackboneConfig", "is_timm_model_name", "load_timm_pretrained"]

_EXPORTS = {
    "TimmBackboneConfig": "._config",
    "TimmBackbone": "._model",
    "is_timm_model_name": "._pretrained",
    "load_timm_pretrained": "._pretrained",
}

if TYPE_CHECKING:
    from ._config import TimmBackboneConfig
    from ._model import TimmBackbone
    from ._pretrained import is_timm_model_name, load_timm_pretrained


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
