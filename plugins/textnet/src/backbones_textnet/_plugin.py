"""Entry point of backbones-textnet: registers the model type lazily (imports neither torch nor the model)."""

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
        "textnet",
        config="backbones_textnet._config:TextNetConfig",
        model="backbones_textnet._model:TextNetBackbone",
        description="TextNet of FAST (FAST: Faster Arbitrarily-Shaped Text Detector with Minimalist Kernel Representation, 2021)",
        # The czczup/textnet-* checkpoints' preprocessor_config.json names it; also used when one names none.
        image_processor="TextNetImageProcessor",
        image_processor_classes={"TextNetImageProcessor": "backbones_textnet._processing:TextNetImageProcessor"},
    )
