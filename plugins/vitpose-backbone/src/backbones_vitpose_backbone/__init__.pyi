"""Public names of backbones_vitpose_backbone (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import VitPoseBackboneConfig as VitPoseBackboneConfig
from ._model import VitPoseBackbone as VitPoseBackbone
from ._processing import VitPoseImageProcessor as VitPoseImageProcessor
