"""ConvNeXt backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on ConvNeXt (backbones-convnextv2, ...) use ``ConvNextFamilyConfig``, ``ConvNextBackbone``
(its ``_make_block`` hook) and the public modules of :mod:`backbones_convnext.blocks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["ConvNextBackbone", "ConvNextBlock", "ConvNextConfig", "ConvNextFamilyConfig"]

_EXPORTS = {
    "ConvNextBackbone": "._model",
    "ConvNextBlock": ".blocks",
    "ConvNextConfig": "._config",
    "ConvNextFamilyConfig": "._config",
}

if TYPE_CHECKING:
    from ._config import ConvNextConfig, ConvNextFamilyConfig
    from ._model import ConvNextBackbone
    from .blocks import ConvNextBlock


__getattr__ = lazy_getattr(__name__, _EXPORTS)
