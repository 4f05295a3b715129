"""Public names of backbones_convnext (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import ConvNextConfig as ConvNextConfig
from ._config import ConvNextFamilyConfig as ConvNextFamilyConfig
from ._model import ConvNextBackbone as ConvNextBackbone
from .blocks import ConvNextBlock as ConvNextBlock
