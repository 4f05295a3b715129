"""ViTPose backbone for backbones. Public names are imported on first access (no torch at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["VitPoseBackbone", "VitPoseBackboneConfig", "VitPoseImageProcessor"]

_EXPORTS = {
    "VitPoseBackboneConfig": "._config",
    "VitPoseBackbone": "._model",
    "VitPoseImageProcessor": "._processing",
}

if TYPE_CHECKING:
    from ._config import VitPoseBackboneConfig
    from ._model import VitPoseBackbone
    from ._processing import VitPoseImageProcessor


__getattr__ = lazy_getattr(__name__, _EXPORTS)
