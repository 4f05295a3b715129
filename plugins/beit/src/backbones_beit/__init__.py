"""BEiT backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["BeitBackbone", "BeitConfig"]

_EXPORTS = {"BeitConfig": "._config", "BeitBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import BeitConfig
    from ._model import BeitBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
