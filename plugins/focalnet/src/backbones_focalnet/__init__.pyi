"""Public names of backbones_focalnet (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import FocalNetConfig as FocalNetConfig
from ._model import FocalNetBackbone as FocalNetBackbone
