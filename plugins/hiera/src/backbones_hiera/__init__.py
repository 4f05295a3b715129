"""Hiera backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["HieraBackbone", "HieraConfig"]

_EXPORTS = {"HieraConfig": "._config", "HieraBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import HieraConfig
    from ._model import HieraBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
