"""Dilated Neighborhood Attention Transformer (DiNAT) backbone.

Paper: Hassani and Shi, "Dilated Neighborhood Attention Transformer" (2022),
https://arxiv.org/abs/2209.15001.

DiNAT is NAT whose layers attend over dilated neighbourhoods, alternating local layers (dilation 1)
with sparse, near-global ones. The layers, the attention op and the checkpoint layout are those of
``backbones-nat``; only the configuration (a dilation per layer) and the transformers class names differ.
Checkpoints of transformers' ``DinatBackbone`` and the trunk of ``DinatForImageClassification``
(``dinat.*``) load unchanged.
"""

from __future__ import annotations

from backbones_nat import NatBackbone

from ._config import DinatConfig

__all__ = ["DinatBackbone"]


class DinatBackbone(NatBackbone):
    """DiNAT feature extractor with transformers-compatible checkpoints (transformers' ``DinatBackbone``).

    Stages, outputs and layouts are those of :class:`backbones_nat.NatBackbone`; the config adds a dilation
    per layer.
    """

    config_class = DinatConfig
    lora_target_modules = ("query", "key", "value", "output.dense", "intermediate.dense")
    base_model_prefix = "dinat"  # trunk prefix in DinatForImageClassification checkpoints

    config: DinatConfig
