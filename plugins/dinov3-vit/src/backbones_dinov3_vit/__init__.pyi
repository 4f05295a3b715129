"""Public names of backbones_dinov3_vit (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import Dinov3ViTConfig as Dinov3ViTConfig
from ._model import Dinov3ViTBackbone as Dinov3ViTBackbone
