"""Public names of backbones_uvdoc_backbone (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import UVDocBackboneConfig as UVDocBackboneConfig
from ._model import UVDocBackbone as UVDocBackbone
from ._processing import UVDocImageProcessor as UVDocImageProcessor
