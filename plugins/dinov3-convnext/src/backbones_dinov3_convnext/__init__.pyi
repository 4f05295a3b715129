"""Public names of backbones_dinov3_convnext (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import DINOv3ConvNextConfig as DINOv3ConvNextConfig
from ._model import DINOv3ConvNextBackbone as DINOv3ConvNextBackbone
