"""ResNet backbone. Paper: Deep Residual Learning for Image Recognition, https://arxiv.org/abs/1512.03385.

Module attribute names are the checkpoint's key names: they reproduce transformers' ``ResNetBackbone``
state dict (``embedder.embedder.convolution.weight``, ``encoder.stages.0.layers.0.layer.1.normalization.bias``,
...), so its checkpoints load unchanged and ours load into it.
"""

from __future__ import annotations

from itertools import islice

import torch
from torch import Tensor, nn

from backbones import Backbone
from backbones.activations import make_activation as build_activation
from backbones.layers import CheckpointableLayer

from ._config import ResNetConfig

__all__ = ["ResNetBackbone"]


def _make_activation(name: str) -> nn.Module:
    return build_activation(name, inplace=True)


class _ConvNorm(nn.Module):
    """Convolution without bias, BatchNorm, then an optional activation (keys ``convolution``, ``normalization``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        activation: str | None = "relu",
    ) -> None:
        super().__init__()
        self.convolution = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.normalization = nn.BatchNorm2d(out_channels)
        # None rather than nn.Identity: one module call fewer per block, and the state dict is the same.
        self.activation = _make_activation(activation) if activation is not None else None

    def forward(self, hidden: Tensor) -> Tensor:
        hidden = self.normalization(self.convolution(hidden))
        if self.activation is not None:
            hidden = self.activation(hidden)
        return hidden


class _ResidualBlock(CheckpointableLayer):
    """One residual block: ``activation(layer(x) + shortcut(x))``; the unit of gradient checkpointing.

    ``layer`` holds two 3x3 convolutions (basic) or 1x1 -> 3x3 -> 1x1 with a 4x narrower middle
    (bottleneck). ``shortcut`` is a strided 1x1 projection when the shape changes, else the identity.
    """

    def __init__(self, config: ResNetConfig, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        # transformers applies hidden_act only to the block output; the inner activations stay ReLU.
        if config.layer_type == "basic":
            convs = [
                _ConvNorm(in_channels, out_channels, 3, stride),
                _ConvNorm(out_channels, out_channels, 3, activation=None),
            ]
        else:
            middle = out_channels // 4
            stride_first = config.downsample_in_bottleneck
            convs = [
                _ConvNorm(in_channels, middle, 1, stride if stride_first else 1),
                _ConvNorm(middle, middle, 3, 1 if stride_first else stride),
                _ConvNorm(middle, out_channels, 1, activation=None),
            ]
        projects = in_channels != out_channels or stride != 1
        self.shortcut = _ConvNorm(in_channels, out_channels, 1, stride, activation=None) if projects else None
        self.layer = nn.Sequential(*convs)
        self.activation = _make_activation(config.hidden_act)

    def forward(self, hidden: Tensor) -> Tensor:
        residual = hidden if self.shortcut is None else self.shortcut(hidden)
        out = self.layer(hidden)
        # In place: ``out`` is the fresh output of the last BatchNorm, which its backward does not need.
        out += residual
        return self.activation(out)


class _Stage(nn.Module):
    """A run of residual blocks; only the first one changes channels or resolution."""

    def __init__(self, config: ResNetConfig, in_channels: int, out_channels: int, stride: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _ResidualBlock(config, in_channels, out_channels, stride),
            *(_ResidualBlock(config, out_channels, out_channels, 1) for _ in range(depth - 1)),
        )

    def forward(self, hidden: Tensor) -> Tensor:
        return self.layers(hidden)


class _Stem(nn.Module):
    """7x7 stride-2 convolution, then a 3x3 stride-2 max-pool: the stages start at stride 4."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.embedder = _ConvNorm(config.num_channels, config.embedding_size, 7, 2, activation=config.hidden_act)
        self.pooler = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, pixel_values: Tensor) -> Tensor:
        if pixel_values.device.type != "cpu" or pixel_values.is_contiguous(memory_format=torch.channels_last):
            return self.pooler(self.embedder(pixel_values))
        # PyTorch's CPU max-pool is over 10x slower on NCHW maps than on channels_last ones (61 ms vs 4 ms
        # for ResNet-50's stem at batch 8 on one thread, half the stem's time), and the 7x7 convolution is
        # no slower, so the stem runs channels_last and only its pooled output returns to the input's layout.
        hidden = self.pooler(self.embedder(pixel_values.contiguous(memory_format=torch.channels_last)))
        return hidden.contiguous()


class _Encoder(nn.Module):
    """Holds the stages under the checkpoint's ``encoder.stages`` keys; the backbone runs them."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        channels = [config.embedding_size, *config.hidden_sizes]
        strides = [2 if config.downsample_in_first_stage else 1] + [2] * (len(config.depths) - 1)
        self.stages = nn.ModuleList(
            _Stage(config, channels[index], channels[index + 1], strides[index], depth)
            for index, depth in enumerate(config.depths)
        )


class ResNetBackbone(Backbone):
    """ResNet feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the max-pooled stem output; stage ``i`` is the output of residual stage ``i``.
    A forward runs only up to the deepest requested stage (all stages when hidden states are requested).

    Args:
        config: The architecture and the output selection.

    Example:
        >>> model = ResNetBackbone(ResNetConfig(out_indices=[1, 2, 3, 4])).eval()  # doctest: +SKIP
        >>> [fmap.shape[1] for fmap in model(torch.randn(1, 3, 224, 224)).feature_maps]  # doctest: +SKIP
        [256, 512, 1024, 2048]
    """

    config_class = ResNetConfig
    base_model_prefix = "resnet"  # prefix of the trunk in ResNetForImageClassification checkpoints
    has_attentions = False
    reference_class_name = "ResNetBackbone"
    config: ResNetConfig

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__(config)
        self.embedder = _Stem(config)
        self.encoder = _Encoder(config)
        self.num_features = [config.embedding_size, *config.hidden_sizes]
        reductions = [4]
        for index in range(len(config.depths)):
            downsamples = index > 0 or config.downsample_in_first_stage
            reductions.append(reductions[-1] * (2 if downsamples else 1))
        self.reductions = reductions
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module`` as transformers' ResNetPreTrainedModel does."""
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            module.reset_running_stats()

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        expected = self.config.num_channels
        if pixel_values.shape[1] != expected:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but this ResNet expects {expected} "
                "(config.num_channels); convert the images or load a model built for that many channels"
            )
        hidden = self.embedder(pixel_values)
        states = [hidden]
        # islice, not a slice: slicing a ModuleList builds a new module on every call.
        for stage in islice(self.encoder.stages, last_stage):
            hidden = stage(hidden)
            states.append(hidden)
        stage_maps: list[Tensor | None] = [*states, *([None] * (len(self.stage_names) - len(states)))]
        return stage_maps, tuple(states) if output_hidden_states else None, None

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """The stem (``embedder``) for position 0, else residual stage ``position`` (``encoder.stages[position - 1]``)."""
        return [self.embedder] if position == 0 else [self.encoder.stages[position - 1]]

    def _prune_stages(self, last_stage: int) -> None:
        # Stage i >= 1 lives at encoder.stages[i - 1]; the stem is always kept.
        del self.encoder.stages[last_stage:]
