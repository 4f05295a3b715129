"""Swin Transformer backbone.

Paper: Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows" (2021),
https://arxiv.org/abs/2103.14030.

Module attribute names are the checkpoint's key names, in the format transformers writes to disk and
the hub holds (``swin.encoder.layers.N.blocks.M.attention.self.query.weight``, ``intermediate.dense``,
``output.dense``). transformers 5 renames these in memory (``q_proj``, ``mlp.fc1``) but writes the old
names back on save, so matching the files keeps both directions compatible without a key map.

Layout: hidden states stay channels-last ``(batch, height, width, channels)`` from the stem to the
last stage; feature maps are returned as ``(batch, channels, height, width)`` views of them (the
channels-last memory format), so no stage pays for a transposing copy.

Extension points (used by backbones-swinv2 and backbones-maskformer-swin, which subclass these classes
instead of copying them): the attention's ``_add_bias_parameters`` / ``_bias_parameters`` /
``_bias_table`` / ``_qkv`` hooks and its ``key_bias`` / ``softmax_scale`` / ``shift_mask_value``
attributes; the block's ``attention_class``, ``_attention_output_dropout`` and ``_attend`` (the
pad-partition-attend-merge step, separate from the residual wiring in ``forward``); the stage's
``block_class``, ``_make_block`` and ``_make_merging``; and the backbone's ``stage_class``,
``_add_trunk`` / ``_embeddings`` / ``_encoder`` (where the stem and stages live in the checkpoint),
``_add_output_norms``, ``_stage_map`` and ``_hidden_state``.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import Backbone
from backbones.activations import make_activation
from backbones.layers import CheckpointableLayer, drop_path

from ._config import SwinConfig, SwinFamilyConfig

__all__ = ["SwinBackbone"]

# The additive mask value transformers (and the original code) use between shifted-window regions.
_MASKED = -100.0
# Input sizes whose attention biases one attention module keeps (a few sizes alternate in practice).
_CACHED_SIZES = 8


class _Holder(nn.Module):
    """Holds one module under the checkpoint's name for it (``intermediate.dense``); calls it."""

    def __init__(self, name: str, module: nn.Module) -> None:
        super().__init__()
        self.add_module(name, module)
        self._held = name

    def forward(self, x: Tensor) -> Tensor:
        return self._modules[self._held](x)  # type: ignore[misc]


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


def _table(build: Any, *args: Any) -> Any:
    """``build(*args)`` (an index or mask table that depends on sizes only), cached across calls.

    Under ``torch.compile`` the table is built in the graph instead: the compiler cannot guard a
    Python-side cache, and it folds such size-only computations itself.
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
    :meth:`_SwinBlock._attend`); ``windows.index_select(1, scatter)`` undoes both and drops the
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
    """:func:`_window_order` for per-head tokens, the layout of traced attention (see :meth:`_SwinBlock._attend`).

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
    height: int, width: int, window: int, shift: int, heads: int, device: torch.device, masked: float = _MASKED
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


class _Embeddings(nn.Module):
    """Stem (keys ``swin.embeddings.*``): non-overlapping patch projection, norm, optional positions."""

    def __init__(self, config: SwinFamilyConfig) -> None:
        super().__init__()
        patch = config.patch_size
        self.patch_size = patch
        self.patch_embeddings = _Holder(
            "projection", nn.Conv2d(config.num_channels, config.embed_dim, kernel_size=patch, stride=patch)
        )
        self.norm = nn.LayerNorm(config.embed_dim)  # transformers leaves this one at the default eps
        size = config.image_size if isinstance(config.image_size, tuple) else (config.image_size,) * 2
        self.grid = (size[0] // patch, size[1] // patch)
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], config.embed_dim))
            if config.use_absolute_embeddings
            else None
        )
        self.dropout = config.hidden_dropout_prob

    def forward(self, pixel_values: Tensor) -> Tensor:
        patch = self.patch_size
        height, width = pixel_values.shape[-2:]
        # Zero-pad to whole patches (bottom and right), as transformers does. Written as "round up to a
        # multiple" so that traced sizes stay simple expressions ((H + p - 1) // p patches).
        pad_bottom = (height + patch - 1) // patch * patch - height
        pad_right = (width + patch - 1) // patch * patch - width
        if torch.compiler.is_compiling() or pad_bottom or pad_right:
            pixel_values = F.pad(pixel_values, (0, pad_right, 0, pad_bottom))
        x = self.norm(self.patch_embeddings(pixel_values).permute(0, 2, 3, 1))
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


