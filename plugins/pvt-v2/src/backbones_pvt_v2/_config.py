"""Configuration of PVTv2. Field names and defaults follow transformers' PvtV2Config (pvt_v2_b0)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from backbones import BackboneConfig
from backbones.activations import check_activation

__all__ = ["PvtV2Config"]

# The fields with one entry per stage, in the order they are checked.
_PER_STAGE = ("depths", "hidden_sizes", "num_attention_heads", "sr_ratios", "patch_sizes", "strides", "mlp_ratios")


class PvtV2Config(BackboneConfig):
    """Configuration of a PVTv2 backbone; the defaults describe pvt_v2_b0, as transformers' ``PvtV2Config``.

    Every stage ``i`` starts with an overlapping patch embedding (a ``patch_sizes[i]`` convolution of stride
    ``strides[i]``, padded by ``patch_sizes[i] // 2``) and runs ``depths[i]`` transformer blocks whose keys
    and values come from a ``sr_ratios[i]`` times smaller map (spatial-reduction attention).

    Args:
        image_size: Pre-training image size (one int or ``[height, width]``); kept for compatibility, the
            backbone takes any size.
        num_channels: Input channels.
        num_encoder_blocks: Number of stages; every per-stage list has this many entries.
        depths: Transformer blocks in each stage (0 allowed: the stage is its patch embedding and norm).
        sr_ratios: Spatial-reduction ratio of each stage's attention: keys and values are computed from the
            map downsampled by a ``sr_ratio``-strided convolution (1: no reduction). Ignored with
            ``linear_attention``.
        hidden_sizes: Channels of each stage.
        patch_sizes: Kernel size of each stage's patch-embedding convolution.
        strides: Stride of each stage's patch-embedding convolution.
        num_attention_heads: Attention heads of each stage; each must divide its stage's width.
        mlp_ratios: Hidden width of each stage's MLP, relative to the stage's width.
        hidden_act: Activation inside the MLP (a name of :data:`backbones.activations.ACTIVATIONS`).
        hidden_dropout_prob: Dropout after the attention projection and in the MLP (training only).
        attention_probs_dropout_prob: Dropout on attention probabilities (training only).
        initializer_range: Standard deviation of the truncated-normal initialisation of linear weights.
        drop_path_rate: Stochastic-depth rate of the deepest block; it grows linearly from 0.
        layer_norm_eps: Epsilon of every layer norm.
        qkv_bias: Whether the query, key and value projections have a bias.
        linear_attention: PVTv2-Li: keys and values come from the map average-pooled to 7x7 (then a 1x1
            convolution, a layer norm and GELU) whatever the input size, and the MLP has a ReLU before its
            depth-wise convolution.
    """

    model_type: ClassVar[str] = "pvt_v2"

    image_size: int | tuple[int, int] = 224
    num_channels: int = Field(default=3, ge=1)
    num_encoder_blocks: int = Field(default=4, ge=1)
    depths: list[int] = [2, 2, 2, 2]
    sr_ratios: list[int] = [8, 4, 2, 1]
    hidden_sizes: list[int] = [32, 64, 160, 256]
    patch_sizes: list[int] = [7, 3, 3, 3]
    strides: list[int] = [4, 2, 2, 2]
    num_attention_heads: list[int] = [1, 2, 5, 8]
    mlp_ratios: list[int] = [8, 8, 4, 4]
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    attention_probs_dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    initializer_range: float = Field(default=0.02, ge=0)
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    layer_norm_eps: float = Field(default=1e-6, gt=0)
    qkv_bias: bool = True
    linear_attention: bool = False

    @field_validator("image_size", mode="before")
    @classmethod
    def _image_pair(cls, value: Any) -> Any:
        # transformers writes [224, 224]; one int means a square.
        if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
            return value[0]
        return value

    @model_validator(mode="after")
    def _check_stages(self) -> PvtV2Config:
        stages = self.num_encoder_blocks
        for name in _PER_STAGE:
            values = getattr(self, name)
            if len(values) != stages:
                raise ValueError(
                    f"{name} has {len(values)} entries but num_encoder_blocks={stages}; give {name} one value per "
                    "stage (or change num_encoder_blocks)"
                )
        for index, depth in enumerate(self.depths):
            if depth < 0:
                raise ValueError(f"depths[{index}]={depth} must be 0 or more (blocks in stage {index + 1})")
        for name in ("hidden_sizes", "sr_ratios", "patch_sizes", "strides", "mlp_ratios"):
            for index, value in enumerate(getattr(self, name)):
                if value < 1:
                    raise ValueError(f"{name}[{index}]={value} must be 1 or more")
        for index, (width, heads) in enumerate(zip(self.hidden_sizes, self.num_attention_heads)):
            if heads < 1 or width % heads:
                raise ValueError(
                    f"num_attention_heads[{index}]={heads} must be a positive divisor of stage {index + 1}'s width "
                    f"hidden_sizes[{index}]={width}; change num_attention_heads or hidden_sizes"
                )
        check_activation(self.hidden_act)
        return self

    @property
    def stage_names(self) -> list[str]:
        # transformers' PvtV2 exposes no stem: the first stage already holds a patch embedding.
        return [f"stage{index}" for index in range(1, len(self.depths) + 1)]

    @property
    def stage_reductions(self) -> list[int]:
        """Stride of each stage's map relative to the input: the running product of ``strides``."""
        reductions, total = [], 1
        for stride in self.strides:
            total *= stride
            reductions.append(total)
        return reductions

    def stage_sizes(self, size: int) -> list[int]:
        """The side of each stage's map for an input side of ``size`` pixels (a padded convolution per stage)."""
        sides = []
        for patch, stride in zip(self.patch_sizes, self.strides):
            size = (size + 2 * (patch // 2) - patch) // stride + 1
            sides.append(size)
        return sides

    @property
    def minimum_input_size(self) -> int:
        """The smallest input height and width this architecture runs on: every stage with blocks and a spatial
        reduction needs a map of at least ``sr_ratio`` pixels (its reduction convolution is not padded)."""
        needs = [
            ratio if depth and ratio > 1 and not self.linear_attention else 1
            for depth, ratio in zip(self.depths, self.sr_ratios)
        ]
        size = 1
        while any(side < need for side, need in zip(self.stage_sizes(size), needs)):
            size += 1
        return size

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        # Written as transformers writes it (a pair), so tools that read config.json directly find it.
        if isinstance(self.image_size, int):
            data["image_size"] = [self.image_size, self.image_size]
        else:
            data["image_size"] = list(self.image_size)
        return data
