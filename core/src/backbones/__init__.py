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

PLUGIN_API_VERSION = "1.1"
"""Version of the plugin API (hooks, base classes) that this core implements."""

_EXPORTS: dict[str, str] = {
    "AutoBackbone": "._auto",
    "AutoBackboneConfig": "._auto",
    "AutoImageProcessor": "._image",
    "Backbone": "._backbone",
    "BackboneConfig": "._config",
    "BackboneError": "._errors",
    "BackboneOutput": "._output",
    "BackboneType": "._backbone_type",
    "CheckpointError": "._errors",
    "ConfigError": "._errors",
    "ForwardInput": "._forward_inputs",
    "ImageProcessor": "._image",
    "InputError": "._errors",
    "LoadOptions": "._options",
    "LoadReport": "._loading",
    "PluginError": "._errors",
    "ReparameterizedError": "._errors",
    "UnknownModelTypeError": "._errors",
    "WeightsMismatchError": "._errors",
    "align_out_features_out_indices": "._stages",
    "get_aligned_output_features_output_indices": "._stages",
    "get_registry": "._registry",
    "hookimpl": ".hookspecs",
    "load_backbone": "._head",
    "register": "._registry",
    "verify_out_features_out_indices": "._stages",
}

__all__ = sorted([*_EXPORTS, "PLUGIN_API_VERSION", "__version__"])

if TYPE_CHECKING:
    # `name as name`: an explicit re-export, which type checkers need (they cannot read the computed __all__).
    from ._auto import AutoBackbone as AutoBackbone
    from ._auto import AutoBackboneConfig as AutoBackboneConfig
    from ._backbone import Backbone as Backbone
    from ._backbone_type import BackboneType as BackboneType
    from ._config import BackboneConfig as BackboneConfig
    from ._errors import BackboneError as BackboneError
    from ._errors import CheckpointError as CheckpointError
    from ._errors import ConfigError as ConfigError
    from ._errors import InputError as InputError
    from ._errors import PluginError as PluginError
    from ._errors import ReparameterizedError as ReparameterizedError
    from ._errors import UnknownModelTypeError as UnknownModelTypeError
    from ._errors import WeightsMismatchError as WeightsMismatchError
    from ._forward_inputs import ForwardInput as ForwardInput
    from ._head import load_backbone as load_backbone
    from ._image import AutoImageProcessor as AutoImageProcessor
    from ._image import ImageProcessor as ImageProcessor
    from ._loading import LoadReport as LoadReport
    from ._options import LoadOptions as LoadOptions
    from ._output import BackboneOutput as BackboneOutput
    from ._registry import get_registry as get_registry
    from ._registry import register as register
    from ._stages import align_out_features_out_indices as align_out_features_out_indices
    from ._stages import get_aligned_output_features_output_indices as get_aligned_output_features_output_indices
    from ._stages import verify_out_features_out_indices as verify_out_features_out_indices
    from .hookspecs import hookimpl as hookimpl


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'backbones' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
