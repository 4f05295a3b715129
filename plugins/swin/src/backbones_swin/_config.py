"""Configuration of Swin. Field names and defaults follow transformers' SwinConfig (swin-tiny).

:class:`SwinFamilyConfig` holds the fields Swin shares with its variants; backbones-swinv2 and
backbones-maskformer-swin build their configs on it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, model_validator

from backbones import BackboneConfig
from backbones.validation import ActivationName, check_stage_heads, numbered_stage_names, square_patch

# Activations the MLP supports, by the names transformers' configs use.
# Values transformers derives from the fields and writes to config.json; recomputed, never read back.
_DERIVED_FIELDS = ("hidden_size", "num_layers")


class SwinFamilyConfig(BackboneConfig):
    """Fields shared by Swin and its variants (a base class; use a concrete subclass such as :class:`SwinConfig`).

    The defaults describe swin-tiny.

    Args:
        image_size: Pre-training image size (height and width, or one int); only sizes the absolute
            position embeddings.
        patch_size: Side of the square patches the stem embeds (the stride of the stem).
        num_channels: Input channels.
        embed_dim: Channels of the patch embeddings; each stage after the first doubles them.
        depths: Number of transformer blocks in each stage.
        num_heads: Attention heads in each stage.
        window_size: Side of the square attention windows.
        mlp_ratio: Hidden width of each block's MLP, relative to its input width.
        qkv_bias: Whether the query, key and value projections have a bias.
        hidden_dropout_prob: Dropout on embeddings, attention outputs and MLP outputs (training only).
        attention_probs_dropout_prob: Dropout on attention probabilities (training only).
        drop_path_rate: Stochastic-depth rate of the deepest block; it grows linearly from 0.
        hidden_act: Activation of the MLP (a name of :data:`backbones.activations.ACTIVATIONS`).
        use_absolute_embeddings: Whether to add learned absolute position embeddings to the patches.
        initializer_range: Standard deviation of the normal initialisation of linear and conv weights.
        layer_norm_eps: Epsilon of the layer norms inside the transformer blocks.
    """

    image_size: int | tuple[int, int] = 224
    patch_size: Annotated[int, square_patch(4)] = Field(default=4, ge=1)
    num_channels: int = Field(default=3, ge=1)
    embed_dim: int = Field(default=96, ge=1)
    depths: list[int] = [2, 2, 6, 2]
    num_heads: list[int] = [3, 6, 12, 24]
    window_size: int = Field(default=7, ge=1)
    mlp_ratio: float = Field(default=4.0, gt=0)
    qkv_bias: bool = True
    hidden_dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    attention_probs_dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    drop_path_rate: float = Field(default=0.1, ge=0, lt=1)
    hidden_act: ActivationName = "gelu"
    use_absolute_embeddings: bool = False
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5

    # Written to config.json as transformers writes them, so tools that read the file directly find them.
    derived_config_keys: ClassVar[tuple[str, ...]] = _DERIVED_FIELDS
    absolute_embeddings_refused_by: ClassVar[str | None] = None
    """The transformers architecture whose absolute position embeddings cannot be used, which a subclass names
    when it refuses ``use_absolute_embeddings=True``: that architecture keeps one position embedding more than
    there are patches and its forward fails on them, so none of its checkpoints uses them. ``None``: supported."""

    def __init__(self, /, **data: Any) -> None:
        for name in _DERIVED_FIELDS:
            data.pop(name, None)
        super().__init__(**data)

    @model_validator(mode="after")
    def _check_stages(self) -> SwinFamilyConfig:
        if not self.depths or any(depth < 1 for depth in self.depths):
            raise ValueError(f"depths must list at least one stage, each with one block or more; got {self.depths}")
        check_stage_heads(self.embed_dim, self.depths, self.num_heads)
        architecture = self.absolute_embeddings_refused_by
        if self.use_absolute_embeddings and architecture is not None:
            raise ValueError(
                f"use_absolute_embeddings=True is not supported: transformers' {architecture} keeps one position "
                f"embedding more than there are patches and its forward fails on them, so no {architecture} "
                "checkpoint uses them; set use_absolute_embeddings=False"
            )
        return self

    @property
    def stage_names(self) -> list[str]:
        return numbered_stage_names(len(self.depths))

    @property
    def num_layers(self) -> int:
        """Number of stages (transformers' derived ``num_layers``)."""
        return len(self.depths)

    @property
    def hidden_size(self) -> int:
        """Channels of the last stage (transformers' derived ``hidden_size``)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)


class SwinConfig(SwinFamilyConfig):
    """Configuration of a Swin Transformer backbone; the defaults describe swin-tiny.

    Args:
        encoder_stride: Upsampling factor of transformers' masked-image-modeling decoder (kept for
            compatibility; unused by the backbone).
        **fields: See :class:`SwinFamilyConfig`.
    """

    model_type: ClassVar[str] = "swin"
    reference_config_keys: ClassVar[frozenset[str]] = frozenset({"hidden_size", "num_layers"})
    """Keys of transformers' config.json without effect here: transformers' values derived from embed_dim and depths."""

    encoder_stride: int = 32
