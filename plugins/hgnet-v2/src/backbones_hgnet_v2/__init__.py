"""HGNetV2 backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["VARIANTS", "HGNetV2Backbone", "HGNetV2Config"]

_EXPORTS = {"HGNetV2Config": "._config", "VARIANTS": "._config", "HGNetV2Backbone": "._model"}

if TYPE_CHECKING:
    from ._config import VARIANTS, HGNetV2Config
    from ._model import HGNetV2Backbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
