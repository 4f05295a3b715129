"""Entry point of backbones-hiera: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones import hookimpl

if TYPE_CHECKING:
    from backbones.hookspecs import Register

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.1"  # 1.1: image_processor


@hookimpl
def register_backbones(register: Register) -> None:
    register(
        "hiera",
        config="backbones_hiera._config:HieraConfig",
        model="backbones_hiera._model:HieraBackbone",
        description="Hiera (hierarchical vision transformer with mask-unit attention and query pooling, 2023)",
        # The image_processor_type of its checkpoints, also used when their preprocessor_config.json names none.
        image_processor="BitImageProcessor",
    )
