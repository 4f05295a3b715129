"""Public names of backbones_convnextv2 (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import ConvNextV2Config as ConvNextV2Config
from ._model import ConvNextV2Backbone as ConvNextV2Backbone
