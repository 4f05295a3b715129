"""Configuration of RT-DETR's ResNet-vd. Field names and defaults follow transformers' RTDetrResNetConfig
(ResNet-50-vd), plus the RT-DETR training fields ``freeze_at`` and ``freeze_norm``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import model_validator

from backbones_resnet import ResNetConfig

__all__ = ["RTDetrResNetConfig"]


class RTDetrResNetConfig(ResNetConfig):
    """Configuration of RT-DETR's ResNet-vd backbone (defaults: ResNet-50-vd).

    The fields and stages of :class:`backbones_resnet.ResNetConfig` (``["stem", "stage1", ...]``), with
    ResNet-vd's meaning: the stem is three 3x3 convolutions (``embedding_size // 2``,
    ``embedding_size // 2``, ``embedding_size`` channels, the first of stride 2, each followed by
    ``hidden_act``) and a stride-2 max-pool; a downsampling shortcut average-pools before its 1x1
    projection; the first block of every basic (ResNet-18/34) stage always has a projection shortcut.

    Args:
        freeze_at: RT-DETR's ``PResNet`` convention: ``-1`` freezes nothing; ``k >= 0`` freezes the stem
            and the first ``k`` stages (RT-DETR's ResNet-50/101 configs use ``0``: the stem only). Applied
            when the model is built, as ``model.freeze_stages(k + 1)``.
        freeze_norm: Replace every BatchNorm by a frozen one when the model is built
            (``model.freeze_batch_norm()``; RT-DETR's configs use ``true`` for ResNet-50/101).
    """

    model_type: ClassVar[str] = "rt_detr_resnet"

    freeze_at: int = -1
    freeze_norm: bool = False

    @model_validator(mode="after")
    def _buildable(self) -> RTDetrResNetConfig:
        if self.embedding_size < 2:
            raise ValueError(
                f"embedding_size={self.embedding_size} must be at least 2 (the stem's first convolutions have "
                "embedding_size // 2 channels)"
            )
        if self.layer_type == "bottleneck":
            for index, size in enumerate(self.hidden_sizes):
                if size < 4:
                    raise ValueError(
                        f"hidden_sizes[{index}]={size} must be at least 4 with layer_type='bottleneck' "
                        "(a bottleneck block's middle is hidden_sizes // 4 wide)"
                    )
        elif self.embedding_size != self.hidden_sizes[0] and not self.downsample_in_first_stage:
            raise ValueError(
                f"with layer_type='basic', hidden_sizes[0]={self.hidden_sizes[0]} must equal "
                f"embedding_size={self.embedding_size} unless downsample_in_first_stage is true: a shortcut "
                "that changes the width average-pools by 2, so the first stage would have to downsample too"
            )
        return self
