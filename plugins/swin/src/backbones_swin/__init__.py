"""Swin Transformer backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on Swin (backbones-swinv2, backbones-maskformer-swin) use ``SwinFamilyConfig``,
``SwinBackbone`` (its hooks are listed in its module docstring) and the public modules of
:mod:`backbones_swin.blocks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["SwinBackbone", "SwinConfig", "SwinFamilyConfig"]

_EXPORTS = {"SwinConfig": "._config", "SwinFamilyConfig": "._config", "SwinBackbone": "._model"}

if TYPE_CHECKING:
    from ._config import SwinConfig, SwinFamilyConfig
    from ._model import SwinBackbone


__getattr__ = lazy_getattr(__name__, _EXPORTS)
