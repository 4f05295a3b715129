"""UVDoc's backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["UVDocBackbone", "UVDocBackboneConfig", "UVDocImageProcessor"]

_EXPORTS = {
    "UVDocBackboneConfig": "._config",
    "UVDocBackbone": "._model",
    "UVDocImageProcessor": "._processing",
}

if TYPE_CHECKING:
    from ._config import UVDocBackboneConfig
    from ._model import UVDocBackbone
    from ._processing import UVDocImageProcessor


__getattr__ = lazy_getattr(__name__, _EXPORTS)
