"""Pixio backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["PixioBackbone", "PixioConfig"]

_EXPORTS = {"PixioConfig": "._config", "PixioBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import PixioConfig
    from ._model import PixioBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
