"""Public names of backbones_dinov2_with_registers (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import Dinov2WithRegistersConfig as Dinov2WithRegistersConfig
from ._model import Dinov2WithRegistersBackbone as Dinov2WithRegistersBackbone
