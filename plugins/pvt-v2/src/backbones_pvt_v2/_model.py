"""PVTv2 (Pyramid Vision Transformer v2) backbone.

Paper: Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer" (2021),
https://arxiv.org/abs/2106.13797.

Three changes over PVT make v2: the patch embeddings overlap (a convolution whose kernel is larger than its
stride, zero-padded), the MLP mixes neighbouring tokens with a 3x3 depth-wise convolution between its two
linear layers (which also stands in for position embeddings, so any input size works), and attention keeps
its cost down by computing keys and values from a smaller map: a strided convolution reduces the map by
``sr_ratio`` (spatial-reduction attention), or, in the linear variant (PVTv2-Li), an average pool to a fixed
7x7 grid does, so attention is linear in the number of pixels.

Module attribute names are the checkpoint's key names (``encoder.layers.N.patch_embedding.proj``,
``encoder.layers.N.blocks.M.attention.query``, ``...mlp.dwconv.dwconv``), so transformers' ``PvtV2Backbone``,
``PvtV2Model`` and ``PvtV2ForImageClassification`` checkpoints load unchanged.

Layout: inside a stage the hidden state is a token sequence ``(batch, height * width, channels)``; each
stage's output (after its layer norm) is returned as a ``(batch, channels, height, width)`` map, which is the
next stage's input.
"""

from __future__ import annotations

import math
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import Backbone
from backbones.activations import make_activation
from backbones.layers import (
    CheckpointableLayer,
    check_pixel_channels,
    drop_path,
    drop_path_rates,
    init_linear_and_norm_,
    linear,
    query_key_value_projections,
)

from ._config import PvtV2Config

__all__ = ["PvtV2Backbone"]

# PVTv2-Li pools keys and values to this many rows and columns, whatever the input size.
LINEAR_POOL_SIZE = 7


def _tokens_to_map(tokens: Tensor, height: int, width: int) -> Tensor:
    """``(batch, height * width, channels)`` tokens as a ``(batch, channels, height, width)`` map."""
    return tokens.transpose(1, 2).unflatten(2, (height, width))


def _map_to_tokens(grid: Tensor) -> Tensor:
    """A ``(batch, channels, height, width)`` map as ``(batch, height * width, channels)`` tokens.

    Where the map is channels-last in memory (the depth-wise convolution's output, see
    :class:`PvtV2DepthWiseConv`) this is a view, and the next layer reads contiguous tokens; a channels-first
    map is copied once, where ``flatten(2).transpose(1, 2)`` would leave the next layer strided tokens.
    """
    return grid.permute(0, 2, 3, 1).flatten(1, 2)


def _adaptive_average_matrix(size: int, bins: int, like: Tensor) -> Tensor:
    """The ``(bins, size)`` matrix whose product with a length-``size`` axis is ``adaptive_avg_pool`` to ``bins``.

    Bin ``i`` averages positions ``floor(i * size / bins)`` to ``ceil((i + 1) * size / bins)`` (exclusive), as
    ``nn.AdaptiveAvgPool2d`` does. Written with ``arange`` and comparisons rather than the pooling operator,
    whose output grid does not divide a dynamic input size: torch.export and ONNX then keep the size dynamic.
    """
    index = torch.arange(bins, device=like.device)
    starts = (index * size) // bins
    ends = ((index + 1) * size + bins - 1) // bins
    positions = torch.arange(size, device=like.device)
    inside = (positions[None, :] >= starts[:, None]) & (positions[None, :] < ends[:, None])
    weights = inside.to(like.dtype)
    return weights / weights.sum(dim=1, keepdim=True)


