"""Entry point of backbones-pp-lcnet: registers the three model types lazily (imports neither torch nor the model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones import hookimpl

if TYPE_CHECKING:
    from backbones.hookspecs import Register

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.1"  # 1.1: it declares its own image processor

_PROCESSOR = {"PPLCNetImageProcessor": "backbones_pp_lcnet._processing:PPLCNetImageProcessor"}


@hookimpl
def register_backbones(register: Register) -> None:
    register(
        "pp_lcnet",
        config="backbones_pp_lcnet._config:PPLCNetConfig",
        model="backbones_pp_lcnet._model:PPLCNetBackbone",
        description="PP-LCNet (PP-LCNet: A Lightweight CPU Convolutional Neural Network, 2021)",
        # The PaddlePaddle/PP-LCNet_* checkpoints' preprocessor_config.json names it; also used when one names none.
        image_processor="PPLCNetImageProcessor",
        image_processor_classes=_PROCESSOR,
    )
    # V3 and V4 have no checkpoint of their own: they ship inside PP-OCR models, whose preprocessor configs
    # name the OCR pipelines' processors. Like transformers, they declare no fallback.
    register(
        "pp_lcnet_v3",
        config="backbones_pp_lcnet._config:PPLCNetV3Config",
        model="backbones_pp_lcnet._model:PPLCNetV3Backbone",
        description="PP-LCNetV3 (the reparameterisable backbone of PP-OCRv5 mobile)",
    )
    register(
        "pp_lcnet_v4",
        config="backbones_pp_lcnet._config:PPLCNetV4Config",
        model="backbones_pp_lcnet._model:PPLCNetV4Backbone",
        description="PP-LCNetV4 (the backbone of PP-OCRv6)",
    )
