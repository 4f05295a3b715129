"""Configuration of HGNetV2. Field names and defaults follow transformers' HGNetV2Config.

transformers' defaults describe no published variant as a whole (its stage lists are HGNetV2-B4's
widths with B0-like depths); :data:`VARIANTS` holds the fields of the B0-B6 backbones of D-FINE and DEIM.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import field_validator, model_validator

from backbones import BackboneConfig
from backbones.validation import (
    ActivationName,
    DilatedStage,
    OutputStride,
    PositiveInts,
    check_stem_channels,
    dilate_stages,
    numbered_stage_names,
    odd_kernels,
)

__all__ = ["STAGE_LIST_FIELDS", "VARIANTS", "HGNetV2Config"]

STAGE_LIST_FIELDS = (
    "stage_in_channels",
    "stage_mid_channels",
    "stage_out_channels",
    "stage_num_blocks",
    "stage_downsample",
    "stage_downsample_strides",
    "stage_light_block",
    "stage_kernel_size",
    "stage_numb_of_layers",
)
"""Fields with one entry per stage; they must all have the same length."""


def _variant(
    stem: list[int], mid: list[int], out: list[int], blocks: list[int], *, layers: int, lab: bool
) -> dict[str, Any]:
    # Every B variant has four stages: each but the first downsamples, the last two use light blocks with
    # 5x5 kernels, every block has `layers` convolutions, and a stage reads what the one before it wrote.
    return {
        "stem_channels": stem,
        "stage_in_channels": [stem[-1], *out[:-1]],
        "stage_mid_channels": mid,
        "stage_out_channels": out,
        "stage_num_blocks": blocks,
        "stage_downsample": [False, True, True, True],
        "stage_light_block": [False, False, True, True],
        "stage_kernel_size": [3, 3, 5, 5],
        "stage_numb_of_layers": [layers] * 4,
        "use_learnable_affine_block": lab,
    }


# Columns as in the papers' tables: stem channels, mid and out channels of each stage, blocks per stage.
VARIANTS: dict[str, dict[str, Any]] = {
    "B0": _variant([3, 16, 16], [16, 32, 64, 128], [64, 256, 512, 1024], [1, 1, 2, 1], layers=3, lab=True),
    "B1": _variant([3, 24, 32], [32, 48, 96, 192], [64, 256, 512, 1024], [1, 1, 2, 1], layers=3, lab=True),
    "B2": _variant([3, 24, 32], [32, 64, 128, 256], [96, 384, 768, 1536], [1, 1, 3, 1], layers=4, lab=True),
    "B3": _variant([3, 24, 32], [32, 64, 128, 256], [128, 512, 1024, 2048], [1, 1, 3, 1], layers=5, lab=True),
    "B4": _variant([3, 32, 48], [48, 96, 192, 384], [128, 512, 1024, 2048], [1, 1, 3, 1], layers=6, lab=False),
    "B5": _variant([3, 32, 64], [64, 128, 256, 512], [128, 512, 1024, 2048], [1, 2, 5, 2], layers=6, lab=False),
    "B6": _variant([3, 48, 96], [96, 192, 384, 768], [192, 512, 1024, 2048], [2, 3, 6, 3], layers=6, lab=False),
}
"""Fields of the HGNetV2 B0-B6 backbones (D-FINE / DEIM / PaddleDetection ``arch`` names): pass one as
``HGNetV2Config(**VARIANTS["B4"])``. transformers' defaults are none of them (B4's widths, fewer blocks)."""


class HGNetV2Config(BackboneConfig):
    """Configuration of an HGNetV2 backbone (defaults: transformers' HGNetV2Config).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = len(stage_in_channels)``. The
    architecture is defined by ``stem_*`` and ``stage_*``; ``embedding_size``, ``hidden_sizes`` and
    ``depths`` are kept for transformers (which names its stages after ``depths`` and sizes its
    classifier from ``hidden_sizes[-1]``) and do not change the backbone.

    Args:
        num_channels: Channels of the input images (must equal ``stem_channels[0]``).
        embedding_size: Kept for transformers (its ``num_features[0]``); unused by the architecture.
        depths: One entry per stage (transformers derives the stage names from its length).
        hidden_sizes: Kept for transformers (its classifier's input width); unused by the backbone.
        hidden_act: Activation of the stem's convolutions (the blocks always use ReLU, as transformers).
        stem_channels: ``[input, middle, output]`` channels of the stem.
        stem_strides: Strides of the stem's five convolutions (``stem1, stem2a, stem2b, stem3, stem4``);
            the two 2x2 convolutions of the split branch must keep stride 1.
        stage_in_channels: Input channels of each stage.
        stage_mid_channels: Channels of each convolution inside a block.
        stage_out_channels: Output channels of each stage.
        stage_num_blocks: HG blocks per stage.
        stage_downsample: Whether a stage starts with a strided depthwise 3x3 convolution.
        stage_downsample_strides: Stride of that convolution.
        stage_light_block: Whether a stage's blocks use light (1x1 then depthwise) convolutions.
        stage_kernel_size: Kernel size of the convolutions inside each stage's blocks (odd).
        stage_numb_of_layers: Convolutions per block.
        use_learnable_affine_block: Follow each activated convolution by a learnable scale and bias.
        initializer_range: Standard deviation of the convolution weights at random initialisation.
        freeze_at: RT-DETR / D-FINE training convention: ``-1`` freezes nothing; ``k >= 0`` freezes the
            stem, and with ``freeze_stem_only=False`` also the first ``k + 1`` stages. Applied when the
            model is built, as ``model.freeze_stages(...)``.
        freeze_stem_only: With ``freeze_at >= 0``, freeze only the stem (D-FINE's default).
        freeze_norm: Replace every BatchNorm by a frozen one when the model is built
            (``model.freeze_batch_norm()``).
        output_stride: Largest stride of any stage, 8, 16 or 32 (the default: none dilated). Below 32, the
            stages past it keep the resolution: their downsampling convolution gets stride 1 (and the
            previous stage's dilation) and the ``k x k`` convolutions of their blocks a dilation (the rule
            of timm's ``output_stride``; timm's HGNetV2 has none). The weights are the same. Not a
            transformers field (transformers keeps it as an unknown attribute of a saved config).
    """

    model_type: ClassVar[str] = "hgnet_v2"

    num_channels: int = 3
    embedding_size: int = 64
    depths: PositiveInts = [3, 4, 6, 3]
    hidden_sizes: list[int] = [256, 512, 1024, 2048]
    hidden_act: ActivationName = "relu"
    stem_channels: list[int] = [3, 32, 48]
    stem_strides: PositiveInts = [2, 1, 1, 2, 1]
    stage_in_channels: PositiveInts = [48, 128, 512, 1024]
    stage_mid_channels: PositiveInts = [48, 96, 192, 384]
    stage_out_channels: PositiveInts = [128, 512, 1024, 2048]
    stage_num_blocks: PositiveInts = [1, 1, 3, 1]
    stage_downsample: list[bool] = [False, True, True, True]
    stage_downsample_strides: PositiveInts = [2, 2, 2, 2]
    stage_light_block: list[bool] = [False, False, True, True]
    stage_kernel_size: Annotated[
        PositiveInts,
        odd_kernels(
            "an even kernel shrinks the map by one pixel per convolution and a block's concatenation then fails"
        ),
    ] = [3, 3, 5, 5]
    stage_numb_of_layers: PositiveInts = [6, 6, 6, 6]
    use_learnable_affine_block: bool = False
    initializer_range: float = 0.02
    freeze_at: int = -1
    freeze_stem_only: bool = True
    freeze_norm: bool = False
    output_stride: OutputStride = 32

    @field_validator("stem_strides", "stage_downsample_strides", mode="before")
    @classmethod
    def _square_strides(cls, value: Any, info: Any) -> Any:
        if isinstance(value, (list, tuple)):
            strides = []
            for index, stride in enumerate(value):
                if isinstance(stride, (list, tuple)):
                    if len(stride) != 2 or stride[0] != stride[1]:
                        raise ValueError(
                            f"{info.field_name}[{index}]={list(stride)}: only square strides are supported "
                            "(one int, or a pair of equal ints), since a stage has one stride"
                        )
                    stride = stride[0]
                strides.append(stride)
            return strides
        return value

    @model_validator(mode="after")
    def _consistent(self) -> HGNetV2Config:
        lengths = {name: len(getattr(self, name)) for name in STAGE_LIST_FIELDS}
        stages = lengths["stage_in_channels"]
        for name, length in lengths.items():
            if length != stages:
                raise ValueError(
                    f"{name} has {length} entries but stage_in_channels has {stages}; give every stage_* "
                    f"field one entry per stage ({', '.join(STAGE_LIST_FIELDS)})"
                )
        if len(self.depths) != stages:
            raise ValueError(
                f"depths has {len(self.depths)} entries but there are {stages} stages (len(stage_in_channels)); "
                "transformers names the stages after depths, so give depths one entry per stage"
            )
        check_stem_channels(self.stem_channels, self.num_channels)
        if self.stem_channels[1] < 2:
            raise ValueError(
                f"stem_channels[1]={self.stem_channels[1]} must be at least 2 (the split branch has half as many)"
            )
        if len(self.stem_strides) != 5:
            raise ValueError(
                f"stem_strides must have 5 entries (stem1, stem2a, stem2b, stem3, stem4), got {self.stem_strides}"
            )
        if self.stem_strides[1] != 1 or self.stem_strides[2] != 1:
            raise ValueError(
                f"stem_strides[1] and stem_strides[2] must be 1, got {self.stem_strides}: the 2x2 convolutions "
                "of the stem's split branch are concatenated with a stride-1 max-pool of the same input"
            )
        expected_in = [self.stem_channels[2], *self.stage_out_channels[:-1]]
        for index, (given, expected) in enumerate(zip(self.stage_in_channels, expected_in)):
            if given != expected:
                source = "stem_channels[2]" if index == 0 else f"stage_out_channels[{index - 1}]"
                raise ValueError(
                    f"stage_in_channels[{index}]={given} must equal {source}={expected} (the channels that reach it)"
                )
        for index, channels in enumerate(self.stage_out_channels):
            if channels < 2:
                raise ValueError(
                    f"stage_out_channels[{index}]={channels} must be at least 2 (a block squeezes to half of it)"
                )
        self.stage_plans  # noqa: B018 -- validates output_stride against the stem's stride
        return self

    @property
    def stage_plans(self) -> list[DilatedStage]:
        """Stride, dilations and reduction of every stage after the stem, under ``output_stride``."""
        stem_stride = self.stem_strides[0] * self.stem_strides[3] * self.stem_strides[4]
        strides = [
            stride if downsample else 1
            for downsample, stride in zip(self.stage_downsample, self.stage_downsample_strides)
        ]
        return dilate_stages(strides, self.output_stride, stem_stride=stem_stride)

    @property
    def num_stages(self) -> int:
        """Number of stages after the stem."""
        return len(self.stage_in_channels)

    @property
    def stage_names(self) -> list[str]:
        return numbered_stage_names(self.num_stages)
