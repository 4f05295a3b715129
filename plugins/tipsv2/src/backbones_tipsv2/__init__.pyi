"""Public names of backbones_tipsv2 (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import Tipsv2VisionConfig as Tipsv2VisionConfig
from ._model import Tipsv2VisionBackbone as Tipsv2VisionBackbone
from ._processing import Tipsv2ImageProcessor as Tipsv2ImageProcessor
