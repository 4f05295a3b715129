"""Brute-force references of natten's 2-D neighbourhood attention, written for the tests.

Used three ways: as the reference of ``backbones_nat.attention`` in the op tests, as the fake
``natten.functional`` that transformers 4.53.3 imports in the oracle environment (``natten2dqkrpb`` and
``natten2dav`` with natten 0.14's signatures and layouts), and by ``benchmarks/bench_attention.py``.

Nothing here is shared with the package: the window rules are spelled out as natten's kernels state
them (a case analysis per border), not derived from the clamped form the package uses. Loops and dense
masks keep it obviously right; it is slow and only meant for small maps.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dense_mask", "dense_neighborhood_attention", "key_offsets", "natten2dav", "natten2dqkrpb", "window"]


def window(index: int, length: int, kernel_size: int, dilation: int) -> tuple[int, int]:
    """``(first key position, first bias index)`` of query ``index`` along one axis, natten's rules."""
    half = kernel_size // 2
    reach = half * dilation
    if dilation == 1:
        start = max(index - half, 0)
        if index + half >= length:
            start += length - index - half - 1
        bias = half
        if index < half:
            bias += half - index
        if index + half >= length:
            bias += length - index - 1 - half
        return start, bias
    if index - reach < 0:
        return index % dilation, kernel_size - 1 - index // dilation
    if index + reach >= length:
        residue = index % dilation
        whole = (length // dilation) * dilation
        extra = length - whole
        if residue < extra:
            start = length - extra + residue - 2 * reach
        else:
            start = whole + residue - kernel_size * dilation
        return start, (length - index - 1) // dilation
    return index - reach, half


def key_offsets(length: int, kernel_size: int, dilation: int) -> tuple[list[list[int]], list[list[int]]]:
    """Per query: the positions of its keys and their bias indices along one axis (lists of lists)."""
    positions, biases = [], []
    for index in range(length):
        start, bias = window(index, length, kernel_size, dilation)
        positions.append([start + step * dilation for step in range(kernel_size)])
        biases.append([bias + step for step in range(kernel_size)])
    return positions, biases


def _tables(height: int, width: int, kernel_size: int, dilation: int, device: torch.device) -> tuple[Tensor, ...]:
    """``(key_rows, key_columns, bias_rows, bias_columns)`` of shape ``(H, W, K, K)`` each."""
    if height < kernel_size * dilation or width < kernel_size * dilation:
        raise ValueError("natten needs every axis to be at least kernel_size * dilation long")
    rows, row_bias = key_offsets(height, kernel_size, dilation)
    columns, column_bias = key_offsets(width, kernel_size, dilation)
    shape = (height, width, kernel_size, kernel_size)

    def grid(table: list[list[int]], along_rows: bool) -> Tensor:
        values = torch.tensor(table, device=device)
        if along_rows:
            return values[:, None, :, None].expand(shape)
        return values[None, :, None, :].expand(shape)

    return grid(rows, True), grid(columns, False), grid(row_bias, True), grid(column_bias, False)


def natten2dqkrpb(query: Tensor, key: Tensor, rpb: Tensor | None, kernel_size: int, dilation: int) -> Tensor:
    """natten 0.14's ``natten2dqkrpb``: ``(B, heads, H, W, D)`` queries and keys -> ``(B, heads, H, W, K*K)``
    scores (query-key products plus the relative position bias; the query comes pre-scaled)."""
    batch, heads, height, width, _ = query.shape
    key_rows, key_columns, bias_rows, bias_columns = _tables(height, width, kernel_size, dilation, query.device)
    neighbours = key[:, :, key_rows, key_columns]  # (B, heads, H, W, K, K, D)
    scores = (query[:, :, :, :, None, None, :] * neighbours).sum(-1)
    if rpb is not None:
        scores = scores + rpb[:, bias_rows, bias_columns]
    return scores.reshape(batch, heads, height, width, kernel_size * kernel_size)


def natten2dav(attention: Tensor, value: Tensor, kernel_size: int, dilation: int) -> Tensor:
    """natten 0.14's ``natten2dav``: ``(B, heads, H, W, K*K)`` weights and ``(B, heads, H, W, D)`` values ->
    ``(B, heads, H, W, D)``."""
    batch, heads, height, width, _ = value.shape
    key_rows, key_columns, _, _ = _tables(height, width, kernel_size, dilation, value.device)
    neighbours = value[:, :, key_rows, key_columns]  # (B, heads, H, W, K, K, D)
    weights = attention.view(batch, heads, height, width, kernel_size, kernel_size, 1)
    return (weights * neighbours).sum((-3, -2))


def dense_mask(
    height: int, width: int, rpb: Tensor | None, kernel_size: int, dilation: int, heads: int, dtype: torch.dtype
) -> Tensor:
    """``(heads, H*W, H*W)`` additive mask: the bias where natten's rules let a query see a key, else ``-inf``."""
    device = rpb.device if rpb is not None else None
    key_rows, key_columns, bias_rows, bias_columns = _tables(height, width, kernel_size, dilation, device)
    targets = (key_rows * width + key_columns).reshape(height * width, -1)
    sources = torch.arange(height * width, device=device)[:, None].expand_as(targets)
    bias = torch.zeros(heads, *targets.shape, dtype=dtype, device=device)
    if rpb is not None:
        bias = rpb[:, bias_rows, bias_columns].reshape(heads, *targets.shape).to(dtype)
    mask = torch.full((heads, height * width, height * width), float("-inf"), dtype=dtype, device=device)
    mask[:, sources, targets] = bias
    return mask


def dense_neighborhood_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    rpb: Tensor | None,
    kernel_size: int,
    dilation: int,
    scale: float | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Full ``(H*W) x (H*W)`` attention with the additive mask of :func:`dense_mask`.

    Layout as ``backbones_nat.attention.neighborhood_attention_2d``: ``(B, H, W, heads, D)`` in and out.
    ``mask`` may be passed in when it was built beforehand.

    Returns:
        ``(context, weights)``, ``weights`` being the full ``(B, heads, H*W, H*W)`` probabilities.
    """
    batch, height, width, heads, head_dim = query.shape
    scale = head_dim**-0.5 if scale is None else scale
    if mask is None:
        mask = dense_mask(height, width, rpb, kernel_size, dilation, heads, query.dtype)
    q, k, v = (x.reshape(batch, height * width, heads, x.shape[-1]).transpose(1, 2) for x in (query, key, value))
    weights = (torch.matmul(q, k.transpose(-1, -2)) * scale + mask).softmax(-1)
    context = torch.matmul(weights, v).transpose(1, 2).reshape(batch, height, width, heads, value.shape[-1])
    return context, weights
