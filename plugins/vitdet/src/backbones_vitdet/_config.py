"""Configuration of ViTDet. Field names and defaults follow transformers' VitDetConfig."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from backbones import BackboneConfig
from backbones.activations import ACTIVATIONS, check_activation
from backbones.validation import check_heads_divide, square_patch_size

__all__ = ["ACTIVATIONS", "VitDetConfig"]

"""Supported values of ``hidden_act``."""


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return value if isinstance(value, tuple) else (value, value)


class VitDetConfig(BackboneConfig):
    """Configuration of a ViTDet backbone; the defaults describe ViT-B/16 at 224 pixels.

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = num_hidden_layers``: the stem is the
    patch embeddings (plus absolute positions), ``stageK`` the output of transformer layer ``K``. Every
    stage has ``hidden_size`` channels and stride ``patch_size``.

    Args:
        hidden_size: Width of the token embeddings (the channels of every feature map).
        num_hidden_layers: Number of transformer layers.
        num_attention_heads: Attention heads per layer; must divide ``hidden_size``.
        mlp_ratio: Hidden width of each MLP relative to ``hidden_size``.
        hidden_act: Activation of the MLPs and residual conv blocks (one of :data:`ACTIVATIONS`).
        dropout_prob: Dropout inside the MLPs (training only).
        initializer_range: Standard deviation of the truncated-normal initialisation.
        layer_norm_eps: Epsilon of the transformer layers' layer norms.
        image_size: Fine-tuning image size (one int or ``(height, width)``); sizes the relative position
            tables of the global-attention layers, which are resampled for other inputs.
        pretrain_image_size: Pre-training image size; sizes the (square) absolute position table, which
            is resampled to the patch grid of every input.
        patch_size: Side of the square patches (the stride of every stage).
        num_channels: Input channels.
        qkv_bias: Whether the fused query/key/value projection has a bias.
        drop_path_rate: Stochastic-depth rate of the deepest layer; it grows linearly from 0 (training only).
        window_block_indices: Layers (0-based) that attend within ``window_size`` windows; the others
            attend globally.
        residual_block_indices: Layers (0-based) followed by a residual 1x1-3x3-1x1 convolution block.
        use_absolute_position_embeddings: Add learned absolute position embeddings to the patches.
        use_relative_position_embeddings: Add decomposed relative position terms to the attention scores.
        window_size: Side of the square attention windows (0: the listed layers attend globally too, as
            in transformers).
    """

    model_type: ClassVar[str] = "vitdet"

    hidden_size: int = Field(default=768, ge=1)
    num_hidden_layers: int = Field(default=12, ge=1)
    num_attention_heads: int = Field(default=12, ge=1)
    mlp_ratio: int | float = 4
    hidden_act: str = "gelu"
    dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6
    image_size: int | tuple[int, int] = 224
    pretrain_image_size: int | tuple[int, int] = 224
    patch_size: int = Field(default=16, ge=1)
    num_channels: int = Field(default=3, ge=1)
    qkv_bias: bool = True
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    window_block_indices: list[int] = []
    residual_block_indices: list[int] = []
    use_absolute_position_embeddings: bool = True
    use_relative_position_embeddings: bool = False
    window_size: int = Field(default=0, ge=0)

    @field_validator("patch_size", mode="before")
    @classmethod
    def _square_patches(cls, value: Any) -> Any:
        return square_patch_size(value, example=16)

    @field_validator("hidden_act")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        return check_activation(value)

    @field_validator("mlp_ratio")
    @classmethod
    def _positive_ratio(cls, value: int | float) -> int | float:
        if not value > 0:
            raise ValueError(f"mlp_ratio must be positive (the MLP is mlp_ratio * hidden_size wide), got {value}")
        return value

    @model_validator(mode="after")
    def _check_shapes(self) -> VitDetConfig:
        check_heads_divide(self.hidden_size, self.num_attention_heads)
        for name in ("window_block_indices", "residual_block_indices"):
            outside = [index for index in getattr(self, name) if not 0 <= index < self.num_hidden_layers]
            if outside:
                raise ValueError(
                    f"{name} {outside} are not layers of this model; use 0-based layer indices "
                    f"from 0 to num_hidden_layers - 1 = {self.num_hidden_layers - 1}"
                )
        patch = self.patch_size
        for name in ("image_size", "pretrain_image_size"):
            height, width = _pair(getattr(self, name))
            if height < patch or width < patch:
                raise ValueError(
                    f"{name} {getattr(self, name)} is smaller than patch_size {patch}; set {name} >= patch_size"
                )
        height, width = _pair(self.pretrain_image_size)
        if self.use_absolute_position_embeddings and height // patch != width // patch:
            raise ValueError(
                f"pretrain_image_size {self.pretrain_image_size} gives a {height // patch}x{width // patch} grid of "
                "patches, but the absolute position table is a square grid; use a square pretrain_image_size"
            )
        if int(self.hidden_size * self.mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio={self.mlp_ratio} leaves the MLP with no hidden units; raise mlp_ratio")
        return self

    @property
    def stage_names(self) -> list[str]:
        return ["stem"] + [f"stage{index}" for index in range(1, self.num_hidden_layers + 1)]

    @property
    def position_grid(self) -> int:
        """Side of the square grid of absolute position embeddings (``pretrain_image_size // patch_size``)."""
        return _pair(self.pretrain_image_size)[0] // self.patch_size

    @property
    def global_attention_grid(self) -> tuple[int, int]:
        """Patch grid of ``image_size``: the size of the global layers' relative position tables."""
        height, width = _pair(self.image_size)
        return height // self.patch_size, width // self.patch_size