class PvtV2OverlapPatchEmbedding(nn.Module):
    """An overlapping patch embedding: a ``patch_size`` convolution of stride ``stride``, zero-padded by
    ``patch_size // 2`` on every side (so an odd kernel gives ``ceil(size / stride)`` positions), then LayerNorm."""

    def __init__(self, in_channels: int, width: int, patch_size: int, stride: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, patch_size, stride=stride, padding=patch_size // 2)
        self.layer_norm = nn.LayerNorm(width, eps=eps)

    def forward(self, pixels: Tensor) -> tuple[Tensor, int, int]:
        """``(batch, channels, H, W)`` in; ``(tokens, height, width)`` out, tokens ``(batch, height * width, width)``."""
        embedded = self.proj(pixels)
        height, width = embedded.shape[-2:]
        return self.layer_norm(embedded.flatten(2).transpose(1, 2)), height, width


class PvtV2SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys and values come from a reduced map.

    Queries are every token; keys and values are computed from the map downsampled by a ``reduction``-strided
    ``reduction x reduction`` convolution and a LayerNorm (spatial-reduction attention; ``reduction`` 1: the
    tokens themselves), or, with ``linear``, from the map average-pooled to 7x7, a 1x1 convolution, a
    LayerNorm and GELU.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        reduction: int,
        *,
        linear: bool,
        qkv_bias: bool,
        eps: float,
        attention_dropout: float,
        hidden_dropout: float,
    ) -> None:
        super().__init__()
        self.num_heads = heads
        self.head_size = width // heads
        self.linear = linear
        self.reduction = reduction
        self.attention_dropout = attention_dropout
        self.query, self.key, self.value = query_key_value_projections(width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(hidden_dropout)
        self.spatial_reduction: nn.Conv2d | None = None
        self.layer_norm: nn.LayerNorm | None = None
        if linear:
            self.spatial_reduction = nn.Conv2d(width, width, kernel_size=1)
            self.layer_norm = nn.LayerNorm(width, eps=eps)
            self.act = nn.GELU()
        elif reduction > 1:
            self.spatial_reduction = nn.Conv2d(width, width, kernel_size=reduction, stride=reduction)
            self.layer_norm = nn.LayerNorm(width, eps=eps)

    def _reduced(self, tokens: Tensor, height: int, width: int) -> Tensor:
        """The tokens keys and values are computed from."""
        if self.spatial_reduction is None or self.layer_norm is None:
            return tokens
        grid = _tokens_to_map(tokens, height, width)
        if self.linear:
            rows = _adaptive_average_matrix(height, LINEAR_POOL_SIZE, grid)
            columns = _adaptive_average_matrix(width, LINEAR_POOL_SIZE, grid)
            grid = rows @ grid @ columns.transpose(0, 1)
        reduced = self.layer_norm(_map_to_tokens(self.spatial_reduction(grid)))
        return self.act(reduced) if self.linear else reduced

    def _heads(self, tokens: Tensor) -> Tensor:
        return tokens.unflatten(-1, (self.num_heads, self.head_size)).transpose(1, 2)

    def forward(self, tokens: Tensor, height: int, width: int, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        batch, length, channels = tokens.shape
        query = self._heads(linear(tokens, self.query))
        source = self._reduced(tokens, height, width)
        key, value = self._heads(linear(source, self.key)), self._heads(linear(source, self.value))
        dropout = self.attention_dropout if self.training else 0.0
        probabilities: Tensor | None = None
        if need_weights:
            scores = (query @ key.transpose(-2, -1)) / math.sqrt(self.head_size)
            probabilities = scores.softmax(dim=-1)
            context = F.dropout(probabilities, dropout, self.training) @ value
        else:
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout)
        context = context.transpose(1, 2).reshape(batch, length, channels)
        return self.proj_drop(linear(context, self.proj)), probabilities


class PvtV2DepthWiseConv(nn.Module):
    """A 3x3 depth-wise convolution over the token grid (one filter per channel, zero padding): mixes each
    token with its neighbours and, through the zero padding, tells the network where the borders are."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(width, width, 3, padding=1, groups=width)

    def forward(self, tokens: Tensor, height: int, width: int) -> Tensor:
        conv = self.dwconv
        # The map is channels-last in memory (a view of the tokens). At batch 1 its strides do not tell the
        # convolution so, and with the weight in its default layout it would copy the map channels-first and
        # run the channels-first depth-wise kernel (about 20x slower here); the weight in channels-last layout
        # (a copy of 9 values a channel) makes it run channels-last on the view, and return a channels-last map.
        weight = conv.weight.to(memory_format=torch.channels_last)
        grid = F.conv2d(_tokens_to_map(tokens, height, width), weight, conv.bias, padding=1, groups=conv.groups)
        return _map_to_tokens(grid)


class PvtV2ConvMlp(nn.Module):
    """Linear, (ReLU in the linear variant), 3x3 depth-wise convolution, activation, linear."""

    def __init__(self, width: int, hidden: int, *, hidden_act: str, linear: bool, dropout: float) -> None:
        super().__init__()
        self.dense1 = nn.Linear(width, hidden)
        self.relu = nn.ReLU() if linear else nn.Identity()
        self.dwconv = PvtV2DepthWiseConv(hidden)
        self.intermediate_act_fn = make_activation(hidden_act)
        self.dense2 = nn.Linear(hidden, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, height: int, width: int) -> Tensor:
        hidden = self.dwconv(linear(tokens, self.dense1, self.relu), height, width)
        hidden = self.dropout(self.intermediate_act_fn(hidden))
        return self.dropout(linear(hidden, self.dense2))


class PvtV2Block(CheckpointableLayer):
    """Pre-norm transformer block: spatial-reduction attention and the convolutional MLP, each residual with
    stochastic depth."""

    def __init__(self, config: PvtV2Config, stage: int, drop_path_rate: float) -> None:
        super().__init__()
        width = config.hidden_sizes[stage]
        self.drop_path_rate = drop_path_rate
        self.layer_norm_1 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.attention = PvtV2SpatialReductionAttention(
            width,
            config.num_attention_heads[stage],
            config.sr_ratios[stage],
            linear=config.linear_attention,
            qkv_bias=config.qkv_bias,
            eps=config.layer_norm_eps,
            attention_dropout=config.attention_probs_dropout_prob,
            hidden_dropout=config.hidden_dropout_prob,
        )
        self.layer_norm_2 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.mlp = PvtV2ConvMlp(
            width,
            int(width * config.mlp_ratios[stage]),
            hidden_act=config.hidden_act,
            linear=config.linear_attention,
            dropout=config.hidden_dropout_prob,
        )

    def forward(self, tokens: Tensor, height: int, width: int, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        attended, probabilities = self.attention(self.layer_norm_1(tokens), height, width, need_weights)
        tokens = tokens + drop_path(attended, self.drop_path_rate, self.training)
        mixed = self.mlp(self.layer_norm_2(tokens), height, width)
        return tokens + drop_path(mixed, self.drop_path_rate, self.training), probabilities


class PvtV2Stage(nn.Module):
    """One stage: the overlapping patch embedding, the blocks, a final LayerNorm; returns the stage's map."""

    def __init__(self, config: PvtV2Config, stage: int, rates: list[float]) -> None:
        super().__init__()
        in_channels = config.num_channels if stage == 0 else config.hidden_sizes[stage - 1]
        width = config.hidden_sizes[stage]
        self.patch_embedding = PvtV2OverlapPatchEmbedding(
            in_channels, width, config.patch_sizes[stage], config.strides[stage], config.layer_norm_eps
        )
        self.blocks = nn.ModuleList(PvtV2Block(config, stage, rate) for rate in rates)
        self.layer_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)

    def forward(self, grid: Tensor, attentions: list[Tensor] | None) -> Tensor:
        """``(batch, channels, H, W)`` in, the stage's ``(batch, width, h, w)`` map out; appends each block's
        attention probabilities to ``attentions`` when it is a list."""
        tokens, height, width = self.patch_embedding(grid)
        for block in self.blocks:
            tokens, probabilities = block(tokens, height, width, attentions is not None)
            if attentions is not None and probabilities is not None:
                attentions.append(probabilities)
        return _tokens_to_map(self.layer_norm(tokens), height, width).contiguous()


