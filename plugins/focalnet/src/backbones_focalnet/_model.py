"""FocalNet backbone.

Paper: Yang, Li, Dai, Gao, "Focal Modulation Networks" (2022), https://arxiv.org/abs/2203.11926.

Focal modulation replaces self-attention: each token gates a stack of depthwise-convolution contexts of
growing reach (plus a global average) and multiplies the gated sum, projected, into its query.

Module attribute names are the checkpoint's key names: they reproduce transformers' ``FocalNetBackbone``
state dict (``focalnet.encoder.stages.0.layers.1.modulation.focal_layers.0.0.weight``, ...), so its
checkpoints load unchanged and ours load into it. ``focalnet.layernorm`` is not built: transformers
creates it, but its backbone returns the stages before that norm.

Layout: hidden states stay channels-last ``(batch, height, width, channels)`` from the stem to the last
stage. The depthwise convolutions and the downsamplings read ``(batch, channels, height, width)`` views
of them (the channels-last memory format, which the convolutions keep), so no block pays for a
transposing copy; feature maps are returned as such views too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import Backbone
from backbones.activations import make_activation
from backbones.layers import (
    CheckpointableLayer,
    StemAndStages,
    drop_path,
    drop_path_rates,
    init_linear_and_norm_,
    linear,
    module_group,
)

from ._config import FocalNetConfig

__all__ = ["FocalNetBackbone"]


def _pad_to_multiple(x: Tensor, multiple: int, channels_last: bool) -> Tensor:
    """Zero-pad the bottom and right of a map so both sides are multiples of ``multiple``."""
    height, width = (x.shape[1], x.shape[2]) if channels_last else (x.shape[2], x.shape[3])
    pad_bottom, pad_right = -height % multiple, -width % multiple
    # Eager (and static-shape compiles) skip the copy when nothing is padded; with symbolic sizes
    # (torch.export with dynamic height and width) the pad is always applied, possibly by zero, so no
    # guard on the size is created.
    if isinstance(pad_bottom, int) and isinstance(pad_right, int) and not (pad_bottom or pad_right):
        return x
    if channels_last:
        return F.pad(x, (0, 0, 0, pad_right, 0, pad_bottom))
    return F.pad(x, (0, pad_right, 0, pad_bottom))


def _add_product(total: Tensor, x: Tensor, gate: Tensor) -> Tensor:
    """``total + x * gate``: fused in eager; two plain products under symbolic sizes.

    torch.export's stride propagation for ``addcmul`` broadcasts the one-channel gate first (stride 0 over
    channels) and then guards on the map size; the product and the sum alone trace without guards.
    """
    if isinstance(gate.shape[-1], int) and isinstance(gate.shape[-2], int):
        return torch.addcmul(total, x, gate)
    return total + x * gate


class _Downsample(nn.Module):
    """Halves the resolution of a channels-last map: a stride-2 convolution, then a LayerNorm.

    Keys ``projection`` and ``norm``. The convolution is a 2x2 patch projection, or with
    ``use_conv_embed`` an overlapping 3x3 one; odd maps are first zero-padded at the bottom and right.
    """

    def __init__(self, in_channels: int, out_channels: int, overlapping: bool, eps: float) -> None:
        super().__init__()
        kernel, padding = (3, 1) if overlapping else (2, 0)
        self.projection = nn.Conv2d(in_channels, out_channels, kernel_size=kernel, stride=2, padding=padding)
        self.norm = nn.LayerNorm(out_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, C)`` -> ``(B, ceil(H / 2), ceil(W / 2), out_channels)``."""
        x = _pad_to_multiple(x, 2, channels_last=True)
        # The permuted view is a channels_last tensor: the convolution keeps that format, so its result
        # permutes back to a contiguous channels-last map.
        return self.norm(self.projection(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class _Stem(nn.Module):
    """Keys ``focalnet.embeddings.*``: ``patch_embeddings.projection`` then ``norm``, on NCHW pixels."""

    def __init__(self, config: FocalNetConfig) -> None:
        super().__init__()
        patch = config.patch_size
        if config.use_conv_embed:
            conv = nn.Conv2d(config.num_channels, config.embed_dim, kernel_size=7, stride=patch, padding=2)
        else:
            conv = nn.Conv2d(config.num_channels, config.embed_dim, kernel_size=patch, stride=patch)
        self.patch_embeddings = module_group(projection=conv)
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.patch_size = patch
        self.dropout = config.hidden_dropout_prob

    def forward(self, pixel_values: Tensor) -> Tensor:
        pixel_values = _pad_to_multiple(pixel_values, self.patch_size, channels_last=False)
        # A channels_last input makes the convolution write channels-last maps: the permute below is
        # then free, and the 3-channel copy costs less than re-laying out the embeddings.
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        x = self.norm(self.patch_embeddings.projection(pixel_values).permute(0, 2, 3, 1))
        return F.dropout(x, self.dropout, self.training)


class _FocalModulation(nn.Module):
    """Focal modulation of channels-last tokens (keys ``modulation.*``).

    ``projection_in`` yields a query, a context and ``focal_level + 1`` gates per token. The context
    passes through ``focal_level`` depthwise convolutions (each followed by GELU), every level is
    weighted by its gate, and the GELU of the last level's global mean is added with the last gate.
    ``projection_context`` (a 1x1 convolution) turns the sum into a modulator that multiplies the query.
    """

    def __init__(self, config: FocalNetConfig, dim: int, stage: int) -> None:
        super().__init__()
        level, window = config.focal_levels[stage], config.focal_windows[stage]
        self.dim = dim
        self.focal_level = level
        self.projection_in = nn.Linear(dim, 2 * dim + level + 1)
        self.focal_layers = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(dim, dim, window + 2 * k, padding=(window + 2 * k) // 2, groups=dim, bias=False), nn.GELU()
            )
            for k in range(level)
        )
        self.projection_context = nn.Conv2d(dim, dim, kernel_size=1)
        self.layernorm = (
            nn.LayerNorm(dim, eps=config.layer_norm_eps) if config.use_post_layernorm_in_modulation else None
        )
        self.projection_out = nn.Linear(dim, dim)
        self.context_scale = 1.0 / (level + 1) if config.normalize_modulator else 1.0
        self.dropout = config.hidden_dropout_prob

    def forward(self, x: Tensor) -> Tensor:
        dim, level = self.dim, self.focal_level
        query, context, gates = linear(x, self.projection_in).split((dim, dim, level + 1), dim=-1)
        # NCHW views of channels-last data: the first depthwise convolution packs the context slice into
        # a dense channels_last map once, and every later map keeps that format without transposes.
        context = context.permute(0, 3, 1, 2)
        # One dense (batch, height, width) map per gate, level-major: each gate is then a (batch, 1, height,
        # width) channels_last map like the context maps, so their products take the fast layout path and
        # torch.export with dynamic sizes traces them without guards on the map size (with gates sliced
        # out of projection_in's output it would not). The copy is focal_level + 1 channels.
        gates = gates.permute(3, 0, 1, 2).clone(memory_format=torch.contiguous_format)
        if self.context_scale != 1.0:
            # Dividing the gates divides the gated sum, at the cost of focal_level + 1 channels.
            gates = gates.mul_(self.context_scale)
        total: Tensor | None = None
        for k, layer in enumerate(self.focal_layers):
            context = layer(context)
            gate = gates[k].unsqueeze(-1).permute(0, 3, 1, 2)
            total = context * gate if total is None else _add_product(total, context, gate)
        global_context = F.gelu(context.mean((2, 3), keepdim=True))
        # The global term is the outer product of the last gate map and the pooled context, added as a
        # batched matmul on (batch, tokens, channels): fused, and free of stride guesses under export.
        batch, height, width = gates.shape[1:]
        gate = gates[level].reshape(batch, height * width, 1)
        pooled = global_context.reshape(batch, 1, dim)
        if total is None:
            tokens = torch.bmm(gate, pooled)
        else:
            tokens = torch.baddbmm(total.permute(0, 2, 3, 1).reshape(batch, height * width, dim), gate, pooled)
        # projection_context is a 1x1 convolution: on channels-last data, a matmul.
        context_weight = self.projection_context.weight.flatten(1)
        modulator = F.linear(tokens.view(batch, height, width, dim), context_weight, self.projection_context.bias)
        out = query * modulator
        if self.layernorm is not None:
            out = self.layernorm(out)
        return F.dropout(linear(out, self.projection_out), self.dropout, self.training)


class _Mlp(nn.Module):
    """``fc1`` -> activation -> ``fc2``, with dropout after the activation and after ``fc2``."""

    def __init__(self, config: FocalNetConfig, dim: int) -> None:
        super().__init__()
        hidden = int(dim * config.mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.activation = make_activation(config.hidden_act)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = config.hidden_dropout_prob

    def forward(self, x: Tensor) -> Tensor:
        x = F.dropout(linear(x, self.fc1, self.activation), self.dropout, self.training)
        return F.dropout(linear(x, self.fc2), self.dropout, self.training)


class _FocalBlock(CheckpointableLayer):
    """A modulation branch and an MLP branch, each residual, pre-norm (or post-norm), optionally layer-scaled."""

    def __init__(self, config: FocalNetConfig, dim: int, stage: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.modulation = _FocalModulation(config, dim, stage)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = _Mlp(config, dim)
        if config.use_layerscale:
            self.gamma_1: nn.Parameter | None = nn.Parameter(torch.full((dim,), config.layerscale_value))
            self.gamma_2: nn.Parameter | None = nn.Parameter(torch.full((dim,), config.layerscale_value))
        else:
            self.gamma_1 = self.gamma_2 = None
        self.post_norm = config.use_post_layernorm
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        if self.post_norm:
            branch = self.norm1(self.modulation(x))
        else:
            branch = self.modulation(self.norm1(x))
        x = x + self._drop_path(branch if self.gamma_1 is None else self.gamma_1 * branch)
        branch = self.norm2(self.mlp(x)) if self.post_norm else self.mlp(self.norm2(x))
        return x + self._drop_path(branch if self.gamma_2 is None else self.gamma_2 * branch)

    def _drop_path(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_path, self.training)


class _Stage(nn.Module):
    """Blocks at one width (keys ``layers``) and, except in the last stage, the downsampling after them."""

    def __init__(self, config: FocalNetConfig, index: int, drop_paths: list[float]) -> None:
        super().__init__()
        widths = config.stage_widths
        dim = widths[index]
        self.layers = nn.ModuleList(_FocalBlock(config, dim, index, rate) for rate in drop_paths)
        self.downsample = (
            _Downsample(dim, widths[index + 1], config.use_conv_embed, config.layer_norm_eps)
            if index + 1 < len(widths)
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.layers:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class FocalNetBackbone(StemAndStages, Backbone):
    """FocalNet feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the normalised patch embeddings) and ``stage1..stageN``. As in transformers'
    ``FocalNetBackbone``, stage ``i < N`` is taken *after* the downsampling that ends block group ``i``
    (so it has the next group's width and stride) and the last stage is the last group's output; no
    extra norm is applied to the maps. ``hidden_states`` are those same stages as token sequences
    ``(batch, height * width, channels)``, as transformers returns them. focalnet-tiny's stages are
    96 (stem), 192, 384, 768 and 768 channels wide.
    """

    config_class = FocalNetConfig
    lora_target_modules = ("projection_in", "projection_out", "fc1", "fc2")
    config: FocalNetConfig
    base_model_prefix = "focalnet"  # FocalNetModel checkpoints lack it; backbone and task ones have it
    has_attentions = False
    input_model_name = "FocalNet"

    def __init__(self, config: FocalNetConfig) -> None:
        super().__init__(config)
        depths = config.depths
        stages = [
            _Stage(config, index, rates) for index, rates in enumerate(drop_path_rates(config.drop_path_rate, depths))
        ]
        self.focalnet = module_group(embeddings=_Stem(config), encoder=module_group(stages=nn.ModuleList(stages)))
        widths = config.stage_widths
        strides = [config.patch_size * 2**index for index in range(len(depths))]
        self.num_features = [widths[0], *widths[1:], widths[-1]]
        self.reductions = [strides[0], *strides[1:], strides[-1]]
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``FocalNetPreTrainedModel`` does."""
        if init_linear_and_norm_(module, self.config.initializer_range):
            return
        if isinstance(module, _FocalBlock) and module.gamma_1 is not None and module.gamma_2 is not None:
            nn.init.constant_(module.gamma_1, self.config.layerscale_value)
            nn.init.constant_(module.gamma_2, self.config.layerscale_value)

    def _stem_and_stages(self) -> tuple[nn.Module, nn.ModuleList]:
        """Stage 0 is the stem (``focalnet.embeddings``); stage ``i`` is block group ``i - 1`` with its
        downsampling (``focalnet.encoder.stages[i - 1]``), as its map is taken after it."""
        return self.focalnet.embeddings, self.focalnet.encoder.stages

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        maps, states, _ = super()._forward_features(
            pixel_values,
            last_stage=last_stage,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        # The stages compute channels-last (B, H, W, C) maps: feature maps are their (B, C, H, W) views, hidden
        # states their (B, H * W, C) token sequences, as transformers returns them.
        return (
            [None if x is None else x.permute(0, 3, 1, 2) for x in maps],
            None if states is None else tuple(x.flatten(1, 2) for x in states),
            None,
        )
