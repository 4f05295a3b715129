"""The conformance kit declared for a vision transformer (public: ``backbones.testing.vit``).

A ViT embeds an image with a patch projection: a stride-``p`` convolution without padding, so a map is
``size // p`` wide (the rows and columns that do not fill a patch are dropped). Its tests declare a config
rather than write ``make_config``::

    from backbones.testing.vit import ViTConformance

    class TestPixioConformance(ViTConformance):
        model_type = "pixio"
        config_class = PixioConfig
        config = {"hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2, "patch_size": 8}

    class TestPixioSiluConformance(TestPixioConformance):
        deployment_checks = False
        config = {**TestPixioConformance.config, "hidden_act": "silu"}
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from .. import Backbone, BackboneConfig
from . import BackboneConformance, TransformersParity

__all__ = ["SMALL_VIT", "TINY_VIT", "ViTConformance", "ViTParity"]

TINY_VIT: Mapping[str, Any] = MappingProxyType(
    {"hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
)
"""The conformance kit's ViT size (DINOv2's field names): 16 wide, 3 layers of 2 heads, a 4x4 grid of 8-pixel
patches at 32x32. Spread it into a plugin's own config: ``{**TINY_VIT, "num_register_tokens": 2}``."""

SMALL_VIT: Mapping[str, Any] = MappingProxyType(
    {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 32, "patch_size": 8}
)
"""The parity size of the same family: 32 wide, 4 layers of 4 heads, the same 4x4 grid of positions."""


class ViTConformance(BackboneConformance):
    """:class:`~backbones.testing.BackboneConformance` of a patch-embedding vision transformer.

    Its maps are ``size // patch_size`` wide (``spatial_rounding = "floor"``), and ``make_config`` builds
    ``config_class`` from ``config``, the overrides replacing its entries.

    Class attributes:
        config_class: The config class of the tested model.
        config: Its small config arguments.
    """

    spatial_rounding: ClassVar[str] = "floor"
    config_class: ClassVar[type[BackboneConfig]]
    config: ClassVar[dict[str, Any]] = {}

    def make_config(self, **overrides: Any) -> BackboneConfig:
        """``config_class(**{**config, **overrides})``."""
        return self.config_class(**{**self.config, **overrides})


class ViTParity(TransformersParity):
    """:class:`~backbones.testing.TransformersParity` of a ViT whose backbone leaves out weights that
    transformers' holds: a mask token that only masked pre-training uses, and the final norm when
    ``apply_layernorm`` is off (transformers builds it all the same, and never runs it).

    Such keys are unused when our backbone loads transformers' checkpoint, and transformers reports them missing
    (and initialises them) when it loads ours; their names are the same in both directions.

    Class attributes:
        never_built_keys: The keys of weights our backbone never builds, whatever the variant.
        final_norm_keys: The keys of the final norm, not built by a variant with ``apply_layernorm=False``.
    """

    never_built_keys: ClassVar[tuple[str, ...]] = ()
    final_norm_keys: ClassVar[tuple[str, ...]] = ()

    def never_built(self, variant: str) -> list[str]:
        """The keys of transformers' weights our backbone of ``variant`` does not build, sorted."""
        keys = list(self.never_built_keys)
        if not self.options(variant).get("apply_layernorm", True):
            keys += self.final_norm_keys
        return sorted(keys)

    def expected_backbone_unused(self, variant: str, model: Backbone) -> list[str]:
        """The never-built keys (see :meth:`never_built`)."""
        return self.never_built(variant)

    def expected_round_trip_missing(self, variant: str) -> list[str]:
        """The never-built keys (see :meth:`never_built`)."""
        return self.never_built(variant)
