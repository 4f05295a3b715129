"""BiT backbone. Paper: Kolesnikov et al., "Big Transfer (BiT): General Visual Representation Learning"
(2019), https://arxiv.org/abs/1912.11370.

BiT is a ResNetV2: bottleneck blocks whose convolutions are weight-standardised (each filter is
normalised to zero mean and unit variance before use) and whose norms are group norms, so nothing
depends on the batch. transformers' ``BitBackbone`` also offers post-activation blocks (ViT-hybrid
stems), TensorFlow-style "SAME" padding computed per input size, and dilation past ``output_stride``.

Module attribute names are the checkpoint's key names: they reproduce transformers' ``BitBackbone`` state
dict (``bit.embedder.convolution.weight``, ``bit.encoder.stages.1.layers.0.downsample.conv.weight``,
``bit.encoder.stages.2.layers.3.norm2.bias``, ...), so its checkpoints load unchanged and ours load into
it. transformers' final ``bit.norm`` belongs to the pooled classification path, which a backbone never
runs, so it is not built (its keys are reported as unused).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import Backbone
from backbones.activations import make_activation as build_activation
from backbones.layers import CheckpointableLayer, StageList, StemAndStages, drop_path_rates

from ._config import BitConfig, StagePlan

__all__ = ["BitBackbone"]

# Epsilon of the weight standardisation; transformers passes it to every BiT convolution.
_STANDARDISE_EPS = 1e-8


def _make_activation(name: str) -> nn.Module:
    return build_activation(name, inplace=True)


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Total padding that makes a convolution's output ``ceil(size / stride)`` long (TensorFlow's "SAME").

    It is ``((size - 1) // stride) * stride + reach + 1 - size`` with ``reach = dilation * (kernel - 1)``,
    clamped at 0; it lies in ``[reach + 1 - stride, reach]``: never negative when ``reach + 1 >= stride``
    (every strided 3x3 and 7x7 window of BiT) and always 0 when ``reach == 0`` (1x1 convolutions), so only
    the other windows need the clamp.

    Sizes may be symbolic (``torch.export`` with dynamic height and width). The clamp is then
    ``torch.sym_max`` rather than a comparison that would pin the size, and the formula is written so
    that the padded window's output length simplifies to ``(size - 1) // stride + 1``, the very expression
    of an unpadded strided 1x1 convolution: a block's branch and projected shortcut then have provably
    equal sizes (with ``ceil`` written another way the tracer cannot prove it and export fails).
    """
    reach = dilation * (kernel - 1)
    pad = ((size - 1) // stride) * stride + reach + 1 - size
    if reach + 1 >= stride:
        return pad
    if reach == 0:
        return 0
    # Typed int | SymInt; a SymInt stands in for an int wherever sizes are symbolic, as the docstring says.
    return torch.sym_max(pad, 0)  # type: ignore[return-value]


def _pad_zeros(x: Tensor, left: int, right: int, top: int, bottom: int, *, before_max_pool: bool = False) -> Tensor:
    """Zero-pad ``x``'s last two axes (amounts may be symbolic, and zero).

    Everything goes through ``F.pad`` but one case: a pad of constant amounts before a max-pool, in traced
    code (``torch.compile``, ``torch.export`` and so ONNX), concatenates zeros instead. onnxruntime (1.31 at
    least) folds a ``Pad`` of constant zeros followed by ``MaxPool`` into the pool's own padding, which
    ignores padded pixels (as -inf would) instead of taking the zeros into the maximum: a stem whose
    pre-pool map can be negative would come out wrong. Symbolic amounts (dynamic height and width) are
    computed at run time, which onnxruntime cannot fold, and need no workaround (concatenating zeros of a
    symbolic, possibly zero, width would add shape guards that export cannot prove).
    """
    amounts = (left, right, top, bottom)
    if not (before_max_pool and torch.compiler.is_compiling() and all(type(a) is int for a in amounts)):
        return F.pad(x, amounts)
    batch, channels, height, width = x.shape
    if left or right:
        x = torch.cat([x.new_zeros(batch, channels, height, left), x, x.new_zeros(batch, channels, height, right)], 3)
    width = width + left + right
    if top or bottom:
        x = torch.cat([x.new_zeros(batch, channels, top, width), x, x.new_zeros(batch, channels, bottom, width)], 2)
    return x


def _pad_same(x: Tensor, kernel: int, stride: int, dilation: int, *, before_max_pool: bool = False) -> Tensor:
    """Zero-pad ``x`` for a TensorFlow-"SAME" window; the odd pixel, if any, goes to the bottom and right."""
    if dilation * (kernel - 1) == 0:
        return x  # a 1x1 window needs no padding at any size (see _same_padding)
    height, width = x.shape[-2:]
    pad_h = _same_padding(height, kernel, stride, dilation)
    pad_w = _same_padding(width, kernel, stride, dilation)
    # Eager skips the copy when nothing is padded; traced code pads unconditionally (a zero-width pad is the
    # identity) because branching on a symbolic size would specialise the graph to it.
    if not torch.compiler.is_compiling() and not (pad_h or pad_w):
        return x
    return _pad_zeros(
        x, pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2, before_max_pool=before_max_pool
    )


class _StandardizedConv2d(nn.Conv2d):
    """Bias-free convolution whose filters are standardised per output channel at every call.

    ``padding`` follows ``global_padding``: ``None`` pads ``(stride - 1 + dilation * (k - 1)) // 2`` on
    every side; ``"SAME"`` does the same where that keeps ``ceil(size / stride)`` (stride 1 and an even
    ``dilation * (k - 1)``), and pads each input as TensorFlow would otherwise.

    :meth:`reparameterize` standardises the filters once, for inference (the only fold BiT has: its group
    norms depend on each input, so no norm folds into a convolution).
    """

    standardize: bool = True
    """Whether the forward standardises the filters (false once :meth:`reparameterize` stored them so)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        padding: str | None = None,
    ) -> None:
        reach = dilation * (kernel_size - 1)
        pads_per_input = padding == "SAME" and (stride != 1 or reach % 2 == 1)
        static = 0 if pads_per_input else (stride - 1 + reach) // 2
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=static, dilation=dilation, bias=False
        )
        self.pads_per_input = pads_per_input

    def standardized_weight(self) -> Tensor:
        """The filters with zero mean and unit variance over each output channel's inputs."""
        weight = self.weight
        # A layer norm without affine over each filter's (in * k * k) values computes exactly this (biased
        # variance). On CPU it is ~10x faster than var_mean over three dimensions and ~25% faster than the
        # batch-norm formulation; BiT-50 standardises 23.5M weights on every forward.
        flat = weight.reshape(weight.shape[0], -1)
        return F.layer_norm(flat, flat.shape[1:], eps=_STANDARDISE_EPS).view_as(weight)

    def reparameterize(self) -> None:
        """Store the standardised filters as the weight and stop standardising at every call; in place."""
        if not self.standardize:
            return
        with torch.no_grad():
            self.weight.copy_(self.standardized_weight())
        self.standardize = False

    def forward(self, x: Tensor) -> Tensor:
        if self.pads_per_input:
            x = _pad_same(x, self.kernel_size[0], self.stride[0], self.dilation[0])
        weight = self.standardized_weight() if self.standardize else self.weight
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation)


