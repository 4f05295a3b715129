"""Entry point of backbones-uvdoc-backbone: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones import hookimpl

if TYPE_CHECKING:
    from backbones.hookspecs import Register

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.1"  # 1.1: it declares its own image processor


@hookimpl
def register_backbones(register: Register) -> None:
    register(
        "uvdoc_backbone",
        config="backbones_uvdoc_backbone._config:UVDocBackboneConfig",
        model="backbones_uvdoc_backbone._model:UVDocBackbone",
        description="UVDoc's backbone (UVDoc: Neural Grid-based Document Unwarping, 2023)",
        # The PaddlePaddle/UVDoc checkpoints' preprocessor_config.json names it; also used when one names none.
        image_processor="UVDocImageProcessor",
        image_processor_classes={"UVDocImageProcessor": "backbones_uvdoc_backbone._processing:UVDocImageProcessor"},
    )
