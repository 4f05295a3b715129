"""FocalNet backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["FocalNetBackbone", "FocalNetConfig"]

_EXPORTS = {"FocalNetConfig": "._config", "FocalNetBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import FocalNetConfig
    from ._model import FocalNetBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