class _GroupNormActivation(nn.GroupNorm):
    """Group norm, then an optional activation (keys ``weight``, ``bias``; the activation has none)."""

    def __init__(self, num_groups: int, channels: int, activation: str | None) -> None:
        super().__init__(num_groups, channels, eps=1e-5)
        # None rather than nn.Identity: one module call fewer, and the state dict is the same.
        self.activation = _make_activation(activation) if activation is not None else None

    def forward(self, x: Tensor) -> Tensor:
        x = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return x if self.activation is None else self.activation(x)


class _Downsample(nn.Module):
    """Projection shortcut of a stage's first block: a strided 1x1 convolution, normalised (without
    activation) in post-activation blocks only."""

    def __init__(self, config: BitConfig, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = _StandardizedConv2d(in_channels, out_channels, 1, stride=stride, padding=config.global_padding)
        self.norm = (
            _GroupNormActivation(config.num_groups, out_channels, None) if config.layer_type == "bottleneck" else None
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return x if self.norm is None else self.norm(x)


def _drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth (https://arxiv.org/abs/1603.09382): drop whole residual branches of random samples."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    return x * x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(keep).div_(keep)


class _PreActivationBlock(CheckpointableLayer):
    """ResNetV2 bottleneck: ``x + conv3(na3(conv2(na2(conv1(na1(x))))))``, each ``na`` a group norm and
    activation. The first block of a stage projects ``na1(x)`` for the shortcut.

    As in transformers, the 3x3 convolution is never dilated (past ``output_stride`` the stage just
    keeps its resolution).
    """

    def __init__(
        self, config: BitConfig, in_channels: int, plan: StagePlan, stride: int, first: bool, drop_path_rate: float
    ) -> None:
        super().__init__()
        out_channels, mid = plan.channels, plan.bottleneck_channels
        groups, act, padding = config.num_groups, config.hidden_act, config.global_padding
        self.downsample = _Downsample(config, in_channels, out_channels, stride) if first else None
        self.norm1 = _GroupNormActivation(groups, in_channels, act)
        self.conv1 = _StandardizedConv2d(in_channels, mid, 1, padding=padding)
        self.norm2 = _GroupNormActivation(groups, mid, act)
        self.conv2 = _StandardizedConv2d(mid, mid, 3, stride=stride, padding=padding)
        self.norm3 = _GroupNormActivation(groups, mid, act)
        self.conv3 = _StandardizedConv2d(mid, out_channels, 1, padding=padding)
        self.drop_path_rate = drop_path_rate

    def forward(self, x: Tensor) -> Tensor:
        activated = self.norm1(x)
        shortcut = x if self.downsample is None else self.downsample(activated)
        branch = self.conv3(self.norm3(self.conv2(self.norm2(self.conv1(activated)))))
        branch = _drop_path(branch, self.drop_path_rate, self.training)
        # In place: ``branch`` is a fresh convolution output that no backward pass reads.
        return branch.add_(shortcut)


class _BottleneckBlock(CheckpointableLayer):
    """Post-activation bottleneck (ResNet v1.5): ``act(norm3(conv3(na2(conv2(na1(conv1(x)))))) + shortcut)``.

    The first block of a stage projects ``x`` for the shortcut; the 3x3 convolution carries the stride
    and, past ``output_stride``, the dilation.
    """

    def __init__(
        self,
        config: BitConfig,
        in_channels: int,
        plan: StagePlan,
        stride: int,
        first: bool,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        out_channels, mid = plan.channels, plan.bottleneck_channels
        groups, act, padding = config.num_groups, config.hidden_act, config.global_padding
        dilation = plan.first_dilation if first else plan.dilation
        self.downsample = _Downsample(config, in_channels, out_channels, stride) if first else None
        self.conv1 = _StandardizedConv2d(in_channels, mid, 1, padding=padding)
        self.norm1 = _GroupNormActivation(groups, mid, act)
        self.conv2 = _StandardizedConv2d(mid, mid, 3, stride=stride, dilation=dilation, padding=padding)
        self.norm2 = _GroupNormActivation(groups, mid, act)
        self.conv3 = _StandardizedConv2d(mid, out_channels, 1, padding=padding)
        self.norm3 = _GroupNormActivation(groups, out_channels, None)
        self.activation = _make_activation(act)
        self.drop_path_rate = drop_path_rate

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        branch = self.norm3(self.conv3(self.norm2(self.conv2(self.norm1(self.conv1(x))))))
        branch = _drop_path(branch, self.drop_path_rate, self.training)
        # In place: ``branch`` is a fresh group-norm output, which the norm's backward does not read.
        return self.activation(branch.add_(shortcut))


class _Stage(nn.Module):
    """A run of bottleneck blocks; only the first one changes channels or resolution."""

    def __init__(self, config: BitConfig, in_channels: int, plan: StagePlan, drop_path_rates: list[float]) -> None:
        super().__init__()
        block = _BottleneckBlock if config.layer_type == "bottleneck" else _PreActivationBlock
        self.layers = nn.Sequential(
            *(
                block(
                    config,
                    in_channels if index == 0 else plan.channels,
                    plan,
                    stride=plan.stride if index == 0 else 1,
                    first=index == 0,
                    drop_path_rate=rate,
                )
                for index, rate in enumerate(drop_path_rates)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class _Stem(nn.Module):
    """7x7 stride-2 convolution, a pixel of zero padding (unless "SAME"), a group norm and activation
    (post-activation blocks only), then a 3x3 stride-2 max-pool: a 4x smaller map."""

    def __init__(self, config: BitConfig) -> None:
        super().__init__()
        self.convolution = _StandardizedConv2d(
            config.num_channels, config.embedding_size, 7, stride=2, padding=config.global_padding
        )
        self.pads_one = config.global_padding != "SAME"
        self.norm = (
            _GroupNormActivation(config.num_groups, config.embedding_size, config.hidden_act)
            if config.layer_type == "bottleneck"
            else None
        )
        self.pools_same = config.embedding_dynamic_padding

    def forward(self, pixel_values: Tensor) -> Tensor:
        x = self.convolution(pixel_values)
        if self.pads_one:
            # Zeros, before the norm and the pool: both see them (the pool does not pad with -inf).
            x = _pad_zeros(x, 1, 1, 1, 1, before_max_pool=True)
        if self.norm is not None:
            x = self.norm(x)
        if self.pools_same:
            x = _pad_same(x, 3, 2, 1, before_max_pool=True)
        return F.max_pool2d(x, kernel_size=3, stride=2)


def _stages(config: BitConfig) -> list[_Stage]:
    """The stages, held under the checkpoint's ``encoder.stages`` keys."""
    rates = drop_path_rates(config.drop_path_rate, config.depths)
    stages, in_channels = [], config.embedding_size
    for index, plan in enumerate(config.stage_plans):
        stages.append(_Stage(config, in_channels, plan, rates[index]))
        in_channels = plan.channels
    return stages


class _Trunk(nn.Module):
    """The ``bit.`` key prefix of transformers' backbone (its ``BitModel``), without the unused final norm."""

    def __init__(self, config: BitConfig) -> None:
        super().__init__()
        self.embedder = _Stem(config)
        self.encoder = StageList(_stages(config))


class BitBackbone(StemAndStages, Backbone):
    """BiT feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the max-pooled stem output; stage ``i`` is the output of stage ``i``, with no
    norm applied (as in transformers, the pre-activation model's final norm is not part of the
    features). A forward runs only up to the deepest requested stage (all stages when hidden states are
    requested).

    With the default configuration the four stages are 256, 512, 1024 and 2048 channels wide, at strides 4, 8, 16
    and 32.
    """

    config_class = BitConfig
    config: BitConfig
    # The trunk's prefix in every BiT checkpoint: BitBackbone and BitForImageClassification keys both start
    # with it, and BitModel checkpoints (without it) load too.
    base_model_prefix = "bit"
    has_attentions = False
    input_model_name = "BiT"

    def __init__(self, config: BitConfig) -> None:
        super().__init__(config)
        self.bit = _Trunk(config)
        plans = config.stage_plans
        # The real channel counts: transformers' num_features ignores width_factor and the rounding to 8.
        self.num_features = [config.embedding_size] + [plan.channels for plan in plans]
        self.reductions = [4] + [plan.reduction for plan in plans]
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module`` as transformers' ``BitPreTrainedModel`` does."""
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _stem_and_stages(self) -> tuple[nn.Module, nn.ModuleList]:
        return self.bit.embedder, self.bit.encoder.stages
