"""Public names of backbones_dinov2 (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import Dinov2Config as Dinov2Config
from ._model import Dinov2Backbone as Dinov2Backbone
