"""Public names of backbones_timm (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import TimmBackboneConfig as TimmBackboneConfig
from ._model import TimmBackbone as TimmBackbone
from ._pretrained import is_timm_model_name as is_timm_model_name
from ._pretrained import load_timm_pretrained as load_timm_pretrained
