"""Public names of backbones_pvt_v2 (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import PvtV2Config as PvtV2Config
from ._model import PvtV2Backbone as PvtV2Backbone
from ._processing import PvtImageProcessor as PvtImageProcessor
