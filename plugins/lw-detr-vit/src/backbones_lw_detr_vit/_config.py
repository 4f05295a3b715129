"""Configuration of LW-DETR's ViT. Field names and defaults follow transformers' LwDetrViTConfig."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field, model_validator

from backbones.validation import image_pair
from backbones_vitdet.configs import WindowedViTConfig

__all__ = ["LwDetrViTConfig"]


class LwDetrViTConfig(WindowedViTConfig):
    """Configuration of LW-DETR's plain ViT; the defaults are transformers' (ViT-B/16, 16 windows).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = num_hidden_layers``: the stem is the
    patch embeddings (plus absolute positions), ``stageK`` the output of transformer layer ``K``. Every
    stage has ``hidden_size`` channels and stride ``patch_size``.

    The patch grid is cut into ``sqrt(num_windows) x sqrt(num_windows)`` windows (a fixed count, not a fixed
    size): the layers of ``window_block_indices`` attend within each window, the others over the whole map.
    An input's patch grid (``height // patch_size`` by ``width // patch_size``) must therefore be a multiple
    of ``sqrt(num_windows)`` on both sides.

    Args:
        hidden_size: Width of the token embeddings (the channels of every feature map).
        num_hidden_layers: Number of transformer layers.
        num_attention_heads: Attention heads per layer; must divide ``hidden_size``.
        mlp_ratio: Hidden width of each MLP relative to ``hidden_size`` (an int, as transformers).
        hidden_act: Activation of the MLPs (a name of :data:`backbones.activations.ACTIVATIONS`).
        dropout_prob: Dropout of the attention probabilities and inside the MLPs (training only).
        initializer_range: Standard deviation of the truncated-normal initialisation.
        layer_norm_eps: Epsilon of the layer norms.
        image_size: The detector's input size (one int or ``(height, width)``). It sizes nothing; transformers
            only checks it against ``num_windows``, and so does this config.
        pretrain_image_size: Pre-training image size; sizes the (square) absolute position table, which is
            resampled bicubically to the patch grid of every input.
        patch_size: Side of the square patches (the stride of every stage).
        num_channels: Input channels.
        qkv_bias: Whether the query and value projections have a bias (the key projection never has one).
        window_block_indices: Layers (0-based) that attend within windows; the others attend globally.
        use_absolute_position_embeddings: Add learned absolute position embeddings to the patches.
        cae_init_values: Initial value of the per-channel layer-scale factors ``gamma_1`` and ``gamma_2``
            (LW-DETR's ViT is pre-trained with CAE).
        num_windows: Windows the patch grid is cut into; a perfect square (1, 4, 9, 16, ...).
    """

    model_type: ClassVar[str] = "lw_detr_vit"
    reference_config_keys: ClassVar[frozenset[str]] = frozenset({"num_windows_side"})
    """Keys of transformers' config.json without effect here: transformers' value derived from num_windows."""

    mlp_ratio: int = Field(default=4, ge=1)
    image_size: int | tuple[int, int] = 256
    cae_init_values: float = 0.1
    num_windows: int = Field(default=16, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data: Any) -> Any:
        # transformers writes num_windows_side (derived from num_windows) into config.json; it is recomputed.
        if isinstance(data, dict) and "num_windows_side" in data:
            data = {key: value for key, value in data.items() if key != "num_windows_side"}
        return data

    @model_validator(mode="after")
    def _check_shapes(self) -> LwDetrViTConfig:
        side = math.isqrt(self.num_windows)
        if side * side != self.num_windows:
            raise ValueError(
                f"num_windows={self.num_windows} is not a perfect square; the patch grid is cut into "
                "sqrt(num_windows) windows per side, so use 1, 4, 9, 16, 25, ..."
            )
        # transformers' rule (LwDetrViTConfig.validate_architecture): image_size / num_windows is a multiple
        # of sqrt(num_windows), i.e. image_size is a multiple of num_windows * sqrt(num_windows).
        step = self.num_windows * side
        if any(size % step for size in image_pair(self.image_size)):
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of num_windows * sqrt(num_windows) = {step} "
                f"(transformers' LwDetrViTConfig rule), e.g. {step * max(1, round(image_pair(self.image_size)[0] / step))}"
            )
        return self

    @property
    def num_windows_side(self) -> int:
        """Windows per side of the patch grid: ``sqrt(num_windows)``."""
        return math.isqrt(self.num_windows)
