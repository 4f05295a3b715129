"""Configuration of ConvNeXt V2. Field names and defaults follow transformers' ConvNextV2Config
(convnextv2-tiny-1k-224); every field is shared with ConvNeXt and defined in backbones-convnext."""

from __future__ import annotations

from typing import ClassVar

from backbones_convnext import ConvNextFamilyConfig

__all__ = ["ConvNextV2Config"]


class ConvNextV2Config(ConvNextFamilyConfig):
    """Configuration of a ConvNeXt V2 backbone (defaults: ConvNeXt V2-T, as transformers' ``ConvNextV2Config()``).

    The fields are those of :class:`backbones_convnext.ConvNextFamilyConfig`: ConvNeXt's without
    ``layer_scale_init_value``, since V2 blocks have no layer scale (GRN takes its place).
    """

    model_type: ClassVar[str] = "convnextv2"
    reference_config_keys: ClassVar[frozenset[str]] = frozenset({"num_stages"})
    """Keys of transformers' config.json without effect here: transformers' count of depths."""
