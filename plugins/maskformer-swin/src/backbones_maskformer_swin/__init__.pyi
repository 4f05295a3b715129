"""Public names of backbones_maskformer_swin (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import MaskFormerSwinConfig as MaskFormerSwinConfig
from ._model import MaskFormerSwinBackbone as MaskFormerSwinBackbone

MASKFORMER_BACKBONE_PREFIX: str
