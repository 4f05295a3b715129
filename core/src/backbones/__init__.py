"""backbones: a plugin registry of computer-vision backbones for PyTorch.

Importing this package is cheap: it imports neither torch nor any plugin. Each public name is
imported from its module on first access.

Example:
    >>> from backbones import AutoBackbone                                     # doctest: +SKIP
    >>> model = AutoBackbone.from_pretrained("path/to/swin", out_indices=[1, 2, 3, 4])  # doctest: +SKIP
    >>> [fmap.shape for fmap in model(pixel_values).feature_maps]              # doctest: +SKIP
"""

from .lazy import attach_stub

__version__ = "0.1.0"

PLUGIN_API_VERSION = "1.2"
"""Version of the plugin API (hooks, base classes) that this core implements."""

# The public classes and functions are declared once, in __init__.pyi, and imported on first access.
__getattr__, __dir__, _lazy_names = attach_stub(__name__, __file__)
__all__ = sorted([*_lazy_names, "PLUGIN_API_VERSION", "__version__"])
