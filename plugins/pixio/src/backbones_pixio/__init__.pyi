"""Public names of backbones_pixio (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import PixioConfig as PixioConfig
from ._model import PixioBackbone as PixioBackbone
