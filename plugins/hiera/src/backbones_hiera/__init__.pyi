"""Public names of backbones_hiera (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import HieraConfig as HieraConfig
from ._model import HieraBackbone as HieraBackbone
