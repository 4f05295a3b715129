"""Entry point: registers ``toynet`` lazily."""

from backbones import hookimpl

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.1"  # 1.1: it declares its own image processor


@hookimpl
def register_backbones(register):
    register(
        "toynet",
        config="backbones_toynet.model:ToyNetConfig",
        model="backbones_toynet.model:ToyNetBackbone",
        aliases=["toy-net"],
        description="ToyNet (test plugin)",
        # Its checkpoints' preprocessor_config.json names this type, and it is the one used when they name none.
        image_processor="ToyNetImageProcessor",
        image_processor_classes={"ToyNetImageProcessor": "backbones_toynet.processing:ToyNetImageProcessor"},
    )
