"""DiNAT backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["DinatBackbone", "DinatConfig"]

_EXPORTS = {"DinatConfig": "._config", "DinatBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import DinatConfig
    from ._model import DinatBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
