"""Public names of backbones_swinv2 (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import Swinv2Config as Swinv2Config
from ._model import Swinv2Backbone as Swinv2Backbone
