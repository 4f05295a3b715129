"""Two-dimensional (dilated) neighbourhood attention with relative position bias, in plain PyTorch.

Neighbourhood attention (Hassani et al., https://arxiv.org/abs/2204.07143) lets every query attend to
the ``kernel_size x kernel_size`` keys around it; the dilated variant (https://arxiv.org/abs/2209.15001)
spreads those keys ``dilation`` positions apart. The semantics are natten's, axis by axis:

* positions with the same residue modulo ``dilation`` form a sub-sequence, and a query only sees keys
  of its own sub-sequence;
* on that sub-sequence the window of ``kernel_size`` keys is centred on the query and, near a border,
  shifted inwards so that it stays whole (every query attends to exactly ``kernel_size**2`` keys);
* the bias of a key is ``rpb[head, dy + kernel_size - 1, dx + kernel_size - 1]``, where ``(dy, dx)`` is
  the key's offset from the query counted in dilated steps.

This needs every axis to be at least ``kernel_size * dilation`` long (each sub-sequence then holds a
whole window); the NAT and DiNAT blocks pad smaller maps, as transformers does.

How it is computed: along each axis the sub-sequences are laid end to end and cut into tiles of
consecutive queries; the keys a tile needs form a run of at most ``tile + kernel_size - 1`` positions
of the same sub-sequence. A pair of (row tile, column tile) is then one small dense attention problem,
``tile**2`` queries against at most ``(tile + kernel_size - 1)**2`` keys, with every key outside a
query's neighbourhood masked out, solved by ``scaled_dot_product_attention`` for all tiles at once.
Keys and values are copied about ``((tile + kernel_size - 1) / tile)**2`` times (about 3.4 for the
default tile, ``kernel_size``), not ``kernel_size**2`` times as a per-query gather would; in exchange
each query is scored against that many more keys than its window holds, as a few large matrix
products instead of many tiny ones. ``plugins/nat/benchmarks/bench_attention.py`` measures both
against brute force. Index tables depend on sizes only; they are cached per size in eager mode and
built inside the graph under ``torch.compile``.

With its ``padding`` argument, :func:`neighborhood_attention_2d` is the same computation on a map that is
virtually zero-padded (bottom and right) to at least ``kernel_size * dilation``, for maps of symbolic size
(``torch.export`` with dynamic height and width): its tiles and spans have fixed sizes and every size-dependent
choice is a tensor computation, so one traced program, free of guards on the size, serves maps both smaller
and larger than the window.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["neighborhood_attention_2d", "neighborhood_indices"]


class _AxisTiles(NamedTuple):
    """Index tables of one axis (see :func:`_axis_tiles`)."""

    queries: Tensor
    """``(tiles, tile)`` position of each query slot (padding slots repeat a real position)."""
    keys: Tensor
    """``(tiles, span)`` position of each key slot (padding slots repeat a real position)."""
    bias: Tensor
    """``(tiles, tile, span)`` bias row (or column) of each (query slot, key slot) pair; ``2K - 1`` when
    the key is outside the query's window."""
    kernel_slots: Tensor
    """``(tiles, tile, kernel_size)`` key slot of each kernel offset of each query slot."""
    slots: Tensor
    """``(length,)`` query slot (``tile_index * tile + slot``) of each position; every position has one."""


