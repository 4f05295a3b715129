"""DINOv2 backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on DINOv2 use the public modules of :mod:`backbones_dinov2.blocks` (semver-stable API).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["Dinov2Backbone", "Dinov2Config"]

_EXPORTS = {"Dinov2Config": "._config", "Dinov2Backbone": "._model"}

if TYPE_CHECKING:
    from ._config import Dinov2Config
    from ._model import Dinov2Backbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
