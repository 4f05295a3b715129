"""Public names of backbones_textnet (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import TextNetConfig as TextNetConfig
from ._model import TextNetBackbone as TextNetBackbone
from ._processing import TextNetImageProcessor as TextNetImageProcessor
