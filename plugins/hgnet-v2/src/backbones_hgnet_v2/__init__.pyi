"""Public names of backbones_hgnet_v2 (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import VARIANTS as VARIANTS
from ._config import HGNetV2Config as HGNetV2Config
from ._model import HGNetV2Backbone as HGNetV2Backbone
