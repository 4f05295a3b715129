"""Public names of backbones_rt_detr_resnet (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from backbones.detection_processing import RTDetrImageProcessor as RTDetrImageProcessor

from ._config import RTDetrResNetConfig as RTDetrResNetConfig
from ._model import RTDetrResNetBackbone as RTDetrResNetBackbone