def neighborhood_indices(length: int, kernel_size: int, dilation: int, device: torch.device | None = None) -> Tensor:
    """Positions of the keys each query attends to along one axis.

    Args:
        length: Length of the axis (at least ``kernel_size * dilation``).
        kernel_size: Window size (odd).
        dilation: Distance between neighbouring keys.
        device: Device of the returned table.

    Returns:
        ``(length, kernel_size)`` integer table: entry ``[i, a]`` is the position of the ``a``-th key of
        query ``i`` (keys in ascending order).
    """
    _check_axis(length, kernel_size, dilation, "length")
    position = torch.arange(length, device=device)
    residue, index = position % dilation, position // dilation
    segment = (length - residue + dilation - 1) // dilation
    start = torch.minimum((index - kernel_size // 2).clamp(min=0), segment - kernel_size)
    offsets = torch.arange(kernel_size, device=device)
    return (start[:, None] + offsets) * dilation + residue[:, None]


def _tile_shape(length: int, kernel_size: int, dilation: int, tile: int) -> tuple[int, int, int]:
    """``(tile, span, tiles per sub-sequence)`` of one axis."""
    longest = -(-length // dilation)
    if longest <= tile + kernel_size - 1:
        tile = longest  # one tile holds a whole sub-sequence: plain masked attention on it
    return tile, min(tile + kernel_size - 1, longest), -(-longest // tile)


def _axis_tiles(length: int, kernel_size: int, dilation: int, tile: int, device: torch.device) -> _AxisTiles:
    """Cut one axis into tiles of queries and the runs of keys they need (see the module docstring).

    Sub-sequence ``r`` (positions ``r, r + d, ...``) is cut into ``count`` tiles of ``tile`` queries;
    slot ``u`` of tile ``m`` holds the query at index ``m * tile + u`` of the sub-sequence. Shorter
    sub-sequences leave padding slots, which repeat the sub-sequence's last query.
    """
    tile, span, count = _tile_shape(length, kernel_size, dilation, tile)
    residue = torch.arange(dilation, device=device).view(-1, 1, 1)
    segment = (length - residue + dilation - 1) // dilation
    index = torch.arange(count, device=device).view(1, -1, 1) * tile + torch.arange(tile, device=device)
    index = torch.minimum(index, segment - 1)  # (dilation, count, tile)
    queries = index * dilation + residue
    return _tiles_from_slots(index, queries, segment, residue, length, kernel_size, dilation, tile, span, count)


def _tiles_from_slots(
    index: Tensor,
    queries: Tensor,
    segment: Tensor,
    residue: Tensor,
    length: int,
    kernel_size: int,
    dilation: int,
    tile: int,
    span: int,
    count: int,
) -> _AxisTiles:
    """The tables of one axis, given each query slot's ``index`` in its sub-sequence and its position.

    ``segment`` is the number of key positions of each sub-sequence; the rest (windows, key runs, the
    relative-bias index, kernel slots, the slot of each position) follows from the window rule.
    """
    window = torch.minimum((index - kernel_size // 2).clamp(min=0), segment - kernel_size)
    first = torch.minimum(window[..., :1], segment - span).clamp(min=0)
    key_index = first + torch.arange(span, device=index.device)  # (dilation, count, span)

    key, start = key_index[..., None, :], window[..., :, None]
    inside = (key >= start) & (key < start + kernel_size)
    bias = torch.where(inside, key - index[..., :, None] + kernel_size - 1, 2 * kernel_size - 1)
    kernel_slots = window[..., None] - first[..., None] + torch.arange(kernel_size, device=index.device)

    position = torch.arange(length, device=index.device)
    within = position // dilation
    tiles = dilation * count
    return _AxisTiles(
        queries=queries.reshape(tiles, tile),
        keys=(torch.minimum(key_index, segment - 1) * dilation + residue).reshape(tiles, span),
        bias=bias.reshape(tiles, tile, span),
        kernel_slots=kernel_slots.reshape(tiles, tile, kernel_size),
        slots=((position % dilation) * count + within // tile) * tile + within % tile,
    )


class _Plan(NamedTuple):
    """Index tables of one ``(height, width)`` problem; 2-D tables are tile-major, rows before columns."""

    rows: _AxisTiles
    columns: _AxisTiles
    queries: Tensor
    """``(tiles * tile_h * tile_w,)`` flat position of each query slot."""
    keys: Tensor
    """``(tiles * span_h * span_w,)`` flat position of each key slot."""
    bias: Tensor
    """``(tiles * tile_h * tile_w * span_h * span_w,)`` entry of the flattened ``2K x 2K`` bias table
    (``-inf`` in its last row and column) of each (query slot, key slot) pair; int32, the largest table."""
    slots: Tensor
    """``(height * width,)`` query slot of each flat position."""


def _outer(row: Tensor, column: Tensor, scale: int) -> Tensor:
    """``row * scale + column`` over every (row tile, column tile) pair and every slot pair, flattened.

    ``row`` is ``(row tiles, *slots)`` and ``column`` is ``(column tiles, *slots)`` with the same number of
    slot axes; the result is ordered ``(row tile, column tile, row slot 0, column slot 0, row slot 1, ...)``.
    """
    extra = row.dim() - 1
    row_shape, column_shape = [row.shape[0], 1], [1, column.shape[0]]
    for axis in range(extra):
        row_shape += [row.shape[axis + 1], 1]
        column_shape += [1, column.shape[axis + 1]]
    return (row.reshape(row_shape) * scale + column.reshape(column_shape)).reshape(-1)


def _plan(height: int, width: int, kernel_size: int, dilation: int, tile: int, device: torch.device) -> _Plan:
    rows = _axis_tiles(height, kernel_size, dilation, tile, device)
    columns = _axis_tiles(width, kernel_size, dilation, tile, device)
    row_tile, column_tile = rows.queries.shape[1], columns.queries.shape[1]
    slots = _outer(rows.slots // row_tile, columns.slots // column_tile, columns.queries.shape[0])
    slots = slots.view(height, width) * (row_tile * column_tile)
    slots = slots + (rows.slots % row_tile)[:, None] * column_tile + columns.slots % column_tile
    return _Plan(
        rows=rows,
        columns=columns,
        queries=_outer(rows.queries, columns.queries, width),
        keys=_outer(rows.keys, columns.keys, width),
        bias=_outer(rows.bias, columns.bias, 2 * kernel_size).to(torch.int32),
        slots=slots.reshape(-1),
    )


def _padded_axis_tiles(length: int, kernel_size: int, dilation: int, tile: int, device: torch.device) -> _AxisTiles:
    """:func:`_axis_tiles` of an axis of ``length`` real positions, zero-padded to ``kernel_size * dilation``.

    Shapes depend on ``length`` only through the tile count, so a symbolic ``length`` creates no guard:
    the tile is always ``tile`` and the span ``tile + kernel_size - 1`` (key slots past a sub-sequence's
    end repeat its last position, outside every window, so masked). Windows are placed on the padded
    axis, ``max(length, kernel_size * dilation)`` long; only real positions are queries, and key
    positions are those of the padded axis (``>= length`` for the padding).
    """
    # Typed int | SymInt; a SymInt stands in for an int wherever sizes are symbolic.
    padded: int = torch.sym_max(length, kernel_size * dilation)  # type: ignore[assignment]
    span = tile + kernel_size - 1
    # One spare tile (of padding slots), so that the count is at least 2: a count that may be 1 makes
    # the contiguity checks of the tables' views guard on it.
    count = ((length + dilation - 1) // dilation + tile - 1) // tile + 1
    residue = torch.arange(dilation, device=device).view(-1, 1, 1)
    real = (length - residue + dilation - 1) // dilation  # queries of each sub-sequence (0 if none)
    segment = (padded - residue + dilation - 1) // dilation  # its positions on the padded axis
    index = torch.arange(count, device=device).view(1, -1, 1) * tile + torch.arange(tile, device=device)
    index = torch.minimum(index, (real - 1).clamp(min=0))  # (dilation, count, tile)
    # A sub-sequence without real queries (a map shorter than the dilation) fills its slots with the last
    # real position: computed and never read back.
    queries = (index * dilation + residue).clamp(max=length - 1)
    return _tiles_from_slots(index, queries, segment, residue, length, kernel_size, dilation, tile, span, count)


def _padded_plan(height: int, width: int, kernel_size: int, dilation: int, tile: int, device: torch.device) -> _Plan:
    """:func:`_plan` of a virtually padded map; key index ``height * width`` is the padding token."""
    rows = _padded_axis_tiles(height, kernel_size, dilation, tile, device)
    columns = _padded_axis_tiles(width, kernel_size, dilation, tile, device)
    column_tiles = columns.queries.shape[0]
    slots = _outer(rows.slots // tile, columns.slots // tile, column_tiles).view(height, width) * (tile * tile)
    slots = slots + (rows.slots % tile)[:, None] * tile + columns.slots % tile
    keys = _outer(rows.keys, columns.keys, width)
    padding = _outer((rows.keys >= height).long(), (columns.keys >= width).long(), 1) > 0
    return _Plan(
        rows=rows,
        columns=columns,
        queries=_outer(rows.queries, columns.queries, width),
        keys=torch.where(padding, height * width, keys),
        bias=_outer(rows.bias, columns.bias, 2 * kernel_size).to(torch.int32),
        slots=slots.reshape(-1),
    )


@functools.lru_cache(maxsize=32)
def _cached_plan(height: int, width: int, kernel_size: int, dilation: int, tile: int, device: torch.device) -> _Plan:
    # Built outside inference mode, so that a plan cached there also serves calls that record autograd.
    with torch.inference_mode(False), torch.no_grad():
        return _plan(height, width, kernel_size, dilation, tile, device)


def _get_plan(height: int, width: int, kernel_size: int, dilation: int, tile: int, device: torch.device) -> _Plan:
    if torch.compiler.is_compiling():
        return _plan(height, width, kernel_size, dilation, tile, device)
    return _cached_plan(height, width, kernel_size, dilation, tile, device)


def _check_axis(length: int, kernel_size: int, dilation: int, name: str) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size must be a positive odd number (the window is centred on the query), got {kernel_size}"
        )
    if dilation < 1:
        raise ValueError(f"dilation must be a positive integer, got {dilation}")
    if length < kernel_size * dilation:
        raise ValueError(
            f"{name} {length} is smaller than kernel_size * dilation = {kernel_size} * {dilation} = "
            f"{kernel_size * dilation}; pad the map to at least that size first (the NAT and DiNAT blocks "
            "pad their normalised input on the bottom and right, as transformers does)"
        )


def neighborhood_attention_2d(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    rpb: Tensor | None,
    kernel_size: int,
    dilation: int = 1,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    tile_size: int | None = None,
    padding: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Neighbourhood attention over a 2-D map, with natten's semantics (see the module docstring).

    With ``padding``, the map is attended over as if zero-padded (bottom, right) to ``kernel_size * dilation``
    on each side shorter than that: equal to padding the map's input, attending and cropping back, but the
    padding is virtual (every padded key and value is ``padding``). Any map size then works, and sizes only
    enter the computation symbolically, so it traces without guards under ``torch.export`` with dynamic sizes.

    Args:
        query: ``(batch, height, width, heads, head_dim)``.
        key: Same shape as ``query``.
        value: ``(batch, height, width, heads, value_dim)``.
        rpb: Relative position bias ``(heads, 2 * kernel_size - 1, 2 * kernel_size - 1)``, or ``None``.
        kernel_size: Side of the neighbourhood (odd).
        dilation: Distance between neighbouring keys; without ``padding``, ``height`` and ``width`` must be at
            least ``kernel_size * dilation``.
        scale: Factor of the query-key products (default ``head_dim ** -0.5``).
        dropout_p: Dropout probability of the attention weights (pass 0 in eval mode).
        return_weights: Also return the attention weights.
        tile_size: Queries per tile along each axis (default ``kernel_size``); affects speed and
            memory, not the result.
        padding: ``(key_padding, value_padding)``, the ``(heads, head_dim)`` key and ``(heads, value_dim)``
            value of a padded position (what the projections make of the zero padding: their biases); ``None``:
            no padding.

    Returns:
        ``(context, weights)`` of the map's positions: ``context`` is ``(batch, height, width, heads,
        value_dim)``; ``weights`` is ``(batch, heads, height, width, kernel_size ** 2)`` (natten's layout:
        kernel rows major, entry ``a * kernel_size + b`` for the key ``a`` rows and ``b`` columns into the
        window) when ``return_weights``, else ``None``.

    Raises:
        ValueError: When shapes disagree, ``kernel_size`` is even, or the map is too small (without ``padding``).
    """
    if query.dim() != 5 or key.shape != query.shape or value.shape[:4] != query.shape[:4]:
        raise ValueError(
            "query, key and value must be (batch, height, width, heads, dim) tensors with equal leading dimensions; "
            f"got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    batch, height, width, heads, _ = query.shape
    if padding is None:
        _check_axis(height, kernel_size, dilation, "height")
        _check_axis(width, kernel_size, dilation, "width")
    else:
        _check_axis(kernel_size * dilation, kernel_size, dilation, "window")
    side = 2 * kernel_size - 1
    if rpb is not None and tuple(rpb.shape) != (heads, side, side):
        raise ValueError(
            f"rpb must have shape (heads, 2 * kernel_size - 1, 2 * kernel_size - 1) = {(heads, side, side)}, "
            f"got {tuple(rpb.shape)}"
        )
    tile = kernel_size if tile_size is None else tile_size
    if tile < 1:
        raise ValueError(f"tile_size must be a positive integer, got {tile_size}")
    if padding is None:
        plan = _get_plan(height, width, kernel_size, dilation, tile, query.device)
        flat = (batch, height * width, heads)
        key, value = key.reshape(*flat, -1), value.reshape(*flat, -1)
    else:
        plan = _padded_plan(height, width, kernel_size, dilation, tile, query.device)
        # Key index height * width is the padding token (see _padded_plan).
        key, value = (
            torch.cat([x.reshape(batch, height * width, heads, -1), _padding_token(pad, x, batch, heads)], dim=1)
            for x, pad in zip((key, value), padding)
        )
    return _attend(query, key, value, rpb, plan, kernel_size, scale, dropout_p, return_weights)


def _padding_token(padding: Tensor, like: Tensor, batch: int, heads: int) -> Tensor:
    """``(heads, dim)`` key or value of the padding as the ``(batch, 1, heads, dim)`` token appended to a map's."""
    return padding.to(like.dtype).reshape(1, 1, heads, -1).expand(batch, 1, heads, -1)


def _attend(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    rpb: Tensor | None,
    plan: _Plan,
    kernel_size: int,
    scale: float | None,
    dropout_p: float,
    return_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """The attention of a plan: ``query`` ``(B, H, W, heads, dim)``; ``key``, ``value`` ``(B, tokens, heads, dim)``."""
    batch, height, width, heads, head_dim = query.shape
    side = 2 * kernel_size - 1
    (tiles, row_tile), column_tile = plan.rows.queries.shape, plan.columns.queries.shape[1]
    tiles *= plan.columns.queries.shape[0]
    queries_per_tile = row_tile * column_tile
    keys_per_tile = plan.rows.keys.shape[1] * plan.columns.keys.shape[1]

    def gather(flat: Tensor, index: Tensor, per_tile: int) -> Tensor:
        # (B, tokens, heads, dim) -> (B, heads * tiles, per_tile, dim), written contiguously by index_select.
        # Heads and tiles share one axis: the 4-D form reaches the fused attention kernels.
        return flat.transpose(1, 2).index_select(2, index).view(batch, heads * tiles, per_tile, flat.shape[-1])

    q = gather(query.reshape(batch, height * width, heads, head_dim), plan.queries, queries_per_tile)
    k = gather(key, plan.keys, keys_per_tile)
    v = gather(value, plan.keys, keys_per_tile)
    if rpb is None:
        rpb = query.new_zeros(heads, side, side)
    # One more row and column, -inf, that the bias tables use for keys outside a query's window.
    table = F.pad(rpb.to(query.dtype), (0, 1, 0, 1), value=-math.inf).flatten(1)
    bias = table.index_select(1, plan.bias).view(1, heads * tiles, queries_per_tile, keys_per_tile)
    scale = head_dim**-0.5 if scale is None else scale

    weights = None
    if return_weights:
        probabilities = (torch.matmul(q * scale, k.transpose(-1, -2)) + bias).softmax(-1)
        weights = _kernel_weights(probabilities.view(batch, heads, tiles, queries_per_tile, -1), plan, kernel_size)
        context = torch.matmul(F.dropout(probabilities, dropout_p, dropout_p > 0), v)
    else:
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)
    # (B, heads * tiles, slots, dim) -> (B, H * W, heads, dim): one gather puts every query back in place.
    context = context.view(batch, heads, -1, value.shape[-1]).transpose(1, 2).index_select(1, plan.slots)
    return context.view(batch, height, width, heads, value.shape[-1]), weights


def _kernel_weights(probabilities: Tensor, plan: _Plan, kernel_size: int) -> Tensor:
    """Pick each query's ``kernel_size ** 2`` window entries out of its tile's weights, natten's layout.

    ``probabilities`` is ``(B, heads, tiles, queries per tile, keys per tile)``.
    """
    rows, columns = plan.rows, plan.columns
    batch, heads, tiles, queries_per_tile, _ = probabilities.shape
    slot = _outer(rows.kernel_slots, columns.kernel_slots, columns.keys.shape[1])
    slot = slot.view(tiles, queries_per_tile, kernel_size * kernel_size)
    picked = probabilities.gather(-1, slot.expand(batch, heads, -1, -1, -1))
    picked = picked.view(batch, heads, -1, kernel_size * kernel_size).index_select(2, plan.slots)
    return picked.view(batch, heads, rows.slots.numel(), columns.slots.numel(), kernel_size * kernel_size)
