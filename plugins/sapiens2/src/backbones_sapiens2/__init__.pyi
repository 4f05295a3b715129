"""Public names of backbones_sapiens2 (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import Sapiens2Config as Sapiens2Config
from ._model import Sapiens2Backbone as Sapiens2Backbone
from ._processing import Sapiens2ImageProcessor as Sapiens2ImageProcessor
