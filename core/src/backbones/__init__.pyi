"""Public names of backbones (read by type checkers, and by ``backbones.lazy.attach_stub`` at run time)."""

from ._auto import AutoBackbone as AutoBackbone
from ._auto import AutoBackboneConfig as AutoBackboneConfig
from ._backbone import Backbone as Backbone
from ._backbone_type import BackboneType as BackboneType
from ._config import BackboneConfig as BackboneConfig
from ._errors import BackboneError as BackboneError
from ._errors import CheckpointError as CheckpointError
from ._errors import ConfigError as ConfigError
from ._errors import InputError as InputError
from ._errors import PluginError as PluginError
from ._errors import ReparameterizedError as ReparameterizedError
from ._errors import UnknownModelTypeError as UnknownModelTypeError
from ._errors import WeightsMismatchError as WeightsMismatchError
from ._forward_inputs import ForwardInput as ForwardInput
from ._forward_inputs import ForwardRequest as ForwardRequest
from ._head import load_backbone as load_backbone
from ._image import AutoImageProcessor as AutoImageProcessor
from ._image import ImageProcessor as ImageProcessor
from ._loading import LoadReport as LoadReport
from ._options import LoadOptions as LoadOptions
from ._output import BackboneOutput as BackboneOutput
from ._registry import get_registry as get_registry
from ._registry import register as register
from ._stages import align_out_features_out_indices as align_out_features_out_indices
from ._stages import get_aligned_output_features_output_indices as get_aligned_output_features_output_indices
from ._stages import verify_out_features_out_indices as verify_out_features_out_indices
from .hookspecs import hookimpl as hookimpl

__version__: str
PLUGIN_API_VERSION: str
