"""ConvNeXt V2 backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["ConvNextV2Backbone", "ConvNextV2Config"]

_EXPORTS = {"ConvNextV2Config": "._config", "ConvNextV2Backbone": "._model"}

if TYPE_CHECKING:
    from ._config import ConvNextV2Config
    from ._model import ConvNextV2Backbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
