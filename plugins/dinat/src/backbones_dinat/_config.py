"""Configuration of DiNAT: NAT's fields plus a dilation per layer (transformers' DinatConfig, dinat-mini)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import model_validator

from backbones_nat import NatConfig


class DinatConfig(NatConfig):
    """Configuration of a Dilated Neighborhood Attention Transformer backbone; defaults describe dinat-mini.

    Every field of :class:`backbones_nat.NatConfig`, plus:

    Args:
        dilations: Dilation of every layer, one list per stage with one value per layer. A layer whose
            map is smaller than ``kernel_size * dilation`` pads it up to that size, as the reference does.
    """

    model_type: ClassVar[str] = "dinat"
    reference_config_keys: ClassVar[frozenset[str]] = frozenset({"hidden_size", "num_layers"})
    """Keys of transformers' config.json without effect here: transformers' values derived from embed_dim and depths."""

    dilations: list[list[int]] = [[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2], [1, 1, 1, 1, 1]]

    @model_validator(mode="after")
    def _check_dilations(self) -> DinatConfig:
        if len(self.dilations) != len(self.depths):
            raise ValueError(
                f"dilations has {len(self.dilations)} entries but depths has {len(self.depths)}; "
                "give dilations one list per stage, with one dilation per layer"
            )
        for index, (stage, depth) in enumerate(zip(self.dilations, self.depths)):
            if len(stage) != depth:
                raise ValueError(
                    f"dilations[{index}] has {len(stage)} entries but depths[{index}] = {depth}; "
                    "give one dilation per layer of the stage"
                )
            for layer, dilation in enumerate(stage):
                if dilation < 1:
                    raise ValueError(f"dilations[{index}][{layer}]={dilation} must be a positive integer")
        return self

    @property
    def layer_dilations(self) -> list[list[int]]:
        return [list(stage) for stage in self.dilations]