class _WindowSelfAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative-position bias.

    Keys ``attention.self.*``: the query/key/value projections and the bias table; the output
    projection is the sibling ``attention.output.dense``.

    Windows arrive as ``(B, N, num_windows, C)``. Each projection's output then reads as
    ``(B, N, num_windows * heads, head_dim)`` without a copy, so attention runs with windows folded into
    the head axis, and the per-window bias (relative positions + shift mask) broadcasts over the batch.
    Traced (torch.compile / torch.export), the padded map is projected first and gathered into the same
    folded layout per head (see :meth:`_SwinBlock._attend`).

    Args:
        config: The architecture.
        dim: Channels of the tokens.
        num_heads: Attention heads.
        window: Side of the windows (default ``config.window_size``).
    """

    key_bias: ClassVar[bool] = True
    """Whether the key projection has a bias (when ``config.qkv_bias``)."""
    softmax_scale: ClassVar[float | None] = None
    """Factor of the query-key products; ``None`` is ``head_dim ** -0.5``."""
    shift_mask_value: ClassVar[float] = _MASKED
    """Added to the scores of token pairs from different regions of a shifted window."""

    relative_position_index: Tensor

    def __init__(self, config: SwinFamilyConfig, dim: int, num_heads: int, window: int | None = None) -> None:
        super().__init__()
        window = config.window_size if window is None else window
        self.num_heads = num_heads
        self.window_size = window
        self.dropout = config.attention_probs_dropout_prob
        self.query = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.key = nn.Linear(dim, dim, bias=config.qkv_bias and self.key_bias)
        self.value = nn.Linear(dim, dim, bias=config.qkv_bias)
        self._add_bias_parameters(num_heads)
        # Entry (i, j): the table row of the offset between tokens i and j of a window. Derived from
        # window_size, so not saved (older checkpoints hold it; SwinBackbone ignores that key).
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        offsets = coords[:, :, None] - coords[:, None, :] + (window - 1)
        self.register_buffer("relative_position_index", offsets[0] * (2 * window - 1) + offsets[1], persistent=False)
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
        return super()._apply(fn, recurse)

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
            bias = bias + _table(
                _shift_mask, height, width, self.window_size, shift, heads, device, self.shift_mask_value
            )
        return bias[None].to(dtype)

    def forward(
        self, windows: Tensor, bias: Tensor, need_weights: bool, gather: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Attend within windows; returns the context and, if asked, the attention probabilities
        ``(B * num_windows, heads, N, N)`` as transformers returns them.

        Eager: ``windows`` are ``(B, N, num_windows, C)`` and so is the context. Traced (``gather`` given,
        see :meth:`_SwinBlock._attend`): ``windows`` are the padded map's tokens ``(B, T, C)``, gathered into
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
            self._split_heads(self.query(tokens)),
            self._split_heads(self.key(tokens)),
            self._split_heads(self.value(tokens)),
        )

    def _split_heads(self, x: Tensor) -> Tensor:
        """``(..., C)`` -> ``(..., heads, head_dim)``."""
        return x.unflatten(-1, (self.num_heads, x.shape[-1] // self.num_heads))


class _WindowAttention(nn.Module):
    """Keys ``attention.*``: self-attention within windows (``self``) and its output projection.

    ``options`` (e.g. a window size) are passed on to :attr:`self_attention_class`.
    """

    self_attention_class: ClassVar[type[_WindowSelfAttention]] = _WindowSelfAttention

    def __init__(self, config: SwinFamilyConfig, dim: int, num_heads: int, **options: Any) -> None:
        super().__init__()
        self.self = self.self_attention_class(config, dim, num_heads, **options)  # "self" is the checkpoint's name
        self.output = _Holder("dense", nn.Linear(dim, dim))

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
            return self.output(context), weights
        context, weights = self.self(windows, bias, need_weights)
        return self.output(context), weights


class _SwinBlock(CheckpointableLayer):
    """One transformer block: (shifted-)window attention then an MLP, each a pre-norm residual branch.

    The unit of gradient checkpointing (and of FSDP2 sharding): see :class:`~backbones.layers.CheckpointableLayer`.

    Args:
        config: The architecture.
        dim: Channels.
        num_heads: Attention heads.
        shift: Cyclic shift of the window grid (0 for regular windows).
        drop_path: Stochastic-depth rate (training only).
        window: Side of the windows (default ``config.window_size``).
        **attention_options: Passed on to :attr:`attention_class`.
    """

    attention_class: ClassVar[type[_WindowAttention]] = _WindowAttention

    def __init__(
        self,
        config: SwinFamilyConfig,
        dim: int,
        num_heads: int,
        shift: int,
        drop_path: float,
        window: int | None = None,
        **attention_options: Any,
    ) -> None:
        super().__init__()
        hidden = int(config.mlp_ratio * dim)
        window = config.window_size if window is None else window
        self.layernorm_before = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = self.attention_class(config, dim, num_heads, window=window, **attention_options)
        self.layernorm_after = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.intermediate = _Holder("dense", nn.Linear(dim, hidden))
        self.output = _Holder("dense", nn.Linear(hidden, dim))
        self.activation = make_activation(config.hidden_act)
        self.window_size = window
        self.shift = shift
        self.dropout = config.hidden_dropout_prob
        self.attention_dropout = self._attention_output_dropout(config)
        self.drop_path = drop_path

    def _attention_output_dropout(self, config: SwinFamilyConfig) -> float:
        """Dropout rate on the attention branch's output (transformers' Swin uses ``hidden_dropout_prob``)."""
        return config.hidden_dropout_prob

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        branch, weights = self._attend(self.layernorm_before(x), need_weights)
        x = x + self._drop_path(F.dropout(branch, self.attention_dropout, self.training))
        branch = self.output(self.activation(self.intermediate(self.layernorm_after(x))))
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
            gather, scatter = _table(_head_window_order, height, width, window, shift, heads, x.device)
            tokens = x.reshape(batch, padded_height * padded_width, channels)
            order = (gather, scatter, height, width)
            return self.attention(tokens, padded_height, padded_width, shift, need_weights, order)
        # Eager: one gather into token-major windows, (B, N, num_windows, C); the head split then folds
        # windows and heads into one axis without a copy.
        gather, scatter = _table(_window_order, height, width, window, shift, False, x.device)
        num_windows = (padded_height // window) * (padded_width // window)
        tokens = x.reshape(batch, padded_height * padded_width, channels).index_select(1, gather)
        windows = tokens.view(batch, window * window, num_windows, channels)
        attended, weights = self.attention(windows, padded_height, padded_width, shift, need_weights)
        # The scatter also drops the padding (no crop: a slice's bounds would need a guard when traced).
        tokens = attended.reshape(batch, padded_height * padded_width, channels).index_select(1, scatter)
        return tokens.view(batch, height, width, channels), weights

    def _drop_path(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_path, self.training)


def _merge_neighbours(x: Tensor) -> Tensor:
    """``(B, H, W, C)`` -> ``(B, ceil(H / 2), ceil(W / 2), 4C)``: each 2x2 neighbourhood concatenated (odd
    sizes padded with zeros at the bottom and right)."""
    batch, height, width, channels = x.shape
    rows, cols = (height + 1) // 2, (width + 1) // 2
    x = _pad_bottom_right(x, 2 * rows - height, 2 * cols - width)
    # Checkpoint order of the four neighbours: (0,0), (1,0), (0,1), (1,1) as (row, column), i.e. the
    # column offset is the slower axis. One reshape (no strided slices), which traced sizes also keep simple.
    x = x.reshape(batch, rows, 2, cols, 2, channels).permute(0, 1, 3, 4, 2, 5)
    return x.reshape(batch, rows, cols, 4 * channels)


class _PatchMerging(nn.Module):
    """Halves the resolution: each 2x2 neighbourhood is concatenated (4C), normalised, projected to 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.reduction(self.norm(_merge_neighbours(x)))


