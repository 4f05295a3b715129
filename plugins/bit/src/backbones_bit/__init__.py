"""BiT backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["BitBackbone", "BitConfig"]

_EXPORTS = {"BitConfig": "._config", "BitBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import BitConfig
    from ._model import BitBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
