"""Public names of backbones_beit (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import BeitConfig as BeitConfig
from ._model import BeitBackbone as BeitBackbone
