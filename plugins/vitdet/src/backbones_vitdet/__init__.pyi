"""Public names of backbones_vitdet (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import VitDetConfig as VitDetConfig
from ._model import VitDetBackbone as VitDetBackbone
