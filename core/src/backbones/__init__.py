"""backbones: a plugin registry of computer-vision backbones for PyTorch.

Importing this package is cheap: it imports neither torch nor any plugin. Each public name is
imported from its module on first access.

Example:
    >>> from backbones import AutoBackbone                                     # doctest: +SKIP
    >>> model = AutoBackbone.from_pretrained("path/to/swin", out_indices=[1, 2, 3, 4])  # doctest: +SKIP
    >>> [fmap.shape for fmap in model(pixel_values).feature_maps]              # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

PLUGIN_API_VERSION = "1.0"
"""Version of the plugin API (hooks, base classes) that this core implements."""

_EXPORTS: dict[str, str] = {
    "AutoBackbone": "._auto",
    "AutoBackboneConfig": "._auto",
    "AutoImageProcessor": "._image",
    "Backbone": "._backbone",
    "BackboneConfig": "._config",
    "BackboneError": "._errors",
    "BackboneOutput": "._output",
    "CheckpointError": "._errors",
    "ConfigError": "._errors",
    "ImageProcessor": "._image",
    "LoadReport": "._loading",
    "PluginError": "._errors",
    "UnknownModelTypeError": "._errors",
    "WeightsMismatchError": "._errors",
    "align_out_features_out_indices": "._stages",
    "get_registry": "._registry",
    "hookimpl": ".hookspecs",
    "load_backbone": "._head",
    "register": "._registry",
}

__all__ = sorted([*_EXPORTS, "PLUGIN_API_VERSION", "__version__"])

if TYPE_CHECKING:
    from ._auto import AutoBackbone, AutoBackboneConfig
    from ._backbone import Backbone
    from ._config import BackboneConfig
    from ._errors import (
        BackboneError,
        CheckpointError,
        ConfigError,
        PluginError,
        UnknownModelTypeError,
        WeightsMismatchError,
    )
    from ._head import load_backbone
    from ._image import AutoImageProcessor, ImageProcessor
    from ._loading import LoadReport
    from ._output import BackboneOutput
    from ._registry import get_registry, register
    from ._stages import align_out_features_out_indices
    from .hookspecs import hookimpl


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'backbones' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
