"""TextNet, the backbone of FAST. Paper: FAST: Faster Arbitrarily-Shaped Text Detector with Minimalist Kernel
Representation (Chen et al., 2021), https://arxiv.org/abs/2111.02394.

TextNet was found by architecture search over RepVGG-style layers whose main convolution is 3x3, 1x3 or
3x1: each layer sums its main convolution, a vertical ``k x 1`` and a horizontal ``1 x k`` branch and (where
the shape is kept) a BatchNorm of its input. All branches are linear, so :meth:`TextNetBackbone.reparameterize`
folds each layer into one convolution for inference (see :mod:`backbones.reparam`).

Module attribute names are the checkpoint's key names: they reproduce transformers' ``TextNetBackbone`` state
dict (``textnet.stem.conv.weight``, ``textnet.encoder.stages.1.stage.0.vertical_batch_norm.bias``, ...), so its
checkpoints (and the trunk of ``TextNetForImageClassification``) load unchanged and ours load into it.
"""

from __future__ import annotations

from torch import Tensor, nn

from backbones import Backbone, InputError
from backbones.activations import make_activation
from backbones.layers import CheckpointableLayer, FrozenBatchNorm2d, StemAndStages, init_conv_and_batch_norm_
from backbones.reparam import branch_kernel, conv_from_kernel, fuse_conv_bn

from ._config import TextNetConfig

__all__ = ["TextNetBackbone"]

_Norm = nn.BatchNorm2d | FrozenBatchNorm2d


def _norm_or_none(module: nn.Module | None) -> _Norm | None:
    """The module as a BatchNorm (plain or frozen), or ``None`` for a missing branch."""
    if module is None:
        return None
    assert isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d))
    return module


class TextNetStem(nn.Module):
    """Convolution, BatchNorm, activation (keys ``conv``, ``batch_norm``); the norm folds into the convolution."""

    batch_norm: nn.Module | None

    def __init__(self, config: TextNetConfig) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            config.stem_num_channels,
            config.stem_out_channels,
            config.stem_kernel_size,
            stride=config.stem_stride,
            padding=config.stem_kernel_size // 2,
            bias=False,
        )
        self.batch_norm = nn.BatchNorm2d(config.stem_out_channels, eps=config.batch_norm_eps)
        self.activation = make_activation(config.stem_act_func, inplace=True)

    def forward(self, pixel_values: Tensor) -> Tensor:
        hidden = self.conv(pixel_values)
        if self.batch_norm is not None:
            hidden = self.batch_norm(hidden)
        return self.activation(hidden)

    def reparameterize(self) -> None:
        """Fold the BatchNorm into the convolution (which gains a bias), in place."""
        norm = _norm_or_none(self.batch_norm)
        if norm is not None:
            self.conv = fuse_conv_bn(self.conv, norm)
            self.batch_norm = None


