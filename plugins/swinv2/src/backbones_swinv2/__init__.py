"""Swin Transformer V2 backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["Swinv2Backbone", "Swinv2Config"]

_EXPORTS = {"Swinv2Config": "._config", "Swinv2Backbone": "._model"}

if TYPE_CHECKING:
    from ._config import Swinv2Config
    from ._model import Swinv2Backbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
