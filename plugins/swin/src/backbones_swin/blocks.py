"""Public building blocks of the Swin Transformer: the stem, (shifted-)window attention, blocks, patch merging,
stages and the encoder, for plugins that build on Swin (backbones-swinv2, backbones-maskformer-swin, ...).

Paper: Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows" (2021),
https://arxiv.org/abs/2103.14030.

Every name in ``__all__`` is part of backbones-swin's public API and follows the versioning rule of docs/plugins.md
("Building on another plugin's blocks"): a dependent plugin pins ``backbones-swin>=0.1,<0.2``. Attribute names are
checkpoint key names (``attention.self.query``, ``intermediate.dense``, ``layernorm_before``, ...), in the format
transformers writes for Swin.

Layout: maps are channels-last ``(batch, height, width, channels)`` throughout.

Extension points, for variants that change one piece and keep the rest:

* :class:`WindowSelfAttention`: the class attributes ``key_bias``, ``softmax_scale`` and
  ``shift_mask_value``, and the methods ``_add_bias_parameters`` / ``_bias_parameters`` /
  ``_bias_table`` (where the relative-position bias comes from) and ``_qkv`` (how queries, keys and
  values are formed);
* :class:`WindowAttention`: ``self_attention_class``;
* :class:`SwinBlock`: ``attention_class``, ``_attend`` (pad, partition, attend, merge: separate from the
  residual wiring in ``forward``, which a post-norm variant overrides) and ``_drop_path``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.activations import make_activation
from backbones.layers import (
    CheckpointableLayer,
    check_pixel_channels,
    drop_path,
    linear,
    module_group,
    query_key_value_projections,
)

__all__ = [
    "SHIFT_MASK_VALUE",
    "PatchMerging",
    "SwinBlock",
    "SwinEmbeddings",
    "SwinEncoder",
    "SwinStage",
    "SwinTrunk",
    "WindowAttention",
    "WindowSelfAttention",
    "merge_neighbours",
    "size_table",
]

SHIFT_MASK_VALUE = -100.0
"""The additive score between tokens of different regions of a shifted window (as transformers and the
original code)."""
# Input sizes whose attention biases one attention module keeps (a few sizes alternate in practice).
_CACHED_SIZES = 8


def _pad_bottom_right(x: Tensor, bottom: Any, right: Any) -> Tensor:
    """Zero-pad a ``(B, H, W, C)`` map by ``bottom`` rows and ``right`` columns (either may be 0).

    Eager skips the copy when nothing is padded. Traced (``torch.compile`` / ``torch.export``), the pad
    is always applied, possibly by zero: a branch on a symbolic size would specialise the graph to one
    side of it (a shape guard), and a zero pad is free there anyway.
    """
    if not torch.compiler.is_compiling() and not (bottom or right):
        return x
    return F.pad(x, (0, 0, 0, right, 0, bottom))


@functools.lru_cache(maxsize=32)
def _cached_table(build: Any, *args: Any) -> Any:
    # Built outside inference mode so a table cached there also serves later autograd-recording calls.
    with torch.inference_mode(False), torch.no_grad():
        return build(*args)


def size_table(build: Callable[..., Any], *args: Any) -> Any:
    """``build(*args)`` (an index or mask table that depends on sizes only), cached across calls.

    Under ``torch.compile`` the table is built in the graph instead: the compiler cannot guard a
    Python-side cache, and it folds such size-only computations itself.

    Args:
        build: A module-level function of hashable arguments (sizes, a device) returning a tensor.
        *args: Its arguments; they are the cache key.

    Returns:
        What ``build(*args)`` returns (the cached object: do not modify it in place).
    """
    return build(*args) if torch.compiler.is_compiling() else _cached_table(build, *args)


def _floor_mod(x: Tensor, n: int) -> Tensor:
    """``x % n`` for a non-negative integer tensor ``x``, written with a floor division: ``n`` may be a
    symbolic size when traced, and ONNX export takes a symbolic divisor but no symbolic remainder."""
    return x - torch.div(x, n, rounding_mode="floor") * n


def _window_order(
    height: int, width: int, window: int, shift: int, window_major: bool, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Index tables between a flattened ``height x width`` map and its (shifted) windows.

    Returns ``(gather, scatter)``. The map is first zero-padded at the bottom and right to whole windows
    (``padded_height x padded_width``); ``padded.index_select(1, gather)`` is that map cyclically shifted
    by ``-shift`` and split into windows, laid out ``(window * window, num_windows)`` (token-in-window
    axis first, windows row-major) or, if ``window_major``, ``(num_windows, window * window)`` (see
    :meth:`SwinBlock._attend`); ``windows.index_select(1, scatter)`` undoes both and drops the
    padding (``height * width`` tokens). One gather replaces ``torch.roll`` (two copies, and slow on CPU)
    plus the window permutes, and one the un-shift, reverse permutes and crop.

    The sizes may be symbolic (traced with dynamic sizes), so the tables are integer arithmetic on flat
    ``arange``s: no view, permute, broadcast, slice or sort whose tracing would depend on whether there
    is one window or several along an axis, or on whether the map needed padding.
    """
    rows, cols = (height + window - 1) // window, (width + window - 1) // window
    original_height, original_width = height, width
    height, width = rows * window, cols * window
    tokens = window * window
    # Slot k of the windowed layout: (token offset, window index) or (window index, token offset).
    slot = torch.arange(height * width, device=device)
    if window_major:
        windows, offsets = torch.div(slot, tokens, rounding_mode="floor"), slot % tokens
    else:
        windows, offsets = _floor_mod(slot, rows * cols), torch.div(slot, rows * cols, rounding_mode="floor")
    window_row, window_col = torch.div(windows, cols, rounding_mode="floor"), _floor_mod(windows, cols)
    row = _floor_mod(window_row * window + torch.div(offsets, window, rounding_mode="floor") + shift, height)
    col = _floor_mod(window_col * window + offsets % window + shift, width)
    gather = row * width + col
    # Unpadded map position m = (y, x): where it went, after shifting by -shift.
    position = torch.arange(original_height * original_width, device=device)
    # (+ height, + width: the shift is less than a window, so the dividends stay non-negative.)
    y = _floor_mod(torch.div(position, original_width, rounding_mode="floor") - shift + height, height)
    x = _floor_mod(_floor_mod(position, original_width) - shift + width, width)
    offsets = (y % window) * window + x % window
    windows = torch.div(y, window, rounding_mode="floor") * cols + torch.div(x, window, rounding_mode="floor")
    scatter = windows * tokens + offsets if window_major else offsets * (rows * cols) + windows
    return gather, scatter


