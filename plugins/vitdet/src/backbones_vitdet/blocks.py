"""Public building blocks of ViTDet's plain vision transformer: patch embeddings with absolute positions,
attention with decomposed relative positions, windowed or global transformer layers, the residual bottleneck
block, and the window partition helpers, for plugins that build on ViTDet (e.g. LW-DETR's ViT).

Paper: Li, Mao, Girshick, He, "Exploring Plain Vision Transformer Backbones for Object Detection" (2022),
https://arxiv.org/abs/2203.16527.

Every name in ``__all__`` is part of backbones-vitdet's public API and follows the versioning rule of
docs/plugins.md ("Building on another plugin's blocks"): a dependent plugin pins ``backbones-vitdet>=0.1,<0.2``.
Attribute names are checkpoint key names in transformers' ViTDet format (``projection``, ``attention.qkv``,
``attention.rel_pos_h``, ``residual.conv1``, ...).

Layout: maps are channels-last ``(batch, height, width, channels)`` throughout.
"""

from __future__ import annotations

import functools
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.activations import make_activation
from backbones.layers import CheckpointableLayer, check_pixel_channels, drop_path, linear

__all__ = [
    "CHANNEL_NORM_EPS",
    "BottleneckConv",
    "ChannelNorm",
    "ResidualBottleneck",
    "VitDetAttention",
    "VitDetEmbeddings",
    "VitDetEmbeddingsConfig",
    "VitDetLayer",
    "VitDetMlp",
    "crop_map",
    "from_windows",
    "to_windows",
]

CHANNEL_NORM_EPS = 1e-6
"""Epsilon of the residual blocks' channel norms: fixed in transformers, not ``layer_norm_eps``."""


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


def to_windows(x: Tensor, window: int) -> tuple[Tensor, int, int]:
    """``(B, H, W, C)`` -> ``(B * windows, window, window, C)``, zero-padding the map to whole windows.

    Returns the windows and how many windows tile the padded map vertically and horizontally. As in
    transformers, the padded tokens take part in attention as keys.
    """
    batch, height, width, channels = x.shape
    # Window counts by ceiling division: the padded sizes are then multiples of the window by
    # construction, which symbolic shapes (torch.export with dynamic H/W) can verify without a guard.
    rows, cols = (height + window - 1) // window, (width + window - 1) // window
    if torch.compiler.is_compiling():
        # Typed int | SymInt; a SymInt stands in for an int wherever sizes are symbolic.
        rows, cols = torch.sym_max(rows, 2), torch.sym_max(cols, 2)  # type: ignore[assignment]
    # Padding by zero is a no-op, so eager skips the copy when the map tiles; a graph always pads (possibly
    # by zero) instead of branching on sizes that may be symbolic.
    if torch.compiler.is_compiling() or rows * window != height or cols * window != width:
        x = F.pad(x, (0, 0, 0, cols * window - width, 0, rows * window - height))
    x = x.view(batch, rows, window, cols, window, channels).transpose(2, 3).contiguous()
    return x.view(batch * rows * cols, window, window, channels), rows, cols


def from_windows(windows: Tensor, batch: int, rows: int, cols: int) -> Tensor:
    """Inverse of :func:`to_windows` (without removing the padding)."""
    window, channels = windows.shape[1], windows.shape[-1]
    x = windows.view(batch, rows, cols, window, window, channels).transpose(2, 3).contiguous()
    return x.view(batch, rows * window, cols * window, channels)


def crop_map(x: Tensor, height: int, width: int) -> Tensor:
    """The top-left ``height x width`` of a padded ``(B, H, W, C)`` map."""
    if torch.compiler.is_compiling():
        # With symbolic sizes, slicing makes the tracer guard that the crop fits and whether the result is
        # contiguous, facts about ceiling divisions it cannot prove for all sizes; selecting the kept rows
        # and columns by index gives the same values without a guard.
        rows = torch.arange(height, device=x.device)
        cols = torch.arange(width, device=x.device)
        return x.index_select(1, rows).index_select(2, cols)
    return x[:, :height, :width]


