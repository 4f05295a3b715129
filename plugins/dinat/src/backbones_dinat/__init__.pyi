"""Public names of backbones_dinat (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import DinatConfig as DinatConfig
from ._model import DinatBackbone as DinatBackbone