class TextNetRepConvLayer(CheckpointableLayer):
    """One reparameterisable layer: branches summed, then a ReLU.

    The branches: the main ``kernel_size`` convolution + BatchNorm; a ``(kh, 1)`` one when ``kw != 1``
    (``vertical_*``); a ``(1, kw)`` one when ``kh != 1`` (``horizontal_*``); a BatchNorm of the input
    (``rbr_identity``) when the layer keeps the shape. :meth:`reparameterize` folds them into ``main_conv``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: ``(kh, kw)``, odd sides.
        stride: Stride of every branch.
        eps: Epsilon of the BatchNorms.
    """

    main_batch_norm: nn.Module | None
    vertical_conv: nn.Conv2d | None
    vertical_batch_norm: nn.Module | None
    horizontal_conv: nn.Conv2d | None
    horizontal_batch_norm: nn.Module | None
    rbr_identity: nn.Module | None

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], stride: int, eps: float):
        super().__init__()
        kh, kw = kernel_size
        self.main_conv = nn.Conv2d(
            in_channels, out_channels, (kh, kw), stride=stride, padding=(kh // 2, kw // 2), bias=False
        )
        self.main_batch_norm = nn.BatchNorm2d(out_channels, eps=eps)
        if kw != 1:
            self.vertical_conv = nn.Conv2d(
                in_channels, out_channels, (kh, 1), stride=stride, padding=(kh // 2, 0), bias=False
            )
            self.vertical_batch_norm = nn.BatchNorm2d(out_channels, eps=eps)
        else:
            self.vertical_conv = self.vertical_batch_norm = None
        if kh != 1:
            self.horizontal_conv = nn.Conv2d(
                in_channels, out_channels, (1, kw), stride=stride, padding=(0, kw // 2), bias=False
            )
            self.horizontal_batch_norm = nn.BatchNorm2d(out_channels, eps=eps)
        else:
            self.horizontal_conv = self.horizontal_batch_norm = None
        keeps_shape = in_channels == out_channels and stride == 1
        self.rbr_identity = nn.BatchNorm2d(in_channels, eps=eps) if keeps_shape else None
        self.activation = nn.ReLU(inplace=True)

    def forward(self, hidden: Tensor) -> Tensor:
        output = self.main_conv(hidden)
        if self.main_batch_norm is not None:  # None once folded: main_conv is then the whole layer
            output = self.main_batch_norm(output)
        if self.vertical_conv is not None and self.vertical_batch_norm is not None:
            output = output + self.vertical_batch_norm(self.vertical_conv(hidden))
        if self.horizontal_conv is not None and self.horizontal_batch_norm is not None:
            output = output + self.horizontal_batch_norm(self.horizontal_conv(hidden))
        if self.rbr_identity is not None:
            output = output + self.rbr_identity(hidden)
        return self.activation(output)

    def reparameterize(self) -> None:
        """Fold every branch and its BatchNorm into one ``main_conv`` with a bias, in place."""
        main_norm = _norm_or_none(self.main_batch_norm)
        if main_norm is None:
            return  # already folded
        size = (self.main_conv.kernel_size[0], self.main_conv.kernel_size[1])
        parts = [branch_kernel(self.main_conv, main_norm, kernel_size=size)]
        for conv, norm in (
            (self.vertical_conv, self.vertical_batch_norm),
            (self.horizontal_conv, self.horizontal_batch_norm),
        ):
            if conv is not None:
                parts.append(branch_kernel(conv, _norm_or_none(norm), kernel_size=size))
        if self.rbr_identity is not None:
            channels = self.main_conv.in_channels
            parts.append(branch_kernel(None, _norm_or_none(self.rbr_identity), kernel_size=size, channels=channels))
        weight, bias = parts[0]
        for part_weight, part_bias in parts[1:]:
            weight, bias = weight + part_weight, bias + part_bias
        self.main_conv = conv_from_kernel(self.main_conv, weight, bias)
        self.main_batch_norm = self.vertical_conv = self.vertical_batch_norm = None
        self.horizontal_conv = self.horizontal_batch_norm = self.rbr_identity = None


class TextNetStage(nn.Module):
    """The layers of one stage (key ``stage``); the first changes the width and may stride."""

    def __init__(self, config: TextNetConfig, index: int) -> None:
        super().__init__()
        in_width, out_width = config.hidden_sizes[index], config.hidden_sizes[index + 1]
        kernels, strides = config.conv_layer_kernel_sizes[index], config.conv_layer_strides[index]
        self.stage = nn.Sequential(
            *(
                TextNetRepConvLayer(
                    in_width if layer == 0 else out_width,
                    out_width,
                    (kernel[0], kernel[1]),
                    stride,
                    config.batch_norm_eps,
                )
                for layer, (kernel, stride) in enumerate(zip(kernels, strides))
            )
        )

    def forward(self, hidden: Tensor) -> Tensor:
        return self.stage(hidden)


class TextNetEncoder(nn.Module):
    """The four stages (key ``stages``)."""

    def __init__(self, config: TextNetConfig) -> None:
        super().__init__()
        self.stages = nn.ModuleList(TextNetStage(config, index) for index in range(len(config.conv_layer_strides)))


class TextNetTrunk(nn.Module):
    """The stem and the encoder (key prefix ``textnet.``, transformers' ``TextNetModel`` without its pooler)."""

    def __init__(self, config: TextNetConfig) -> None:
        super().__init__()
        self.stem = TextNetStem(config)
        self.encoder = TextNetEncoder(config)


class TextNetBackbone(StemAndStages, Backbone):
    """TextNet feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the stem's output; stage ``i`` the output of stage ``i``'s last layer. A forward
    runs only up to the deepest requested stage (all stages when hidden states are requested).
    :meth:`reparameterize` folds every layer into one convolution and the stem's BatchNorm into its
    convolution, for inference.

    With the default configuration the stem is 64 channels wide at stride 2 and the four stages 64, 128, 256 and
    512, at strides 4, 8, 16 and 32.
    """

    config_class = TextNetConfig
    base_model_prefix = "textnet"
    has_attentions = False
    lora_target_modules = ("main_conv", "vertical_conv", "horizontal_conv")
    config: TextNetConfig

    def __init__(self, config: TextNetConfig) -> None:
        super().__init__(config)
        self.textnet = TextNetTrunk(config)
        self.num_features = list(config.hidden_sizes)
        self.reductions = config.stage_reductions
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module`` as transformers' TextNetPreTrainedModel does (its base class's rule)."""
        init_conv_and_batch_norm_(module, self.config.initializer_range)

    def _check_input_channels(self, pixel_values: Tensor) -> None:
        expected = self.config.stem_num_channels
        if pixel_values.shape[1] != expected:
            raise InputError(
                f"pixel_values has {pixel_values.shape[1]} channels but this TextNet expects {expected} "
                "(config.stem_num_channels); convert the images or load a model built for that many channels"
            )

    def _stem_and_stages(self) -> tuple[nn.Module, nn.ModuleList]:
        return self.textnet.stem, self.textnet.encoder.stages