class VitDetEmbeddingsConfig(Protocol):
    """The config fields :meth:`VitDetEmbeddings.from_config` reads (ViTDet's and LW-DETR's ViT's configs).

    Attributes:
        num_channels: Input channels.
        hidden_size: Token channels.
        patch_size: Side of the square patches.
        use_absolute_position_embeddings: Whether the stem adds absolute positions.
    """

    num_channels: int
    hidden_size: int
    patch_size: int
    use_absolute_position_embeddings: bool

    @property
    def position_grid(self) -> int:
        """Side of the square grid of the absolute position table (one row more, for a class token)."""
        ...


class VitDetEmbeddings(nn.Module):
    """Stem (keys ``embeddings.*``): patch projection plus absolute positions resampled to the grid.

    The position table keeps the class-token row of its ViT pre-training; ViTDet has no class token, so
    that row is skipped. Returns channels-last ``(B, H / patch_size, W / patch_size, hidden_size)`` maps.

    Args:
        num_channels: Input channels.
        hidden_size: Token channels.
        patch_size: Side of the square patches.
        position_grid: Side of the square patch grid of the absolute position table (it has one row more,
            for the pre-training class token), or ``None`` for no absolute positions.
    """

    def __init__(self, num_channels: int, hidden_size: int, patch_size: int, position_grid: int | None = None) -> None:
        super().__init__()
        patch = patch_size
        self.grid = position_grid or 0
        self.projection = nn.Conv2d(num_channels, hidden_size, kernel_size=patch, stride=patch)
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, hidden_size)) if position_grid is not None else None
        )

    @classmethod
    def from_config(cls, config: VitDetEmbeddingsConfig) -> VitDetEmbeddings:
        """The stem a ViTDet-style config describes (absolute positions if ``use_absolute_position_embeddings``).

        Args:
            config: Its ``num_channels``, ``hidden_size``, ``patch_size``, ``position_grid`` and
                ``use_absolute_position_embeddings``.
        """
        grid = config.position_grid if config.use_absolute_position_embeddings else None
        return cls(config.num_channels, config.hidden_size, config.patch_size, grid)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """``(B, num_channels, H, W)`` pixels to the channels-last patch embeddings."""
        check_pixel_channels(pixel_values, self.projection.in_channels, "ViTDet")
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


