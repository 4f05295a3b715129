"""Configuration of TextNet. Field names and defaults follow transformers' TextNetConfig (TextNet-base of FAST)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from backbones import BackboneConfig
from backbones.activations import check_activation
from backbones.validation import check_entries_at_least_one

__all__ = ["TextNetConfig"]

NUM_STAGES = 4
"""TextNet always has four stages after its stem (transformers' stage names are fixed to ``stage1..stage4``)."""


def _default_kernel_sizes() -> list[list[list[int]]]:
    return [
        [[3, 3], [3, 3], [3, 3]],
        [[3, 3], [1, 3], [3, 3], [3, 1]],
        [[3, 3], [3, 3], [3, 1], [1, 3]],
        [[3, 3], [3, 1], [1, 3], [3, 3]],
    ]


def _default_strides() -> list[list[int]]:
    return [[1, 2, 1], [2, 1, 1, 1], [2, 1, 1, 1], [2, 1, 1, 1]]


class TextNetConfig(BackboneConfig):
    """Configuration of a TextNet backbone; the defaults describe TextNet-base (``czczup/textnet-base``).

    The stem is one convolution (``stem_kernel_size``, stride ``stem_stride``), a BatchNorm and
    ``stem_act_func``. Each of the four stages is a chain of reparameterisable layers: layer ``j`` of stage
    ``i`` has a ``conv_layer_kernel_sizes[i][j]`` (``[height, width]``) convolution of stride
    ``conv_layer_strides[i][j]``, plus a ``[height, 1]`` branch when the width is not 1, a ``[1, width]``
    branch when the height is not 1 and a BatchNorm of the input when the layer keeps the shape, all summed
    and followed by a ReLU. The first layer of stage ``i`` goes from ``hidden_sizes[i]`` to
    ``hidden_sizes[i + 1]`` channels.

    Args:
        stem_kernel_size: Kernel side of the stem convolution (padded by ``stem_kernel_size // 2``).
        stem_stride: Stride of the stem convolution.
        stem_num_channels: Channels of the input images.
        stem_out_channels: Channels of the stem's output; must equal ``hidden_sizes[0]``.
        stem_act_func: Activation of the stem (a name of :data:`backbones.activations.ACTIVATIONS`).
        image_size: Pre-training image size, kept for compatibility; the backbone takes any size.
        conv_layer_kernel_sizes: Per stage, the ``[height, width]`` kernel of each layer (odd sides).
        conv_layer_strides: Per stage, the stride of each layer (as many as the stage has kernels).
        hidden_sizes: Channels of the stem and of each stage (five entries).
        batch_norm_eps: Epsilon of every BatchNorm.
        initializer_range: Standard deviation of the normal initialisation of convolution weights.
    """

    model_type: ClassVar[str] = "textnet"
    # transformers writes the layer count of each stage, which follows from conv_layer_kernel_sizes.
    reference_config_keys: ClassVar[frozenset[str]] = frozenset({"depths"})
    derived_config_keys: ClassVar[tuple[str, ...]] = ("depths",)  # as transformers writes them

    stem_kernel_size: int = Field(default=3, ge=1)
    stem_stride: int = Field(default=2, ge=1)
    stem_num_channels: int = Field(default=3, ge=1)
    stem_out_channels: int = Field(default=64, ge=1)
    stem_act_func: str = "relu"
    image_size: int | list[int] = Field(default_factory=lambda: [640, 640])
    conv_layer_kernel_sizes: list[list[list[int]]] = Field(default_factory=_default_kernel_sizes)
    conv_layer_strides: list[list[int]] = Field(default_factory=_default_strides)
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 64, 128, 256, 512])
    batch_norm_eps: float = Field(default=1e-5, gt=0)
    initializer_range: float = Field(default=0.02, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data: Any) -> Any:
        # transformers' config takes None for the two layer lists and fills in TextNet-base's.
        if isinstance(data, dict):
            data = {
                key: value
                for key, value in data.items()
                if not (key in ("conv_layer_kernel_sizes", "conv_layer_strides") and value is None)
            }
        return data

    @model_validator(mode="after")
    def _check_layers(self) -> TextNetConfig:
        check_activation(self.stem_act_func, "stem_act_func")
        kernels, strides = self.conv_layer_kernel_sizes, self.conv_layer_strides
        for name, value in (("conv_layer_kernel_sizes", kernels), ("conv_layer_strides", strides)):
            if len(value) != NUM_STAGES:
                raise ValueError(
                    f"{name} has {len(value)} stages but TextNet has {NUM_STAGES} (stage names stage1..stage4); "
                    f"give one list per stage"
                )
        for stage, (stage_kernels, stage_strides) in enumerate(zip(kernels, strides)):
            if not stage_kernels:
                raise ValueError(f"conv_layer_kernel_sizes[{stage}] is empty; a stage needs at least one layer")
            if len(stage_strides) != len(stage_kernels):
                raise ValueError(
                    f"conv_layer_strides[{stage}] has {len(stage_strides)} entries but conv_layer_kernel_sizes[{stage}] "
                    f"has {len(stage_kernels)}; give one stride per layer"
                )
            for layer, kernel in enumerate(stage_kernels):
                if len(kernel) != 2 or any(side < 1 or side % 2 == 0 for side in kernel):
                    raise ValueError(
                        f"conv_layer_kernel_sizes[{stage}][{layer}]={kernel} must be [height, width] with odd positive "
                        "sides (an even side would shift the layer's branches against each other)"
                    )
            check_entries_at_least_one(f"conv_layer_strides[{stage}]", stage_strides)
        if len(self.hidden_sizes) != NUM_STAGES + 1:
            raise ValueError(
                f"hidden_sizes has {len(self.hidden_sizes)} entries but needs {NUM_STAGES + 1}: the stem's channels, "
                "then each stage's"
            )
        check_entries_at_least_one("hidden_sizes", self.hidden_sizes)
        if self.hidden_sizes[0] != self.stem_out_channels:
            raise ValueError(
                f"hidden_sizes[0]={self.hidden_sizes[0]} must equal stem_out_channels={self.stem_out_channels}: "
                "the first stage takes the stem's output"
            )
        return self

    @property
    def stage_names(self) -> list[str]:
        return ["stem", *(f"stage{index}" for index in range(1, NUM_STAGES + 1))]

    @property
    def depths(self) -> list[int]:
        """Layers in each stage (derived from ``conv_layer_kernel_sizes``)."""
        return [len(stage) for stage in self.conv_layer_kernel_sizes]

    @property
    def stage_reductions(self) -> list[int]:
        """Stride of each stage's map relative to the input: the stem's, then the running product of the layers'."""
        total = self.stem_stride
        reductions = [total]
        for strides in self.conv_layer_strides:
            for stride in strides:
                total *= stride
            reductions.append(total)
        return reductions

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        # As transformers writes it: the image size as a pair.
        if isinstance(self.image_size, int):
            data["image_size"] = [self.image_size, self.image_size]
        return data
