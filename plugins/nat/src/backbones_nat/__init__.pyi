"""Public names of backbones_nat (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import NatConfig as NatConfig
from ._model import NatBackbone as NatBackbone
from .attention import neighborhood_attention_2d as neighborhood_attention_2d
