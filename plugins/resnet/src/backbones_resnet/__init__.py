"""ResNet backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on ResNet use the public modules of :mod:`backbones_resnet.blocks` (semver-stable API).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["ResNetBackbone", "ResNetConfig"]

_EXPORTS = {"ResNetConfig": "._config", "ResNetBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import ResNetConfig
    from ._model import ResNetBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
