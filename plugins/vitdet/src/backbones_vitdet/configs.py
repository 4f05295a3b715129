"""Public config base of ViTDet-style plain vision transformers (ViTDet, LW-DETR's ViT): the fields and checks
of their windowed layers and their absolute position table sized at the pre-training resolution, in one place.
Imports no torch, so a config can be built and listed without it.

Like :mod:`backbones_vitdet.blocks`, every name in ``__all__`` is part of backbones-vitdet's public API and
follows semantic versioning: within a ``0.1.x`` series no field is removed or renamed and no default changes,
so a dependent plugin pins ``backbones-vitdet>=0.1,<0.2``.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from backbones.validation import check_image_holds_patches, check_layer_indices, image_pair
from backbones_dinov2.configs import PlainViTConfig

__all__ = ["WindowedViTConfig"]


class WindowedViTConfig(PlainViTConfig):
    """Base of the config of a ViTDet-style plain vision transformer; it adds to
    :class:`backbones_dinov2.configs.PlainViTConfig` (whose fields it keeps):

    Args:
        dropout_prob: Dropout inside the MLPs (training only); a subclass says where else it applies.
        layer_norm_eps: Epsilon of the transformer layers' layer norms.
        pretrain_image_size: Pre-training image size; sizes the (square) absolute position table, which is
            resampled to the patch grid of every input.
        qkv_bias: Whether the query/key/value projections have a bias.
        window_block_indices: Layers (0-based) that attend within windows; the others attend globally.
        use_absolute_position_embeddings: Add learned absolute position embeddings to the patches.
    """

    dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    layer_norm_eps: float = 1e-6
    pretrain_image_size: int | tuple[int, int] = 224
    qkv_bias: bool = True
    window_block_indices: list[int] = []
    use_absolute_position_embeddings: bool = True

    @model_validator(mode="after")
    def _check_windows_and_positions(self) -> WindowedViTConfig:
        check_layer_indices("window_block_indices", self.window_block_indices, self.num_hidden_layers)
        check_image_holds_patches(
            "pretrain_image_size",
            self.pretrain_image_size,
            self.patch_size,
            square_grid=self.use_absolute_position_embeddings,
        )
        return self

    @property
    def position_grid(self) -> int:
        """Side of the square grid of absolute position embeddings (``pretrain_image_size // patch_size``)."""
        return image_pair(self.pretrain_image_size)[0] // self.patch_size
