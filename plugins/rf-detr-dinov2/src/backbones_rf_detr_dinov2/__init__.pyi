"""Public names of backbones_rf_detr_dinov2 (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import RfDetrDinov2Config as RfDetrDinov2Config
from ._model import RfDetrDinov2Backbone as RfDetrDinov2Backbone
from ._processing import RfDetrImageProcessor as RfDetrImageProcessor