class _SwinStage(nn.Module):
    """Blocks alternating regular and shifted windows; ``downsample`` feeds the next stage."""

    block_class: ClassVar[type[_SwinBlock]] = _SwinBlock

    def __init__(self, config: SwinFamilyConfig, index: int, drop_paths: list[float], last: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            self._make_block(config, index, depth, rate) for depth, rate in enumerate(drop_paths)
        )
        self.downsample: nn.Module | None = None if last else self._make_merging(config.embed_dim * 2**index)

    def _make_block(self, config: SwinFamilyConfig, index: int, depth: int, drop_path: float) -> _SwinBlock:
        """Block ``depth`` of stage ``index``: every second one shifts its windows by half a window."""
        shift = 0 if depth % 2 == 0 else config.window_size // 2
        return self.block_class(config, config.embed_dim * 2**index, config.num_heads[index], shift, drop_path)

    def _make_merging(self, dim: int) -> nn.Module:
        """The patch merging after this stage (``dim`` channels in, ``2 * dim`` out)."""
        return _PatchMerging(dim)

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Returns the stage output and, if asked, its last block's attention weights (as transformers)."""
        weights = None
        for depth, block in enumerate(self.blocks):
            x, weights = block(x, need_weights and depth == len(self.blocks) - 1)
        return x, weights

    def merge(self, x: Tensor) -> Tensor:
        """The patch merging that turns this stage's output into the next stage's input."""
        assert self.downsample is not None, "the last stage has no patch merging"
        return self.downsample(x)


