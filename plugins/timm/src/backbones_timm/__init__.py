"""timm models as backbones. Public names are imported on first access (neither torch nor timm at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

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


__getattr__ = lazy_getattr(__name__, _EXPORTS)
