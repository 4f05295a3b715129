"""Public names of backbones_bit (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import BitConfig as BitConfig
from ._model import BitBackbone as BitBackbone
