"""Public names of backbones.necks (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._config import FeaturePyramidConfig as FeaturePyramidConfig
from ._config import SimpleFeaturePyramidConfig as SimpleFeaturePyramidConfig
from ._model import FeaturePyramid as FeaturePyramid
from ._model import LayerNorm2d as LayerNorm2d
from ._model import PyramidBackbone as PyramidBackbone
from ._model import SimpleFeaturePyramid as SimpleFeaturePyramid
