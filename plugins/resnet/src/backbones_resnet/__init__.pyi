"""Public names of backbones_resnet (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import ResNetConfig as ResNetConfig
from ._model import ResNetBackbone as ResNetBackbone