class _Encoder(nn.Module):
    """Keys ``swin.encoder.layers.N``: the stages (pruning shortens the list)."""

    def __init__(self, stages: list[_SwinStage]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(stages)


class _Trunk(nn.Module):
    """Keys ``swin.*``. Unlike transformers, no ``swin.layernorm``: the backbone forward never uses it."""

    def __init__(self, config: SwinFamilyConfig, stages: list[_SwinStage]) -> None:
        super().__init__()
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(stages)


class SwinBackbone(Backbone):
    """Swin Transformer feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the patch embeddings) and ``stage1..stageK``; a stage's feature map is taken
    before its patch merging and passed through its own LayerNorm (``hidden_states_norms.<stage>``),
    exactly as transformers' ``SwinBackbone``. ``hidden_states`` are the stage outputs before those
    norms; ``attentions`` hold the last block's attention probabilities of each stage. Feature maps
    and hidden states are ``(B, C, H, W)`` views of channels-last memory (call ``.contiguous()`` if a
    consumer needs the default layout).

    Args:
        config: The architecture and the output selection.
    """

    config_class = SwinConfig
    base_model_prefix = "swin"  # trunk prefix in SwinForImageClassification checkpoints
    has_attentions = True
    # Saved by transformers before 5.x; recomputed from window_size here.
    ignored_checkpoint_keys = (r"relative_position_index$",)
    reference_class_name = "SwinBackbone"
    stage_class: ClassVar[type[_SwinStage]] = _SwinStage

    config: SwinFamilyConfig

    def __init__(self, config: SwinFamilyConfig) -> None:
        super().__init__(config)
        depths = config.depths
        total = sum(depths)
        rates = [config.drop_path_rate * block / max(total - 1, 1) for block in range(total)]
        starts = [sum(depths[:index]) for index in range(len(depths))]
        stages = [
            self.stage_class(config, index, rates[start : start + depth], last=index == len(depths) - 1)
            for index, (start, depth) in enumerate(zip(starts, depths))
        ]
        self._add_trunk(config, stages)
        self.num_features = [config.embed_dim] + [config.embed_dim * 2**index for index in range(len(depths))]
        self.reductions = [config.patch_size] + [config.patch_size * 2**index for index in range(len(depths))]
        self._add_output_norms()
        self.post_init()

    # -- layout hooks: where the stem, the stages and the output norms live in the checkpoint --------

    def _add_trunk(self, config: SwinFamilyConfig, stages: list[_SwinStage]) -> None:
        """Register the stem and the stages (here under ``swin.embeddings`` and ``swin.encoder``)."""
        self.swin = _Trunk(config, stages)

    def _embeddings(self) -> _Embeddings:
        return self.swin.embeddings

    def _encoder(self) -> _Encoder:
        return self.swin.encoder

    def _add_output_norms(self) -> None:
        """One LayerNorm per selected stage (``hidden_states_norms.<stage>``), as transformers' SwinBackbone."""
        self.hidden_states_norms = nn.ModuleDict(
            {name: nn.LayerNorm(self.out_feature_channels[name]) for name in self.out_features}
        )

    def _stage_map(self, position: int, x: Tensor) -> Tensor:
        """The feature map of stage ``position`` from its channels-last output ``x``."""
        return self.hidden_states_norms[self.stage_names[position]](x).permute(0, 3, 1, 2)

    def _hidden_state(self, x: Tensor) -> Tensor:
        """The ``hidden_states`` entry of a channels-last stage output ``x``: here ``(B, C, H, W)``."""
        return x.permute(0, 3, 1, 2)

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``SwinPreTrainedModel`` does."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, _Embeddings) and module.position_embeddings is not None:
            nn.init.zeros_(module.position_embeddings)
        elif isinstance(module, _WindowSelfAttention):
            nn.init.zeros_(module.relative_position_bias_table)

    def _on_out_features_changed(self) -> None:
        """Keep one output norm per selected stage, as a model built for the new selection would have.

        New norms start at weight 1, bias 0 (transformers' initialisation); norms of deselected stages
        are dropped, so the state dict stays that of a fresh model of this config.
        """
        reference = self._embeddings().norm.weight
        norms = self.hidden_states_norms
        for name in [name for name in norms if name not in self.out_features]:
            del norms[name]
        for name in self.out_features:
            if name not in norms:
                norms[name] = nn.LayerNorm(
                    self.out_feature_channels[name], device=reference.device, dtype=reference.dtype
                )

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        if output_attentions:
            # transformers returns the attentions of every stage; core only runs to the deepest selected one.
            last_stage = self.num_kept_stages - 1
        names = self.stage_names
        wanted = set(self.out_positions)
        stages = cast("list[_SwinStage]", list(self._encoder().layers))
        maps: list[Tensor | None] = [None] * len(names)
        hidden_states: list[Tensor] = []
        attentions: list[Tensor] = []
        x = self._embeddings()(pixel_values)
        for position in range(last_stage + 1):
            if position:
                if position > 1:
                    x = stages[position - 2].merge(x)
                x, weights = stages[position - 1](x, output_attentions)
                if weights is not None:
                    attentions.append(weights)
            if position in wanted:
                maps[position] = self._stage_map(position, x)
            if output_hidden_states:
                hidden_states.append(self._hidden_state(x))
        return (
            maps,
            tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
        )

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """The stem (0), or stage ``position``'s blocks plus the patch merging that feeds them.

        The merging after stage ``i`` (``layers[i - 1].downsample``) computes stage ``i + 1``'s input, so it
        belongs to stage ``i + 1``: freezing stage ``i`` then leaves its output untouched and everything
        deeper trainable. Output norms (``hidden_states_norms``) belong to no stage.
        """
        if position == 0:
            return [self._embeddings()]
        layers = cast("list[_SwinStage]", list(self._encoder().layers))
        stage = layers[position - 1]
        modules: list[nn.Module] = [stage.blocks]
        if position > 1:
            merging = layers[position - 2].downsample
            assert merging is not None, "a stage before a kept stage has its patch merging"
            modules.insert(0, merging)
        return modules

    def _prune_stages(self, last_stage: int) -> None:
        layers = self._encoder().layers
        del layers[last_stage:]
        if last_stage:
            cast("_SwinStage", layers[-1]).downsample = None  # it only fed the first pruned stage
