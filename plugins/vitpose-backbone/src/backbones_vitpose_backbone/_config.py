"""Configuration of the ViTPose backbone. Field names and defaults follow transformers' VitPoseBackboneConfig
(ViTPose-B: 12 layers of width 768, 256x192 crops, 16-pixel patches, one expert)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_serializer, model_validator

from backbones.validation import image_pair
from backbones_dinov2.configs import ViTLayerConfig

__all__ = ["PATCH_PADDING", "VitPoseBackboneConfig"]

PATCH_PADDING = 2
"""Pixels of zero padding on every side of the patch projection (ViTPose's, whatever the patch size)."""


class VitPoseBackboneConfig(ViTLayerConfig):
    """Configuration of a ViTPose backbone; the defaults describe ViTPose-B as transformers'
    ``VitPoseBackboneConfig`` does.

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = num_hidden_layers``: the stem is the patch
    embeddings plus position embeddings, ``stageK`` the output of transformer layer ``K``. Every stage has
    ``hidden_size`` channels and stride ``patch_size``.

    Args:
        image_size: Crop size the position embeddings were trained at (one int or ``(height, width)``). Other
            input sizes get the position table resampled bicubically (transformers refuses them).
        patch_size: Side of the square patches (``p`` or ``[p, p]``). The projection pads 2 pixels on each side,
            so it must be at least 5 for the patch grid to be ``size // patch_size``.
        num_channels: Input channels.
        hidden_size: Token width (the channels of every feature map).
        num_hidden_layers: Transformer layers.
        num_attention_heads: Attention heads per layer; must divide ``hidden_size``.
        mlp_ratio: Hidden width of each MLP relative to ``hidden_size``.
        num_experts: Experts of the mixture-of-experts MLP (ViTPose+); 1 is the plain MLP. With more than one,
            ``forward`` needs ``dataset_index`` (one expert per image).
        part_features: Output channels of each expert (the last ``part_features`` channels of the MLP's
            output; the shared ``fc2`` makes the others). Only used when ``num_experts > 1``, then in
            ``[1, hidden_size - 1]``.
        hidden_act: Activation of the MLP.
        hidden_dropout_prob: Dropout on the embeddings and the attention output (training only).
        attention_probs_dropout_prob: Dropout on attention probabilities (training only).
        initializer_range: Standard deviation of the truncated-normal initialisation.
        layer_norm_eps: Epsilon of every layer norm.
        qkv_bias: Whether the query, key and value projections have a bias.
    """

    model_type: ClassVar[str] = "vitpose_backbone"

    image_size: int | tuple[int, int] = (256, 192)
    mlp_ratio: int = Field(default=4, ge=1)
    num_experts: int = Field(default=1, ge=1)
    part_features: int = Field(default=256, ge=1)
    layer_norm_eps: float = 1e-12

    @model_validator(mode="after")
    def _check_shapes(self) -> VitPoseBackboneConfig:
        patch = self.patch_size
        if patch <= 2 * PATCH_PADDING:
            raise ValueError(
                f"patch_size={patch} is too small: ViTPose's patch projection pads {PATCH_PADDING} pixels on each "
                f"side, so patches under {2 * PATCH_PADDING + 1} pixels add a row and a column of patches that the "
                f"position embeddings do not cover; use patch_size >= {2 * PATCH_PADDING + 1} (16 in the released "
                "models)"
            )
        for side, name in zip(image_pair(self.image_size), ("height", "width")):
            if side < patch:
                raise ValueError(f"image_size {name} {side} is smaller than patch_size {patch}; use at least {patch}")
            if side % patch >= patch - 2 * PATCH_PADDING:
                raise ValueError(
                    f"image_size {name} {side} leaves {side % patch} pixels after {side // patch} patches of {patch}, "
                    f"and the padded projection turns them into one more patch that the position embeddings do "
                    f"not cover; use a {name} whose remainder modulo patch_size is below "
                    f"{patch - 2 * PATCH_PADDING} (e.g. {side // patch * patch})"
                )
        if self.num_experts > 1 and not 1 <= self.part_features < self.hidden_size:
            raise ValueError(
                f"part_features={self.part_features} must be in [1, {self.hidden_size - 1}] (below "
                f"hidden_size={self.hidden_size}) when num_experts={self.num_experts} > 1: each expert makes "
                "part_features channels and the shared fc2 the other hidden_size - part_features"
            )
        return self

    @field_serializer("patch_size")
    def _patch_pair(self, patch_size: int) -> list[int]:
        # Written as transformers writes it: its pose model indexes patch_size[0] and patch_size[1].
        return [patch_size, patch_size]

    @property
    def position_grid(self) -> tuple[int, int]:
        """``(rows, columns)`` of the trained position embeddings: ``image_size // patch_size``."""
        height, width = image_pair(self.image_size)
        return height // self.patch_size, width // self.patch_size
