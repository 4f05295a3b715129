"""ViTDet backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on ViTDet use the public modules of :mod:`backbones_vitdet.blocks` (semver-stable API).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["VitDetBackbone", "VitDetConfig"]

_EXPORTS = {"VitDetConfig": "._config", "VitDetBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import VitDetConfig
    from ._model import VitDetBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
