"""ViTDet backbone: a plain, single-scale vision transformer adapted for detection.

Paper: Li, Mao, Girshick, He, "Exploring Plain Vision Transformer Backbones for Object Detection" (2022),
https://arxiv.org/abs/2203.16527.

Module attribute names are transformers' ``VitDetBackbone`` / ``VitDetModel`` checkpoint keys
(``embeddings.projection``, ``encoder.layer.N.attention.qkv``, ``attention.rel_pos_h``,
``residual.conv1``, ...); both classes write the same unprefixed keys.

Layout: hidden states stay channels-last ``(batch, height, width, channels)`` from the stem to the last
layer, which is what the layer norms, the attention and the MLP all want; feature maps and hidden states
are returned as ``(batch, channels, height, width)`` views of them (the channels-last memory format), so
no stage pays for a transposing copy. The residual conv blocks run in that layout as well: their 1x1
convolutions are matrix products over the channel axis and their channel norms are ordinary layer norms.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import Backbone
from backbones.activations import make_activation
from backbones.layers import CheckpointableLayer, drop_path

from ._config import VitDetConfig

__all__ = ["VitDetBackbone"]

# Epsilon of the residual blocks' channel norms: fixed in transformers, not layer_norm_eps.
_CHANNEL_NORM_EPS = 1e-6


def _relative_index(size: int, device: torch.device) -> Tensor:
    """``(size, size)`` table whose entry ``(i, j)`` is the row ``i - j + size - 1`` of a relative table."""
    positions = torch.arange(size, device=device)
    return positions[:, None] - positions[None, :] + (size - 1)


@functools.lru_cache(maxsize=32)
def _cached_relative_index(size: int, device: torch.device) -> Tensor:
    # Built outside inference mode so the cached table also serves later autograd-recording calls.
    with torch.inference_mode(False), torch.no_grad():
        return _relative_index(size, device)


def _resampled_table(table: Tensor, size: int) -> Tensor:
    """The relative table for an axis of ``size`` tokens: ``(2 * size - 1, dim)``, one row per offset.

    A table trained for another size is resampled linearly to the ``2 * size - 1`` offsets, as transformers.
    """
    length = 2 * size - 1
    # Linear resampling to the table's own length is the identity (every output sits exactly on an input
    # row, with weight 1 and 0 for its neighbour), so skipping it for a matching table changes no value.
    # While compiling or exporting ``size`` may be symbolic and comparing it would guard the graph to one
    # size, so there the table is always resampled.
    if torch.compiler.is_compiling() or table.shape[0] != length:
        table = F.interpolate(table.t()[None], size=length, mode="linear", align_corners=False)[0].t()
    return table


def _relative_table(table: Tensor, size: int) -> Tensor:
    """Relative embeddings of every (query, key) pair along one axis of ``size`` tokens: ``(size, size, dim)``."""
    table = _resampled_table(table, size)
    return table[_cached_relative_index(size, table.device)]


def _relative_logits(grid: Tensor, table: Tensor, axis: int) -> Tensor:
    """Per query, the dot products with the relative embeddings of every key along ``axis`` (2: rows,
    3: columns) of the ``(B, heads, height, width, dim)`` query grid: ``(B, heads, height, width, size)``.
    """
    size = grid.shape[axis]
    if torch.compiler.is_compiling():
        # Traced form (torch.compile / torch.export with symbolic sizes): dot every query with every offset
        # row, then pick each key's offset with a gather. The einsum below batches its matrix products over
        # the symbolic axis, and merging that axis with the static ones makes the tracer guard on
        # divisibility facts it cannot prove for all sizes; this form never merges a symbolic axis.
        index = _relative_index(size, grid.device)  # (query position, key position) -> offset row
        shape = [1, 1, 1, 1, size]
        shape[axis] = size
        index = index.view(shape).expand(*grid.shape[:-1], size)
        return torch.matmul(grid, _resampled_table(table, size).t()).gather(-1, index)
    # Eager: gather the (size, size, dim) embeddings once (index cached per size), one batched product.
    embeddings = _relative_table(table, size)
    if axis == 2:
        return torch.einsum("bnhwc,hkc->bnhwk", grid, embeddings)
    return torch.einsum("bnhwc,wkc->bnhwk", grid, embeddings)


def _to_windows(x: Tensor, window: int) -> tuple[Tensor, int, int]:
    """``(B, H, W, C)`` -> ``(B * windows, window, window, C)``, zero-padding the map to whole windows.

    Returns the windows and how many windows tile the padded map vertically and horizontally. As in
    transformers, the padded tokens take part in attention as keys.
    """
    batch, height, width, channels = x.shape
    # Window counts by ceiling division: the padded sizes are then multiples of the window by
    # construction, which symbolic shapes (torch.export with dynamic H/W) can verify without a guard.
    rows, cols = (height + window - 1) // window, (width + window - 1) // window
    if torch.compiler.is_compiling():
        rows, cols = torch.sym_max(rows, 2), torch.sym_max(cols, 2)
    # Padding by zero is a no-op, so eager skips the copy when the map tiles; a graph always pads (possibly
    # by zero) instead of branching on sizes that may be symbolic.
    if torch.compiler.is_compiling() or rows * window != height or cols * window != width:
        x = F.pad(x, (0, 0, 0, cols * window - width, 0, rows * window - height))
    x = x.view(batch, rows, window, cols, window, channels).transpose(2, 3).contiguous()
    return x.view(batch * rows * cols, window, window, channels), rows, cols


def _from_windows(windows: Tensor, batch: int, rows: int, cols: int) -> Tensor:
    """Inverse of :func:`_to_windows` (without removing the padding)."""
    window, channels = windows.shape[1], windows.shape[-1]
    x = windows.view(batch, rows, cols, window, window, channels).transpose(2, 3).contiguous()
    return x.view(batch, rows * window, cols * window, channels)


def _crop(x: Tensor, height: int, width: int) -> Tensor:
    """The top-left ``height x width`` of a padded ``(B, H, W, C)`` map."""
    if torch.compiler.is_compiling():
        # With symbolic sizes, slicing makes the tracer guard that the crop fits and whether the result is
        # contiguous, facts about ceiling divisions it cannot prove for all sizes; selecting the kept rows
        # and columns by index gives the same values without a guard.
        rows = torch.arange(height, device=x.device)
        cols = torch.arange(width, device=x.device)
        return x.index_select(1, rows).index_select(2, cols)
    return x[:, :height, :width]


class _Embeddings(nn.Module):
    """Stem (keys ``embeddings.*``): patch projection plus absolute positions resampled to the grid.

    The position table keeps the class-token row of its ViT pre-training; ViTDet has no class token, so
    that row is skipped.
    """

    def __init__(self, config: VitDetConfig) -> None:
        super().__init__()
        patch = config.patch_size
        self.grid = config.position_grid
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=patch, stride=patch)
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, config.hidden_size))
            if config.use_absolute_position_embeddings
            else None
        )

    def forward(self, pixel_values: Tensor) -> Tensor:
        if pixel_values.shape[1] != self.projection.in_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but this ViTDet expects "
                f"{self.projection.in_channels} (config.num_channels)"
            )
        x = self.projection(pixel_values).permute(0, 2, 3, 1)
        if self.position_embeddings is not None:
            x = x + self._positions(x.shape[1], x.shape[2])
        return x

    def _positions(self, height: int, width: int) -> Tensor:
        grid = self.grid
        table = self.position_embeddings[:, 1:].reshape(1, grid, grid, -1)  # type: ignore[index]
        # Bicubic resampling to the table's own size is the identity (the cubic weights at zero offset are
        # exactly 0, 1, 0, 0), so eager skips it at the pre-training grid; while compiling or exporting the
        # sizes may be symbolic, so the table is always resampled there (as transformers does when tracing).
        if not torch.compiler.is_compiling() and (height, width) == (grid, grid):
            return table
        # Bicubic by target size, no antialiasing, in the table's dtype: as transformers and detectron2.
        resized = F.interpolate(table.permute(0, 3, 1, 2), size=(height, width), mode="bicubic", align_corners=False)
        return resized.permute(0, 2, 3, 1)


class _Attention(nn.Module):
    """Multi-head self-attention over a ``(B, height, width, C)`` map (a window or the whole map), with
    optional decomposed relative positions (keys ``attention.qkv``, ``proj``, ``rel_pos_h``, ``rel_pos_w``).

    The relative terms depend on the queries; they are added to the scores as one additive bias, so the
    fused kernel still runs unless attention weights are requested.
    """

    def __init__(self, config: VitDetConfig, grid: tuple[int, int]) -> None:
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        head_dim = width // self.num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=config.qkv_bias)
        self.proj = nn.Linear(width, width)
        if config.use_relative_position_embeddings:
            # Sized for the tokens this layer sees at fine-tuning size; resampled for others.
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid[1] - 1, head_dim))
        else:
            self.rel_pos_h = self.rel_pos_w = None

    def _relative_bias(self, query: Tensor, height: int, width: int) -> Tensor:
        """``(B, heads, N, N)`` bias: per query, a learned term for the row offset plus one for the column offset."""
        batch, heads, tokens, head_dim = query.shape
        grid = query.reshape(batch, heads, height, width, head_dim)
        rows = _relative_logits(grid, self.rel_pos_h, 2)  # type: ignore[arg-type]
        columns = _relative_logits(grid, self.rel_pos_w, 3)  # type: ignore[arg-type]
        return (rows[..., :, None] + columns[..., None, :]).reshape(batch, heads, tokens, tokens)

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Returns the output ``(B, height, width, C)`` and, if asked, the attention probabilities
        ``(B, heads, N, N)`` (``B`` counts windows for windowed layers, as transformers returns them)."""
        batch, height, width, channels = x.shape
        qkv = self.qkv(x).view(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        bias = self._relative_bias(query, height, width) if self.rel_pos_h is not None else None
        weights = None
        if need_weights:
            scores = torch.matmul(query * query.shape[-1] ** -0.5, key.transpose(-1, -2))
            if bias is not None:
                scores = scores + bias
            weights = scores.softmax(dim=-1)
            context = torch.matmul(weights, value)
        else:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
        context = context.transpose(1, 2)
        if torch.compiler.is_compiling():
            # The traced reshape becomes a view when the traced attention kernel returns heads-inner memory;
            # ONNX export later swaps in a decomposition that returns heads-outer memory, which that view
            # cannot read. An explicit contiguous copy makes the graph independent of the kernel's layout.
            context = context.clone(memory_format=torch.contiguous_format)
        return self.proj(context.reshape(batch, height, width, channels)), weights


class _Mlp(nn.Module):
    """Two-layer MLP with dropout after each layer (keys ``mlp.fc1``, ``mlp.fc2``)."""

    def __init__(self, config: VitDetConfig) -> None:
        super().__init__()
        hidden = int(config.hidden_size * config.mlp_ratio)
        self.fc1 = nn.Linear(config.hidden_size, hidden)
        self.activation = make_activation(config.hidden_act)
        self.fc2 = nn.Linear(hidden, config.hidden_size)
        self.dropout = config.dropout_prob

    def forward(self, x: Tensor) -> Tensor:
        x = F.dropout(self.activation(self.fc1(x)), self.dropout, self.training)
        return F.dropout(self.fc2(x), self.dropout, self.training)


class _BottleneckConv(nn.Conv2d):
    """A convolution of the residual block: initialised as a ReLU network's (Kaiming, fan-out)."""


class _ChannelNorm(nn.LayerNorm):
    """A channel norm of the residual block; on channels-last maps it is a plain layer norm.

    ``zero_init`` marks the block's last norm, initialised to zero so that a fresh block is the identity.
    """

    def __init__(self, channels: int, zero_init: bool = False) -> None:
        super().__init__(channels, eps=_CHANNEL_NORM_EPS)
        self.zero_init = zero_init


class _ResidualBlock(nn.Module):
    """``x + norm3(conv3(act(norm2(conv2(act(norm1(conv1(x))))))))`` with 1x1, 3x3, 1x1 convolutions at half
    the width (keys ``residual.*``)."""

    def __init__(self, config: VitDetConfig) -> None:
        super().__init__()
        width, narrow = config.hidden_size, config.hidden_size // 2
        self.conv1 = _BottleneckConv(width, narrow, 1, bias=False)
        self.norm1 = _ChannelNorm(narrow)
        self.conv2 = _BottleneckConv(narrow, narrow, 3, padding=1, bias=False)
        self.norm2 = _ChannelNorm(narrow)
        self.conv3 = _BottleneckConv(narrow, width, 1, bias=False)
        self.norm3 = _ChannelNorm(width, zero_init=True)
        self.activation = make_activation(config.hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        out = self.activation(self.norm1(F.linear(x, self.conv1.weight.flatten(1))))
        # The 3x3 convolution reads the channels-last map through a permuted view and writes channels-last.
        out = self.conv2(out.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        out = self.activation(self.norm2(out))
        return x + self.norm3(F.linear(out, self.conv3.weight.flatten(1)))


class _Layer(CheckpointableLayer):
    """One pre-norm transformer layer, windowed or global, optionally followed by a residual conv block.

    The unit of gradient checkpointing and of FSDP sharding (its residual block included)."""

    def __init__(self, config: VitDetConfig, window: int, residual: bool, drop_path: float) -> None:
        super().__init__()
        width = config.hidden_size
        self.window = window
        self.norm1 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.attention = _Attention(config, (window, window) if window else config.global_attention_grid)
        self.norm2 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.mlp = _Mlp(config)
        self.residual = _ResidualBlock(config) if residual else None
        self.drop_path = drop_path

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        branch = self.norm1(x)
        if self.window:
            batch, height, width, _ = x.shape
            windows, rows, cols = _to_windows(branch, self.window)
            windows, weights = self.attention(windows, need_weights)
            branch = _crop(_from_windows(windows, batch, rows, cols), height, width)
        else:
            branch, weights = self.attention(branch, need_weights)
        x = x + drop_path(branch, self.drop_path, self.training)
        x = x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)
        if self.residual is not None:
            x = self.residual(x)
        return x, weights


class VitDetBackbone(Backbone):
    """ViTDet feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the embeddings) and ``stage1..stageN`` (the transformer layers), all of stride
    ``patch_size``; a stage's feature map is its hidden state, exactly as transformers' ``VitDetBackbone``.
    ``attentions`` hold each run layer's attention probabilities, ``(batch * windows, heads, N, N)`` for
    windowed layers and ``(batch, heads, N, N)`` for global ones.
    """

    config_class = VitDetConfig
    # transformers' prefix for the trunk; VitDetModel and VitDetBackbone checkpoints are both unprefixed.
    base_model_prefix = "vitdet"
    has_attentions = True
    reference_class_name = "VitDetBackbone"

    def __init__(self, config: VitDetConfig) -> None:
        super().__init__(config)
        depth = config.num_hidden_layers
        rates = [config.drop_path_rate * index / max(depth - 1, 1) for index in range(depth)]
        windowed, residual = set(config.window_block_indices), set(config.residual_block_indices)
        layers = [
            _Layer(config, config.window_size if index in windowed else 0, index in residual, rates[index])
            for index in range(depth)
        ]
        self.embeddings = _Embeddings(config)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(layers)
        self.num_features = [config.hidden_size] * (depth + 1)
        self.reductions = [config.patch_size] * (depth + 1)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``VitDetPreTrainedModel`` does."""
        std = self.config.initializer_range
        if isinstance(module, _BottleneckConv):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            if isinstance(module, _ChannelNorm) and module.zero_init:
                nn.init.zeros_(module.weight)
            else:
                nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, _Embeddings) and module.position_embeddings is not None:
            nn.init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
        elif isinstance(module, _Attention) and module.rel_pos_h is not None:
            nn.init.trunc_normal_(module.rel_pos_h, mean=0.0, std=std)
            nn.init.trunc_normal_(module.rel_pos_w, mean=0.0, std=std)

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        wanted = set(self.out_positions)
        layers = self.encoder.layer
        maps: list[Tensor | None] = [None] * len(self.stage_names)
        hidden_states: list[Tensor] = []
        attentions: list[Tensor] = []
        x = self.embeddings(pixel_values)
        for position in range(last_stage + 1):
            if position:
                x, weights = layers[position - 1](x, output_attentions)
                if weights is not None:
                    attentions.append(weights)
            if position in wanted or output_hidden_states:
                as_map = x.permute(0, 3, 1, 2)
                if position in wanted:
                    maps[position] = as_map
                if output_hidden_states:
                    hidden_states.append(as_map)
        return (
            maps,
            tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
        )

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """Stage 0 is the embeddings, stage ``p`` the transformer layer ``p - 1`` (with its residual block)."""
        if position == 0:
            return [self.embeddings]
        return [self.encoder.layer[position - 1]]

    def _prune_stages(self, last_stage: int) -> None:
        del self.encoder.layer[last_stage:]
