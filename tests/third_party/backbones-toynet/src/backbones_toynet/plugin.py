"""Entry point: registers ``toynet`` lazily."""

from backbones import hookimpl


@hookimpl
def register_backbones(register):
    register(
        "toynet",
        config="backbones_toynet.model:ToyNetConfig",
        model="backbones_toynet.model:ToyNetBackbone",
        aliases=["toy-net"],
        description="ToyNet (test plugin)",
    )
