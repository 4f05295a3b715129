"""Configuration of ConvNeXt. Field names and defaults follow transformers' ConvNextConfig (convnext-tiny-224).

:class:`ConvNextFamilyConfig` holds what ConvNeXt and ConvNeXt V2 share; backbones-convnextv2 builds its
config on it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from backbones import BackboneConfig, ConfigError
from backbones.activations import ACTIVATIONS, check_activation
from backbones.validation import square_patch_size

__all__ = ["ACTIVATIONS", "ConvNextConfig", "ConvNextFamilyConfig"]

"""Supported values of ``hidden_act``."""


class ConvNextFamilyConfig(BackboneConfig):
    """Fields shared by ConvNeXt and ConvNeXt V2 (a base class; use a concrete subclass).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = len(depths)``; ``"stem"`` is the
    normalised patch embedding.

    Args:
        num_channels: Channels of the input images.
        patch_size: Side of the square patches the stem embeds (its stride); ``[p, p]`` is accepted.
        hidden_sizes: Channels of each stage.
        depths: Number of blocks in each stage; as long as ``hidden_sizes``.
        hidden_act: Activation between the two pointwise layers of a block (a name of :data:`ACTIVATIONS`).
        initializer_range: Standard deviation of the normal initialisation of convolution and linear weights.
        layer_norm_eps: Epsilon of transformers' final pooled LayerNorm, which a backbone never runs (kept
            for round trips; every norm of the backbone uses 1e-6, as transformers does).
        drop_path_rate: Stochastic-depth rate of the deepest block; it grows linearly from 0 (training only).
        image_size: Pre-training image size; informational, the backbone takes any size.

    ``num_stages`` (written to ``config.json`` as transformers does) is ``len(depths)``; a ``config.json``
    whose ``num_stages`` disagrees is rejected.
    """

    num_channels: int = Field(default=3, ge=1)
    patch_size: int = Field(default=4, ge=1)
    hidden_sizes: list[int] = [96, 192, 384, 768]
    depths: list[int] = [3, 3, 9, 3]
    hidden_act: str = "gelu"
    initializer_range: float = Field(default=0.02, ge=0)
    layer_norm_eps: float = 1e-12
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    image_size: int | list[int] = 224

    def __init__(self, /, **data: Any) -> None:
        num_stages = data.pop("num_stages", None)
        super().__init__(**data)
        if num_stages is not None and num_stages != len(self.depths):
            raise ConfigError(
                f"invalid {type(self).__name__}: num_stages={num_stages!r}: it must equal len(depths) = "
                f"{len(self.depths)}; drop num_stages (it is derived from depths) or give one depth per stage"
            )

    @field_validator("patch_size", mode="before")
    @classmethod
    def _square_patches(cls, value: Any) -> Any:
        return square_patch_size(value, example=4)

    @field_validator("hidden_act")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        return check_activation(value)

    @field_validator("hidden_sizes", "depths")
    @classmethod
    def _positive_per_stage(cls, value: list[int], info: Any) -> list[int]:
        if not value or any(item < 1 for item in value):
            raise ValueError(f"{info.field_name} must list one positive integer per stage, got {value}")
        return value

    @model_validator(mode="after")
    def _one_size_per_stage(self) -> ConvNextFamilyConfig:
        if len(self.hidden_sizes) != len(self.depths):
            raise ValueError(
                f"hidden_sizes has {len(self.hidden_sizes)} entries but depths has {len(self.depths)}; "
                "give one channel count and one depth per stage (len(hidden_sizes) == len(depths))"
            )
        return self

    @property
    def stage_names(self) -> list[str]:
        return ["stem"] + [f"stage{index}" for index in range(1, len(self.depths) + 1)]

    @property
    def num_stages(self) -> int:
        """Number of stages after the stem (transformers' ``num_stages``), ``len(depths)``."""
        return len(self.depths)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["num_stages"] = self.num_stages  # transformers reads it back to size its encoder
        return data


class ConvNextConfig(ConvNextFamilyConfig):
    """Configuration of a ConvNeXt backbone (defaults: ConvNeXt-T, as transformers' ``ConvNextConfig()``).

    Args:
        layer_scale_init_value: Initial value of each block's per-channel output scale; ``0`` (or less)
            builds blocks without one, as transformers does.
        **fields: See :class:`ConvNextFamilyConfig`.
    """

    model_type: ClassVar[str] = "convnext"

    layer_scale_init_value: float = 1e-6
