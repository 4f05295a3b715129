"""Public names of backbones_swin (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import SwinConfig as SwinConfig
from ._config import SwinFamilyConfig as SwinFamilyConfig
from ._model import SwinBackbone as SwinBackbone