class VitDetAttention(nn.Module):
    """Multi-head self-attention over a ``(B, height, width, C)`` map (a window or the whole map), with
    optional decomposed relative positions (keys ``attention.qkv``, ``proj``, ``rel_pos_h``, ``rel_pos_w``).

    The relative terms depend on the queries; they are added to the scores as one additive bias, so the
    fused kernel still runs unless attention weights are requested.

    Args:
        hidden_size: Token channels.
        num_heads: Attention heads.
        qkv_bias: Whether the query/key/value projection has a bias.
        relative_grid: ``(rows, cols)`` of the maps this attention sees at fine-tuning size (a window, or the
            whole map for global attention), which size the relative-position tables; ``None``: no relative
            positions.
    """

    rel_pos_h: nn.Parameter | None
    rel_pos_w: nn.Parameter | None

    def __init__(
        self, hidden_size: int, num_heads: int, *, qkv_bias: bool = True, relative_grid: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        width = hidden_size
        self.num_heads = num_heads
        head_dim = width // self.num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)
        grid = relative_grid
        if grid is not None:
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
        qkv = linear(x, self.qkv).view(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
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
        return linear(context.reshape(batch, height, width, channels), self.proj), weights


class VitDetMlp(nn.Module):
    """Two-layer MLP with dropout after each layer (keys ``fc1``, ``fc2``).

    Args:
        hidden_size: Channels in and out.
        hidden_features: Channels between the layers.
        hidden_act: Activation between the layers (a name of :data:`backbones.activations.ACTIVATIONS`).
        dropout: Dropout after each layer (training only).
    """

    def __init__(self, hidden_size: int, hidden_features: int, hidden_act: str = "gelu", dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, hidden_features)
        self.activation = make_activation(hidden_act)
        self.fc2 = nn.Linear(hidden_features, hidden_size)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        """``dropout(fc2(dropout(activation(fc1(x)))))``."""
        x = F.dropout(linear(x, self.fc1, self.activation), self.dropout, self.training)
        return F.dropout(linear(x, self.fc2), self.dropout, self.training)


class BottleneckConv(nn.Conv2d):
    """A convolution of the residual block: initialised as a ReLU network's (Kaiming, fan-out)."""


class ChannelNorm(nn.LayerNorm):
    """A channel norm of the residual block; on channels-last maps it is a plain layer norm.

    Args:
        channels: Channels.
        zero_init: Marks the block's last norm, initialised to zero so that a fresh block is the identity.
    """

    def __init__(self, channels: int, zero_init: bool = False) -> None:
        super().__init__(channels, eps=CHANNEL_NORM_EPS)
        self.zero_init = zero_init


class ResidualBottleneck(nn.Module):
    """``x + norm3(conv3(act(norm2(conv2(act(norm1(conv1(x))))))))`` with 1x1, 3x3, 1x1 convolutions at half
    the width (keys ``conv1``, ``norm1``, ..., ``norm3``), on channels-last maps.

    Args:
        hidden_size: Channels in and out (the convolutions inside have half as many).
        hidden_act: Activation after the first two norms.
    """

    def __init__(self, hidden_size: int, hidden_act: str = "gelu") -> None:
        super().__init__()
        width, narrow = hidden_size, hidden_size // 2
        self.conv1 = BottleneckConv(width, narrow, 1, bias=False)
        self.norm1 = ChannelNorm(narrow)
        self.conv2 = BottleneckConv(narrow, narrow, 3, padding=1, bias=False)
        self.norm2 = ChannelNorm(narrow)
        self.conv3 = BottleneckConv(narrow, width, 1, bias=False)
        self.norm3 = ChannelNorm(width, zero_init=True)
        self.activation = make_activation(hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, hidden_size)`` to ``(B, H, W, hidden_size)``."""
        out = self.activation(self.norm1(F.linear(x, self.conv1.weight.flatten(1))))
        # The 3x3 convolution reads the channels-last map through a permuted view and writes channels-last.
        out = self.conv2(out.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        out = self.activation(self.norm2(out))
        return x + self.norm3(F.linear(out, self.conv3.weight.flatten(1)))


class VitDetLayer(CheckpointableLayer):
    """One pre-norm transformer layer, windowed or global, optionally followed by a residual conv block.

    The unit of gradient checkpointing and of FSDP sharding (its residual block included). Keys ``norm1``,
    ``attention``, ``norm2``, ``mlp`` and (with a residual block) ``residual``.

    Args:
        hidden_size: Token channels.
        num_heads: Attention heads.
        window_size: Side of the square windows attention runs in (the map is zero-padded to whole windows);
            ``0``: global attention over the whole map.
        relative_grid: Passed on to :class:`VitDetAttention` (``None``: no relative positions).
        residual: Whether a :class:`ResidualBottleneck` follows the layer.
        mlp_ratio: Hidden width of the MLP relative to ``hidden_size``.
        qkv_bias: Whether the query/key/value projection has a bias.
        hidden_act: Activation of the MLP and of the residual block.
        layer_norm_eps: Epsilon of the two layer norms.
        dropout: Dropout of the MLP (training only).
        drop_path: Stochastic-depth rate of both residual branches (training only).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        *,
        window_size: int = 0,
        relative_grid: tuple[int, int] | None = None,
        residual: bool = False,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-6,
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        width = hidden_size
        self.window = window_size
        self.norm1 = nn.LayerNorm(width, eps=layer_norm_eps)
        self.attention = VitDetAttention(width, num_heads, qkv_bias=qkv_bias, relative_grid=relative_grid)
        self.norm2 = nn.LayerNorm(width, eps=layer_norm_eps)
        self.mlp = VitDetMlp(width, int(width * mlp_ratio), hidden_act, dropout)
        self.residual = ResidualBottleneck(width, hidden_act) if residual else None
        self.drop_path = drop_path

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """``(B, H, W, C)`` to ``(B, H, W, C)``; also the attention probabilities if ``need_weights``."""
        branch = self.norm1(x)
        if self.window:
            batch, height, width, _ = x.shape
            windows, rows, cols = to_windows(branch, self.window)
            windows, weights = self.attention(windows, need_weights)
            branch = crop_map(from_windows(windows, batch, rows, cols), height, width)
        else:
            branch, weights = self.attention(branch, need_weights)
        x = x + drop_path(branch, self.drop_path, self.training)
        x = x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)
        if self.residual is not None:
            x = self.residual(x)
        return x, weights
