"""Public names of backbones_lw_detr_vit (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from backbones.detection_processing import DeformableDetrImageProcessor as DeformableDetrImageProcessor

from ._config import LwDetrViTConfig as LwDetrViTConfig
from ._model import LwDetrViTBackbone as LwDetrViTBackbone
