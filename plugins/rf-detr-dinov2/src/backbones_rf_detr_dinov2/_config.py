"""Configuration of RF-DETR's DINOv2: DINOv2's, plus the window count and which layers attend in windows, with
transformers' RfDetrDinov2Config defaults (ViT-B/14, 4x4 windows)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from backbones_dinov2 import Dinov2Config

__all__ = ["RfDetrDinov2Config"]


class RfDetrDinov2Config(Dinov2Config):
    """Configuration of RF-DETR's DINOv2 backbone with windowed attention; the defaults describe the base size
    (ViT-B/14) with 4x4 windows, as transformers' ``RfDetrDinov2Config`` does.

    Every field of :class:`backbones_dinov2.Dinov2Config` keeps its meaning and its checks (heads dividing
    the width, a square grid of pre-training positions, ...); the additions are:

    Args:
        num_windows: Windows per side: the patch grid is cut into ``num_windows x num_windows`` windows, and a
            windowed layer attends within each window only (each window gets its own copy of the class
            token). 1 turns windowing off. The patch grid of every input must then divide into it: height and
            width in patches must be multiples of ``num_windows``.
        window_block_indexes: The transformer layers (0-based) that attend within windows; the others attend
            over the whole image. Left out (``None``), it is derived once, when the config is made, from the
            selected stages as transformers and RF-DETR do: every layer up to the deepest selected stage's
            index, except the selected indices themselves (so with ``out_indices=[2, 5, 8, 11]``, layers 2, 5,
            8 and 11 are global), taking the indices as given (a negative last index, as in
            ``out_indices=[-1]``, leaves every layer global). It is then written to ``config.json`` and
            fixed: selecting other stages later, or when loading, does not change the architecture.
    """

    model_type: ClassVar[str] = "rf_detr_dinov2"

    num_windows: int = Field(default=4, ge=1)
    window_block_indexes: list[int] | None = None

    def __init__(self, /, **data: Any) -> None:
        super().__init__(**data)
        if self.window_block_indexes is None:
            # transformers derives it from the selection once, in its __post_init__, from the indices as given:
            # a negative last index (out_indices=[-1]) leaves no layer windowed. The same rule here.
            selected = self.out_indices
            self.window_block_indexes = [index for index in range(selected[-1] + 1) if index not in selected]

    @model_validator(mode="after")
    def _check_windows(self) -> RfDetrDinov2Config:
        layers = self.num_hidden_layers
        indexes = self.window_block_indexes
        if indexes is not None:
            wrong = [index for index in indexes if not 0 <= index < layers]
            if wrong:
                raise ValueError(
                    f"window_block_indexes={indexes} names layers {wrong} that do not exist; layer indexes are "
                    f"0-based, from 0 to {layers - 1} (num_hidden_layers={layers})"
                )
            if len(set(indexes)) != len(indexes):
                raise ValueError(f"window_block_indexes={indexes} names a layer twice; list each layer once")
        return self

    @property
    def global_layers(self) -> list[bool]:
        """Per transformer layer: whether it attends over the whole image (else within windows)."""
        windowed = set(self.window_block_indexes or ())
        return [index not in windowed for index in range(self.num_hidden_layers)]
