"""Configuration of Swin. Field names and defaults follow transformers' SwinConfig (swin-tiny).

:class:`SwinFamilyConfig` holds the fields Swin shares with its variants; backbones-swinv2 and
backbones-maskformer-swin build their configs on it.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from backbones.validation import HierarchicalTransformerConfig, square_patch


class SwinFamilyConfig(HierarchicalTransformerConfig):
    """Fields shared by Swin and its variants (a base class; use a concrete subclass such as :class:`SwinConfig`).

    The defaults describe swin-tiny. Stage ``i`` has ``depths[i]`` blocks at ``embed_dim * 2**i`` channels; the
    fields common to hierarchical transformers, their rules and the derived ``hidden_size`` and ``num_layers``
    are those of :class:`backbones.validation.HierarchicalTransformerConfig`.

    Args:
        image_size: Pre-training image size (height and width, or one int); only sizes the absolute
            position embeddings.
        patch_size: Side of the square patches the stem embeds (the stride of the stem).
        embed_dim: Channels of the patch embeddings; each stage after the first doubles them.
        depths: Number of transformer blocks in each stage.
        num_heads: Attention heads in each stage.
        window_size: Side of the square attention windows.
        mlp_ratio: Hidden width of each block's MLP, relative to its input width.
        use_absolute_embeddings: Whether to add learned absolute position embeddings to the patches.
        **fields: ``num_channels``, ``qkv_bias``, ``hidden_dropout_prob`` (here also on the attention outputs),
            ``attention_probs_dropout_prob``, ``drop_path_rate``, ``hidden_act``, ``initializer_range`` and
            ``layer_norm_eps``, as :class:`~backbones.validation.HierarchicalTransformerConfig` documents them.
    """

    image_size: int | tuple[int, int] = 224
    patch_size: Annotated[int, square_patch(4)] = Field(default=4, ge=1)
    embed_dim: int = Field(default=96, ge=1)
    depths: list[int] = [2, 2, 6, 2]
    num_heads: list[int] = [3, 6, 12, 24]
    window_size: int = Field(default=7, ge=1)
    mlp_ratio: float = Field(default=4.0, gt=0)
    use_absolute_embeddings: bool = False

    absolute_embeddings_refused_by: ClassVar[str | None] = None
    """The transformers architecture whose absolute position embeddings cannot be used, which a subclass names
    when it refuses ``use_absolute_embeddings=True``: that architecture keeps one position embedding more than
    there are patches and its forward fails on them, so none of its checkpoints uses them. ``None``: supported."""

    @model_validator(mode="after")
    def _check_absolute_embeddings(self) -> SwinFamilyConfig:
        architecture = self.absolute_embeddings_refused_by
        if self.use_absolute_embeddings and architecture is not None:
            raise ValueError(
                f"use_absolute_embeddings=True is not supported: transformers' {architecture} keeps one position "
                f"embedding more than there are patches and its forward fails on them, so no {architecture} "
                "checkpoint uses them; set use_absolute_embeddings=False"
            )
        return self


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