def _head_window_order(
    height: int, width: int, window: int, shift: int, heads: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """:func:`_window_order` for per-head tokens, the layout of traced attention (see :meth:`SwinBlock._attend`).

    Returns ``(gather, scatter)``: ``per_head.index_select(1, gather)``, where ``per_head`` is the padded
    map's ``(B, padded_height * padded_width * heads, head_dim)``, gives ``(B, num_windows * heads * N,
    head_dim)`` laid out ``(window, head, token)``; ``index_select(1, scatter)`` brings such a tensor back
    to the unpadded map's ``(B, height * width * heads, head_dim)``. Flat arithmetic, as there.
    """
    gather, scatter = _window_order(height, width, window, shift, True, device)
    tokens = window * window
    entry = torch.arange(gather.shape[0] * heads, device=device)
    head = torch.div(entry, tokens, rounding_mode="floor") % heads
    slot = torch.div(entry, heads * tokens, rounding_mode="floor") * tokens + entry % tokens
    head_gather = gather[slot] * heads + head
    entry = torch.arange(scatter.shape[0] * heads, device=device)
    head = entry % heads
    slot = scatter[torch.div(entry, heads, rounding_mode="floor")]
    windows, offsets = torch.div(slot, tokens, rounding_mode="floor"), slot % tokens
    return head_gather, (windows * heads + head) * tokens + offsets


def _shift_mask(
    height: int, width: int, window: int, shift: int, heads: int, device: torch.device, masked: float = SHIFT_MASK_VALUE
) -> Tensor:
    """Additive ``(num_windows * heads, N, N)`` mask of a shifted-window layer on a padded ``height x width``
    map (window-major, the same for every head).

    After the cyclic shift, a window at the bottom or right edge holds tokens from up to three
    regions per axis that are not neighbours in the image; tokens of different regions must not attend
    to each other (their score gets ``masked`` added). Built from flat index arithmetic (see
    :func:`_window_order`): no tensor has a ``num_windows`` axis of its own, whose size may be 1.
    """
    rows, cols = height // window, width // window
    tokens = window * window

    def region(token: Tensor, window_row: Tensor, window_col: Tensor) -> Tensor:
        row = window_row * window + torch.div(token, window, rounding_mode="floor")
        col = window_col * window + token % window
        row_region = (row >= height - window).long() + (row >= height - shift).long()
        col_region = (col >= width - window).long() + (col >= width - shift).long()
        return row_region * 3 + col_region

    entry = torch.arange(rows * cols * heads * tokens * tokens, device=device)
    index = torch.div(entry, heads * tokens * tokens, rounding_mode="floor")
    window_row, window_col = torch.div(index, cols, rounding_mode="floor"), _floor_mod(index, cols)
    query, key = torch.div(entry, tokens, rounding_mode="floor") % tokens, entry % tokens
    differs = region(query, window_row, window_col) != region(key, window_row, window_col)
    mask = torch.zeros(differs.shape, device=device).masked_fill_(differs, masked)
    return mask.view(rows * cols * heads, tokens, tokens)


class SwinEmbeddings(nn.Module):
    """Stem (keys ``embeddings.*``): non-overlapping patch projection, norm, optional absolute positions.

    Returns channels-last ``(B, H / patch_size, W / patch_size, embed_dim)`` maps (inputs are zero-padded at
    the bottom and right to whole patches).

    Args:
        num_channels: Input channels.
        embed_dim: Channels of the patch embeddings.
        patch_size: Side of the square patches (the stride of the stem).
        position_grid: ``(rows, cols)`` patch grid of learned absolute position embeddings (key
            ``position_embeddings``), resampled bicubically for other grids; ``None``: no such embeddings.
        dropout: Dropout on the embeddings (training only).
    """

    def __init__(
        self,
        num_channels: int,
        embed_dim: int,
        patch_size: int,
        *,
        position_grid: tuple[int, int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        patch = patch_size
        self.patch_size = patch
        self.patch_embeddings = module_group(
            projection=nn.Conv2d(num_channels, embed_dim, kernel_size=patch, stride=patch)
        )
        self.norm = nn.LayerNorm(embed_dim)  # transformers leaves this one at the default eps
        self.grid = position_grid or (0, 0)
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], embed_dim)) if position_grid is not None else None
        )
        self.dropout = dropout

    def forward(self, pixel_values: Tensor) -> Tensor:
        """``(B, num_channels, H, W)`` pixels to the channels-last patch embeddings."""
        projection = self.patch_embeddings.projection
        assert isinstance(projection, nn.Conv2d)
        check_pixel_channels(pixel_values, projection.in_channels, "Swin")
        patch = self.patch_size
        height, width = pixel_values.shape[-2:]
        # Zero-pad to whole patches (bottom and right), as transformers does. Written as "round up to a
        # multiple" so that traced sizes stay simple expressions ((H + p - 1) // p patches).
        pad_bottom = (height + patch - 1) // patch * patch - height
        pad_right = (width + patch - 1) // patch * patch - width
        if torch.compiler.is_compiling() or pad_bottom or pad_right:
            pixel_values = F.pad(pixel_values, (0, pad_right, 0, pad_bottom))
        x = self.norm(projection(pixel_values).permute(0, 2, 3, 1))
        if self.position_embeddings is not None:
            x = x + self._positions(x.shape[1], x.shape[2])
        return F.dropout(x, self.dropout, self.training)

    def _positions(self, height: int, width: int) -> Tensor:
        assert self.position_embeddings is not None
        table = self.position_embeddings.view(1, *self.grid, -1)
        if not torch.compiler.is_compiling() and (height, width) == self.grid:
            return table
        # Traced, always resample: no guard on the size, and bicubic resampling to the same size is the
        # identity (its weights at integer positions are exactly 1 and 0).
        # Other input sizes: resample the grid (transformers raises here unless asked to interpolate).
        table = F.interpolate(table.permute(0, 3, 1, 2), size=(height, width), mode="bicubic", align_corners=False)
        return table.permute(0, 2, 3, 1)


class WindowSelfAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative-position bias.

    Keys ``attention.self.*``: the query/key/value projections and the bias table; the output
    projection is the sibling ``attention.output.dense``.

    Windows arrive as ``(B, N, num_windows, C)``. Each projection's output then reads as
    ``(B, N, num_windows * heads, head_dim)`` without a copy, so attention runs with windows folded into
    the head axis, and the per-window bias (relative positions + shift mask) broadcasts over the batch.
    Traced (torch.compile / torch.export), the padded map is projected first and gathered into the same
    folded layout per head (see :meth:`SwinBlock._attend`).

    Args:
        dim: Channels of the tokens.
        num_heads: Attention heads.
        window_size: Side of the square windows.
        qkv_bias: Whether the query, key and value projections have a bias (the key's also needs
            :attr:`key_bias`).
        attention_dropout: Dropout on the attention probabilities (training only).
        save_position_index: Whether ``relative_position_index`` (derived from ``window_size``) is saved
            with the weights, as some checkpoint formats (MaskFormer-Swin) expect; else it is not saved.
    """

    key_bias: ClassVar[bool] = True
    """Whether the key projection has a bias (when ``qkv_bias``)."""
    softmax_scale: ClassVar[float | None] = None
    """Factor of the query-key products; ``None`` is ``head_dim ** -0.5``."""
    shift_mask_value: ClassVar[float] = SHIFT_MASK_VALUE
    """Added to the scores of token pairs from different regions of a shifted window."""

    relative_position_index: Tensor

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        *,
        qkv_bias: bool = True,
        attention_dropout: float = 0.0,
        save_position_index: bool = False,
    ) -> None:
        super().__init__()
        window = window_size
        self.num_heads = num_heads
        self.window_size = window
        self.dropout = attention_dropout
        self.query, self.key, self.value = query_key_value_projections(
            dim, bias=qkv_bias, key_bias=qkv_bias and self.key_bias
        )
        self._add_bias_parameters(num_heads)
        # Entry (i, j): the table row of the offset between tokens i and j of a window. Derived from
        # window_size, so not saved by default (older Swin checkpoints hold it; SwinBackbone ignores that key).
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        offsets = coords[:, :, None] - coords[:, None, :] + (window - 1)
        index = offsets[0] * (2 * window - 1) + offsets[1]
        self.register_buffer("relative_position_index", index, persistent=save_position_index)
        self._bias_cache: dict[tuple[Any, ...], Tensor] = {}
        self._bias_cache_stamp: tuple[tuple[int, int], ...] | None = None

    def _add_bias_parameters(self, num_heads: int) -> None:
        """Create the parameters the relative-position bias is computed from: here a learned table."""
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * self.window_size - 1) ** 2, num_heads))

    def _bias_parameters(self) -> list[Tensor]:
        """The parameters :meth:`_bias_table` reads (a cached bias is reused only while they are unchanged)."""
        return [self.relative_position_bias_table]

    def _bias_table(self) -> Tensor:
        """The ``((2 * window - 1) ** 2, heads)`` bias of every relative offset (row-major over ``(dy, dx)``)."""
        return self.relative_position_bias_table

    def _relative_bias(self) -> Tensor:
        """The ``(heads, N, N)`` relative-position bias of one window, ``N = window_size ** 2``."""
        tokens = self.window_size**2
        return self._bias_table()[self.relative_position_index.view(-1)].view(tokens, tokens, -1).permute(2, 0, 1)

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        self._bias_cache.clear()  # cached tables must follow .to() / .half() / .cuda()
        return super()._apply(fn, recurse)  # type: ignore[no-untyped-call]  # torch leaves _apply unannotated

    def attention_bias(self, height: int, width: int, shift: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """Relative-position bias plus shift mask for a padded ``height x width`` map.

        Returns:
            ``(1, num_windows * heads, N, N)``, window-major like the folded query.
        """
        # Caching is only safe while the parameters cannot change under us or need a graph: reuse needs
        # eval mode, no gradient into them, and their storage and versions unchanged.
        if self.training or torch.compiler.is_compiling():
            return self._bias(height, width, shift, dtype, device)
        parameters = self._bias_parameters()
        if torch.is_grad_enabled() and any(parameter.requires_grad for parameter in parameters):
            return self._bias(height, width, shift, dtype, device)
        stamp = tuple((parameter.data_ptr(), parameter._version) for parameter in parameters)
        if stamp != self._bias_cache_stamp:
            self._bias_cache.clear()
            self._bias_cache_stamp = stamp
        key = (height, width, shift, dtype, device)
        bias = self._bias_cache.get(key)
        if bias is None:
            # Outside inference mode, so a table cached in one mode serves calls in the other.
            with torch.inference_mode(False), torch.no_grad():
                bias = self._bias(height, width, shift, dtype, device)
            if len(self._bias_cache) >= _CACHED_SIZES:
                self._bias_cache.pop(next(iter(self._bias_cache)))
            self._bias_cache[key] = bias
        return bias

    def _bias(self, height: int, width: int, shift: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        bias = self._relative_bias()
        num_windows = (height // self.window_size) * (width // self.window_size)
        bias = bias.repeat(num_windows, 1, 1)
        if shift:
            heads = self.num_heads
            bias = bias + size_table(
                _shift_mask, height, width, self.window_size, shift, heads, device, self.shift_mask_value
            )
        return bias[None].to(dtype)

    def forward(
        self, windows: Tensor, bias: Tensor, need_weights: bool, gather: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Attend within windows; returns the context and, if asked, the attention probabilities
        ``(B * num_windows, heads, N, N)`` as transformers returns them.

        Eager: ``windows`` are ``(B, N, num_windows, C)`` and so is the context. Traced (``gather`` given,
        see :meth:`SwinBlock._attend`): ``windows`` are the padded map's tokens ``(B, T, C)``, gathered into
        windows per head after the projections, and the context is ``(B, num_windows * heads * N, head_dim)``.
        """
        tokens = self.window_size**2
        folded = bias.shape[1]  # num_windows * heads
        query, key, value = self._qkv(windows)
        if gather is None:
            batch, _, num_windows, channels = windows.shape
            query, key, value = (x.flatten(2, 3).transpose(1, 2) for x in (query, key, value))
        else:
            batch, channels = windows.shape[0], windows.shape[-1]
            num_windows = folded // self.num_heads
            query, key, value = (
                x.flatten(1, 2).index_select(1, gather).view(batch, folded, tokens, channels // self.num_heads)
                for x in (query, key, value)
            )
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scale = query.shape[-1] ** -0.5 if self.softmax_scale is None else self.softmax_scale
            scores = torch.matmul(query, key.transpose(-1, -2)) * scale + bias
            weights = F.dropout(scores.softmax(-1, dtype=torch.float32).to(query.dtype), dropout, self.training)
            context = torch.matmul(weights, value)
            weights = weights.view(batch * num_windows, self.num_heads, tokens, tokens)
        else:
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=bias, dropout_p=dropout, scale=self.softmax_scale
            )
        if gather is not None:
            return context.flatten(1, 2), weights
        return context.transpose(1, 2).reshape(windows.shape), weights

    def _qkv(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Query, key and value of ``(..., C)`` tokens, each split into heads: ``(..., heads, head_dim)``."""
        return (
            self._split_heads(linear(tokens, self.query)),
            self._split_heads(linear(tokens, self.key)),
            self._split_heads(linear(tokens, self.value)),
        )

    def _split_heads(self, x: Tensor) -> Tensor:
        """``(..., C)`` -> ``(..., heads, head_dim)``."""
        return x.unflatten(-1, (self.num_heads, x.shape[-1] // self.num_heads))


class WindowAttention(nn.Module):
    """Keys ``attention.*``: self-attention within windows (``self``) and its output projection (``output.dense``).

    Args:
        dim: Channels of the tokens.
        num_heads: Attention heads.
        window_size: Side of the square windows.
        **options: Keyword arguments of :attr:`self_attention_class` (``qkv_bias``, ``attention_dropout``,
            ``save_position_index``, and those a subclass adds).
    """

    self_attention_class: ClassVar[type[WindowSelfAttention]] = WindowSelfAttention
    """The self-attention module built under the key ``self``."""

    def __init__(self, dim: int, num_heads: int, window_size: int, **options: Any) -> None:
        super().__init__()
        self.self = self.self_attention_class(dim, num_heads, window_size, **options)  # "self" is the checkpoint's name
        self.output = module_group(dense=nn.Linear(dim, dim))

    def forward(
        self,
        windows: Tensor,
        height: int,
        width: int,
        shift: int,
        need_weights: bool,
        order: tuple[Tensor, Tensor, int, int] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attention over ``windows`` of a padded ``height x width`` map shifted by ``shift``.

        ``order`` (traced only): ``(gather, scatter, map_height, map_width)`` of
        :func:`_head_window_order`; ``windows`` are then the padded map's tokens and the result is the
        unpadded ``(B, map_height, map_width, C)`` map.
        """
        bias = self.self.attention_bias(height, width, shift, windows.dtype, windows.device)
        if order is not None:
            gather, scatter, map_height, map_width = order
            context, weights = self.self(windows, bias, need_weights, gather)
            context = context.index_select(1, scatter).view(windows.shape[0], map_height, map_width, -1)
            return linear(context, self.output.dense), weights
        context, weights = self.self(windows, bias, need_weights)
        return linear(context, self.output.dense), weights


class SwinBlock(CheckpointableLayer):
    """One transformer block: (shifted-)window attention then an MLP, each a pre-norm residual branch.

    The unit of gradient checkpointing (and of FSDP2 sharding): see :class:`~backbones.layers.CheckpointableLayer`.

    Args:
        dim: Channels.
        num_heads: Attention heads.
        window_size: Side of the square windows.
        shift: Cyclic shift of the window grid (0 for regular windows; Swin shifts every second block by
            half a window).
        mlp_ratio: Hidden width of the MLP, relative to ``dim``.
        qkv_bias: Whether the query, key and value projections have a bias.
        hidden_act: Activation of the MLP (a name of :data:`backbones.activations.ACTIVATIONS`).
        layer_norm_eps: Epsilon of the two layer norms.
        hidden_dropout: Dropout on the MLP output (training only).
        attention_dropout: Dropout on the attention probabilities (training only).
        attention_output_dropout: Dropout on the attention branch's output (training only); ``None``:
            ``hidden_dropout``, as transformers' Swin (MaskFormer-Swin and Swin V2 use ``attention_dropout``).
        drop_path: Stochastic-depth rate of the attention branch (training only; transformers' Swin applies
            it to that branch only).
        **attention_options: Further keyword arguments of :attr:`attention_class` (e.g.
            ``save_position_index``, or those a subclass's attention adds).
    """

    attention_class: ClassVar[type[WindowAttention]] = WindowAttention
    """The attention module built under the key ``attention``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        window_size: int,
        shift: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-5,
        hidden_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        attention_output_dropout: float | None = None,
        drop_path: float = 0.0,
        **attention_options: Any,
    ) -> None:
        super().__init__()
        hidden = int(mlp_ratio * dim)
        window = window_size
        self.layernorm_before = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.attention = self.attention_class(
            dim, num_heads, window, qkv_bias=qkv_bias, attention_dropout=attention_dropout, **attention_options
        )
        self.layernorm_after = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.intermediate = module_group(dense=nn.Linear(dim, hidden))
        self.output = module_group(dense=nn.Linear(hidden, dim))
        self.activation = make_activation(hidden_act)
        self.window_size = window
        self.shift = shift
        self.dropout = hidden_dropout
        self.attention_dropout = hidden_dropout if attention_output_dropout is None else attention_output_dropout
        self.drop_path = drop_path

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """``(B, H, W, C)`` to ``(B, H, W, C)``; also the attention probabilities if ``need_weights``."""
        branch, weights = self._attend(self.layernorm_before(x), need_weights)
        x = x + self._drop_path(F.dropout(branch, self.attention_dropout, self.training))
        branch = linear(linear(self.layernorm_after(x), self.intermediate.dense, self.activation), self.output.dense)
        # transformers applies stochastic depth to the attention branch only; so do we.
        return x + F.dropout(branch, self.dropout, self.training), weights

    def _attend(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """(Shifted-)window attention over a ``(B, H, W, C)`` map; returns ``(B, H, W, C)`` and the weights."""
        batch, height, width, channels = x.shape
        window, shift = self.window_size, self.shift
        # Like transformers' backbone (always_partition=True): the window never shrinks to the map, the
        # map is padded up to whole windows instead (padded tokens take part in attention, as there).
        # So no branch depends on the input size: a map smaller than the window is one padded window,
        # and the shift stays on (transformers' non-backbone models clamp the window to small maps
        # instead, a size-dependent branch our forward does not have).
        padded_height = (height + window - 1) // window * window
        padded_width = (width + window - 1) // window * window
        x = _pad_bottom_right(x, padded_height - height, padded_width - width)
        if torch.compiler.is_compiling():
            # Traced: project the padded map, then gather the windows per head with one index table, and
            # scatter the context straight back to the unpadded map. No tensor then has an axis of
            # num_windows (or windows-per-row) alone: such an axis may be 1 (deep stages often hold a
            # single window), and every view or layout check on it would become a shape guard.
            heads = self.attention.self.num_heads
            gather, scatter = size_table(_head_window_order, height, width, window, shift, heads, x.device)
            tokens = x.reshape(batch, padded_height * padded_width, channels)
            order = (gather, scatter, height, width)
            return self.attention(tokens, padded_height, padded_width, shift, need_weights, order)
        # Eager: one gather into token-major windows, (B, N, num_windows, C); the head split then folds
        # windows and heads into one axis without a copy.
        gather, scatter = size_table(_window_order, height, width, window, shift, False, x.device)
        num_windows = (padded_height // window) * (padded_width // window)
        tokens = x.reshape(batch, padded_height * padded_width, channels).index_select(1, gather)
        windows = tokens.view(batch, window * window, num_windows, channels)
        attended, weights = self.attention(windows, padded_height, padded_width, shift, need_weights)
        # The scatter also drops the padding (no crop: a slice's bounds would need a guard when traced).
        tokens = attended.reshape(batch, padded_height * padded_width, channels).index_select(1, scatter)
        return tokens.view(batch, height, width, channels), weights

    def _drop_path(self, x: Tensor) -> Tensor:
        """Stochastic depth of a residual branch at this block's rate."""
        return drop_path(x, self.drop_path, self.training)


def merge_neighbours(x: Tensor) -> Tensor:
    """``(B, H, W, C)`` -> ``(B, ceil(H / 2), ceil(W / 2), 4C)``: each 2x2 neighbourhood concatenated (odd
    sizes padded with zeros at the bottom and right).

    The four neighbours come in the checkpoints' order: ``(0, 0), (1, 0), (0, 1), (1, 1)`` as (row, column).
    """
    batch, height, width, channels = x.shape
    rows, cols = (height + 1) // 2, (width + 1) // 2
    x = _pad_bottom_right(x, 2 * rows - height, 2 * cols - width)
    # The column offset is the slower axis. One reshape (no strided slices), which traced sizes also keep simple.
    x = x.reshape(batch, rows, 2, cols, 2, channels).permute(0, 1, 3, 4, 2, 5)
    return x.reshape(batch, rows, cols, 4 * channels)


class PatchMerging(nn.Module):
    """Halves the resolution of a ``(B, H, W, dim)`` map: each 2x2 neighbourhood is concatenated (4 * dim) and
    projected to 2 * dim (key ``reduction``), with a layer norm (key ``norm``) before or after the projection.

    Args:
        dim: Channels in (``2 * dim`` out).
        norm_after: Normalise the projected ``2 * dim`` channels (Swin V2) instead of the concatenated
            ``4 * dim`` ones (Swin).
    """

    def __init__(self, dim: int, *, norm_after: bool = False) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim if norm_after else 4 * dim)
        self.norm_after = norm_after

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, dim)`` to ``(B, ceil(H / 2), ceil(W / 2), 2 * dim)``."""
        if self.norm_after:
            return self.norm(self.reduction(merge_neighbours(x)))
        return self.reduction(self.norm(merge_neighbours(x)))


class SwinStage(nn.Module):
    """A run of blocks (key ``blocks``) and the patch merging that feeds the next stage (key ``downsample``).

    Args:
        blocks: The stage's blocks, in order (Swin alternates regular and shifted windows).
        downsample: The patch merging after this stage, or ``None`` (the last stage, or a pruned model).
    """

    def __init__(self, blocks: Iterable[SwinBlock], downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(
        self, x: Tensor, need_weights: bool, block_states: list[Tensor] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Run the blocks over a ``(B, H, W, C)`` map (without the patch merging).

        Args:
            x: The stage input.
            need_weights: Also return the last block's attention probabilities (as transformers does).
            block_states: If given, every block's input and output are appended to it, in order (the
                per-block hidden states transformers' MaskFormer-Swin returns).

        Returns:
            The stage output and the last block's attention probabilities (``None`` unless asked).
        """
        weights = None
        last = len(self.blocks) - 1
        for depth, block in enumerate(self.blocks):
            if block_states is not None:
                block_states.append(x)
            x, weights = block(x, need_weights and depth == last)
            if block_states is not None:
                block_states.append(x)
        return x, weights

    def merge(self, x: Tensor) -> Tensor:
        """The patch merging that turns this stage's output into the next stage's input."""
        assert self.downsample is not None, "the last stage has no patch merging"
        return self.downsample(x)


class SwinEncoder(nn.Module):
    """The stages under the key ``layers`` (pruning shortens the list).

    Args:
        stages: The stages, shallowest first.
    """

    def __init__(self, stages: Iterable[SwinStage]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(stages)


class SwinTrunk(nn.Module):
    """The stem and the stages under the keys ``embeddings`` and ``encoder`` (``swin.*`` in Swin checkpoints).

    Unlike transformers' trunk, no final ``layernorm``: a backbone's forward never uses it.

    Args:
        embeddings: The stem.
        encoder: The stages.
    """

    def __init__(self, embeddings: SwinEmbeddings, encoder: SwinEncoder) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.encoder = encoder