class PvtV2Encoder(nn.Module):
    """The stages, as ``layers`` (the checkpoint's ``encoder.layers.N``)."""

    def __init__(self, config: PvtV2Config) -> None:
        super().__init__()
        rates = drop_path_rates(config.drop_path_rate, config.depths)
        self.layers = nn.ModuleList(PvtV2Stage(config, stage, rates[stage]) for stage in range(len(config.depths)))


class PvtV2Backbone(Backbone):
    """PVTv2 feature extractor with transformers-compatible checkpoints.

    Stages are ``stage1..stageN`` (no stem, as in transformers): each is an overlapping patch embedding, its
    transformer blocks and a LayerNorm, and its feature map is that LayerNorm's output as
    ``(batch, hidden_sizes[i], H / r, W / r)`` (``r`` the product of the strides so far, rounded up for odd
    patch sizes). ``hidden_states`` are every stage's map, as transformers returns them; ``attentions`` are the
    attention probabilities of every block, stage by stage (``(batch, heads, tokens, reduced tokens)``), as
    transformers' ``PvtV2Model`` computes them (its backbone class returns none).
    """

    config_class: ClassVar[type[PvtV2Config]] = PvtV2Config
    lora_target_modules = ("query", "key", "value", "attention.proj", "dense1", "dense2")
    base_model_prefix = "pvt_v2"  # trunk prefix in PvtV2ForImageClassification checkpoints
    has_attentions = True

    config: PvtV2Config

    def __init__(self, config: PvtV2Config) -> None:
        super().__init__(config)
        self.encoder = PvtV2Encoder(config)
        self.num_features = list(config.hidden_sizes)
        self.reductions = config.stage_reductions
        self.post_init()

    def _stages(self) -> list[PvtV2Stage]:
        return cast("list[PvtV2Stage]", list(self.encoder.layers))

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``PvtV2PreTrainedModel`` does."""
        if isinstance(module, nn.Conv2d):
            # He initialisation by fan-out (per group), as the original PVTv2 code.
            kernel_height, kernel_width = module.kernel_size
            fan_out = kernel_height * kernel_width * module.out_channels // module.groups
            nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        else:
            # Linear weights from a truncated normal, biases 0; layer norms 1 and 0.
            init_linear_and_norm_(module, self.config.initializer_range, truncated=True)

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        check_pixel_channels(pixel_values, self.config.num_channels, "PVTv2")
        # Inputs smaller than config.minimum_input_size are refused by Backbone.forward.
        wanted = set(self.out_positions)
        maps: list[Tensor | None] = [None] * len(self.stage_names)
        hidden_states: list[Tensor] = []
        attentions: list[Tensor] | None = [] if output_attentions else None
        grid = pixel_values
        for position, stage in enumerate(self._stages()[: last_stage + 1]):
            grid = stage(grid, attentions)
            if position in wanted:
                maps[position] = grid
            if output_hidden_states:
                hidden_states.append(grid)
        return (
            maps,
            tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if attentions is not None else None,
        )

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """Stage ``position``: its patch embedding, its blocks and its LayerNorm (``encoder.layers[position]``)."""
        return [self.encoder.layers[position]]

    def _prune_stages(self, last_stage: int) -> None:
        del self.encoder.layers[last_stage + 1 :]
