"""Public names of backbones_pp_lcnet (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import SCALES as SCALES
from ._config import PPLCNetConfig as PPLCNetConfig
from ._config import PPLCNetV3Config as PPLCNetV3Config
from ._config import PPLCNetV4Config as PPLCNetV4Config
from ._model import PPLCNetBackbone as PPLCNetBackbone
from ._model import PPLCNetV3Backbone as PPLCNetV3Backbone
from ._model import PPLCNetV4Backbone as PPLCNetV4Backbone
from ._processing import PPLCNetImageProcessor as PPLCNetImageProcessor
