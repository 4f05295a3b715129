"""Entry point: registers ``toynet`` lazily."""

from backbones import hookimpl

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.0"


@hookimpl
def register_backbones(register):
    register(
        "toynet",
        config="backbones_toynet.model:ToyNetConfig",
        model="backbones_toynet.model:ToyNetBackbone",
        aliases=["toy-net"],
        description="ToyNet (test plugin)",
    )
