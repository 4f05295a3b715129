"""Public building blocks of DINOv2's vision transformer: patch and position embeddings with a class token,
self-attention, layer scale, the MLP and SwiGLU feed-forward networks, and the pre-norm layer, for plugins
that build on DINOv2 (DINOv2 with registers, RF-DETR's windowed DINOv2, ...).

Paper: Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision" (2023),
https://arxiv.org/abs/2304.07193.

Every name in ``__all__`` is part of backbones-dinov2's public API and follows semantic versioning: within a
``0.1.x`` (later ``1.x``) series its constructor arguments, attribute names and forward signatures do not
change incompatibly, so a dependent plugin pins ``backbones-dinov2>=0.1,<0.2``. Attribute names are checkpoint
key names in the format transformers writes to disk (``embeddings.cls_token``, ``attention.attention.query``,
``attention.output.dense``, ``layer_scale1.lambda1``, ``mlp.fc1`` or ``mlp.weights_in``, ...): changing one would
change what every plugin built on these blocks loads.

Layout: tokens are ``(batch, tokens, channels)``, the class token first (then any extra tokens a subclass of
:class:`Dinov2Embeddings` inserts), then the patches row by row.

Extension points: :attr:`Dinov2Embeddings.antialias` (whether the position table is resampled with
antialiasing), :meth:`Dinov2Embeddings._patch_positions` (how the position table follows the patch grid) and
:meth:`Dinov2Embeddings._prefix_tokens` (the tokens before the patches, e.g. register tokens).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.activations import make_activation
from backbones.layers import CheckpointableLayer, check_pixel_channels, drop_path

if TYPE_CHECKING:
    from ._config import Dinov2Config

__all__ = [
    "Dinov2Attention",
    "Dinov2Embeddings",
    "Dinov2Layer",
    "Dinov2PatchEmbeddings",
    "Dinov2SelfAttention",
    "LayerScale",
    "Mlp",
    "SwiGLUFeedForward",
    "resample_position_table",
    "tokens_to_map",
]


class Dinov2PatchEmbeddings(nn.Module):
    """Non-overlapping patch projection (key ``projection``).

    Args:
        num_channels: Input channels.
        hidden_size: Token channels.
        patch_size: Side of the square patches.
    """

    def __init__(self, num_channels: int, hidden_size: int, patch_size: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(num_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """``(B, num_channels, H, W)`` to the ``(B, hidden_size, H / patch_size, W / patch_size)`` patch grid."""
        projection = self.projection
        check_pixel_channels(pixel_values, projection.in_channels, "DINOv2")
        return projection(pixel_values.to(projection.weight.dtype))


class Dinov2Embeddings(nn.Module):
    """Stem (keys ``cls_token``, ``patch_embeddings.projection``, ``position_embeddings``): patch projection,
    class token, and learned position embeddings resampled bicubically to the input's patch grid.

    No ``mask_token``: it only replaces masked patches in pre-training, which a backbone never does.

    Args:
        num_channels: Input channels.
        hidden_size: Token channels.
        patch_size: Side of the square patches.
        position_grid: Side of the square patch grid of the position table (``image_size // patch_size``); the
            table has one more row, for the class token.
        dropout: Dropout on the tokens (training only).
    """

    antialias: ClassVar[bool] = False
    """Resample the position table with antialiasing (DINOv2 does not; its registers models do): a subclass
    sets it to ``True``."""

    def __init__(
        self, num_channels: int, hidden_size: int, patch_size: int, position_grid: int, *, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid = position_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.patch_embeddings = Dinov2PatchEmbeddings(num_channels, hidden_size, patch_size)
        self.position_embeddings = nn.Parameter(torch.zeros(1, position_grid * position_grid + 1, hidden_size))
        self.dropout = dropout

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, int, int]:
        """Returns the tokens ``(batch, prefix + height * width, channels)`` and the patch grid's height and width."""
        patches = self.patch_embeddings(pixel_values)
        batch, _, height, width = patches.shape
        patches = patches.flatten(2).transpose(1, 2) + self._patch_positions(height, width)
        tokens = torch.cat((self._prefix_tokens(batch), patches), dim=1)
        return F.dropout(tokens, self.dropout, self.training), height, width

    def _prefix_tokens(self, batch: int) -> Tensor:
        """The tokens before the patches, ``(batch, prefix, channels)``: here the class token with its position.

        A subclass appends its own (e.g. register tokens, which have no position).
        """
        # The class token and its position are added before concatenating: one pass fewer over the tokens.
        return (self.cls_token + self.position_embeddings[:, :1]).expand(batch, -1, -1)

    def _patch_positions(self, height: int, width: int) -> Tensor:
        """Position embeddings of a ``height x width`` patch grid, ``(1, height * width, channels)``."""
        # As transformers (and the original code): bicubic by target size, antialiased only where the class says so.
        return resample_position_table(
            self.position_embeddings[:, 1:], self.grid, height, width, antialias=self.antialias
        )


class Dinov2SelfAttention(nn.Module):
    """Multi-head self-attention over all tokens (keys ``query``, ``key``, ``value``).

    Args:
        hidden_size: Token channels.
        num_heads: Attention heads (they divide ``hidden_size``).
        qkv_bias: Whether the projections have a bias.
        attention_dropout: Dropout on the attention probabilities (training only).
    """

    def __init__(
        self, hidden_size: int, num_heads: int, *, qkv_bias: bool = True, attention_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = attention_dropout
        self.query = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.key = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.value = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)

    def forward(self, tokens: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Returns the context ``(batch, tokens, channels)`` and, if asked, the attention probabilities
        ``(batch, heads, tokens, tokens)``."""
        batch, length, width = tokens.shape
        heads = (batch, length, self.num_heads, width // self.num_heads)
        query, key, value = (proj(tokens).view(heads).transpose(1, 2) for proj in (self.query, self.key, self.value))
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = torch.matmul(query, key.transpose(-1, -2)) * query.shape[-1] ** -0.5
            weights = F.dropout(scores.softmax(dim=-1), dropout, self.training)
            context = torch.matmul(weights, value)
        else:
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout)
        return context.transpose(1, 2).reshape(batch, length, width), weights


class _Dense(nn.Module):
    """Holds the output projection under the checkpoint's name for it (``output.dense``)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)


class Dinov2Attention(nn.Module):
    """Self-attention and its output projection (keys ``attention.*``, ``output.dense``).

    Args:
        hidden_size: Token channels.
        num_heads: Attention heads.
        qkv_bias: Whether the query, key and value projections have a bias.
        attention_dropout: Dropout on the attention probabilities (training only).
    """

    def __init__(
        self, hidden_size: int, num_heads: int, *, qkv_bias: bool = True, attention_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.attention = Dinov2SelfAttention(
            hidden_size, num_heads, qkv_bias=qkv_bias, attention_dropout=attention_dropout
        )
        self.output = _Dense(hidden_size)

    def forward(self, tokens: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Returns the projected context ``(batch, tokens, channels)`` and the probabilities if asked."""
        context, weights = self.attention(tokens, need_weights)
        return self.output.dense(context), weights


class LayerScale(nn.Module):
    """Learned per-channel factor on a residual branch (key ``lambda1``).

    Args:
        width: Channels.
        value: Initial value of every factor.
    """

    def __init__(self, width: int, value: float) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((width,), value))

    def forward(self, x: Tensor) -> Tensor:
        """``x * lambda1`` over the last axis."""
        return x * self.lambda1


class Mlp(nn.Module):
    """Two-layer MLP (keys ``fc1``, ``fc2``).

    Args:
        hidden_size: Channels in and out.
        hidden_features: Channels between the layers.
        hidden_act: Activation between the layers (a name of :data:`backbones.activations.ACTIVATIONS`).
    """

    def __init__(self, hidden_size: int, hidden_features: int, hidden_act: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, hidden_features)
        self.activation = make_activation(hidden_act)
        self.fc2 = nn.Linear(hidden_features, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        """``fc2(activation(fc1(x)))``."""
        return self.fc2(self.activation(self.fc1(x)))


class SwiGLUFeedForward(nn.Module):
    """SwiGLU feed-forward network (keys ``weights_in``, ``weights_out``).

    ``weights_in`` holds the gate projection's rows first, then the value projection's: one matmul computes
    both, and ``silu(gate) * value`` is projected back by ``weights_out``. The hidden width is two thirds of
    ``hidden_size * mlp_ratio``, rounded up to a multiple of 8 (as DINOv2 and transformers).

    Args:
        hidden_size: Channels in and out.
        mlp_ratio: Width of the MLP this network replaces, relative to ``hidden_size``.
    """

    def __init__(self, hidden_size: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(hidden_size * mlp_ratio)
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.weights_in = nn.Linear(hidden_size, 2 * hidden)
        self.weights_out = nn.Linear(hidden, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        """``weights_out(silu(gate) * value)``."""
        gate, value = self.weights_in(x).chunk(2, dim=-1)
        return self.weights_out(F.silu(gate) * value)


class Dinov2Layer(CheckpointableLayer):
    """One pre-norm transformer layer whose residual branches are layer-scaled (keys ``norm1``, ``attention``,
    ``layer_scale1``, ``norm2``, ``mlp``, ``layer_scale2``). The unit of gradient checkpointing and of FSDP
    sharding.

    Args:
        hidden_size: Token channels.
        num_heads: Attention heads.
        mlp_ratio: Hidden width of the MLP relative to ``hidden_size``.
        qkv_bias: Whether the query, key and value projections have a bias.
        hidden_act: Activation of the MLP (unused with ``use_swiglu_ffn``).
        layer_norm_eps: Epsilon of the two layer norms.
        layerscale_value: Initial value of the layer-scale factors.
        use_swiglu_ffn: Use :class:`SwiGLUFeedForward` instead of :class:`Mlp`.
        attention_dropout: Dropout on the attention probabilities (training only).
        drop_path: Stochastic-depth rate of both residual branches (training only).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-6,
        layerscale_value: float = 1.0,
        use_swiglu_ffn: bool = False,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        width = hidden_size
        self.norm1 = nn.LayerNorm(width, eps=layer_norm_eps)
        self.attention = Dinov2Attention(width, num_heads, qkv_bias=qkv_bias, attention_dropout=attention_dropout)
        self.layer_scale1 = LayerScale(width, layerscale_value)
        self.norm2 = nn.LayerNorm(width, eps=layer_norm_eps)
        self.mlp: nn.Module = (
            SwiGLUFeedForward(width, mlp_ratio) if use_swiglu_ffn else Mlp(width, int(width * mlp_ratio), hidden_act)
        )
        self.layer_scale2 = LayerScale(width, layerscale_value)
        self.drop_path = drop_path

    @classmethod
    def from_config(cls, config: Dinov2Config) -> Dinov2Layer:
        """One layer as a :class:`~backbones_dinov2.Dinov2Config` (or a subclass's) describes it; every layer has
        the same drop-path rate, as in transformers."""
        return cls(
            config.hidden_size,
            config.num_attention_heads,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            hidden_act=config.hidden_act,
            layer_norm_eps=config.layer_norm_eps,
            layerscale_value=config.layerscale_value,
            use_swiglu_ffn=config.use_swiglu_ffn,
            attention_dropout=config.attention_probs_dropout_prob,
            drop_path=config.drop_path_rate,
        )

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """``(B, N, C)`` to ``(B, N, C)``; also the attention probabilities if ``need_weights``."""
        context, weights = self.attention(self.norm1(x), need_weights)
        x = x + drop_path(self.layer_scale1(context), self.drop_path, self.training)
        branch = self.layer_scale2(self.mlp(self.norm2(x)))
        return x + drop_path(branch, self.drop_path, self.training), weights


def tokens_to_map(
    tokens: Tensor, num_prefix_tokens: int, height: int, width: int, *, reshape: bool = True, with_prefix: bool = False
) -> Any:
    """A ViT stage's ``(B, prefix + height * width, C)`` tokens as its feature map.

    Args:
        tokens: The stage's tokens, already normalised as the map should be.
        num_prefix_tokens: Class and register tokens in front of the patch tokens.
        height: Patch rows.
        width: Patch columns.
        reshape: Return the patch tokens as a ``(B, C, height, width)`` view (channels-last memory, no copy);
            else the whole token sequence, as transformers' ``reshape_hidden_states=False`` does.
        with_prefix: Return ``(map, prefix tokens)``, the prefix tokens ``(B, num_prefix_tokens, C)``.
    """
    fmap = tokens
    if reshape:
        patches = tokens[:, num_prefix_tokens:]
        fmap = patches.reshape(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2)
    return (fmap, tokens[:, :num_prefix_tokens]) if with_prefix else fmap


def resample_position_table(
    table: Tensor, grid: int, height: int, width: int, *, mode: str = "bicubic", antialias: bool = False
) -> Tensor:
    """A square table of patch position embeddings resampled to a ``height x width`` patch grid.

    Resampled by target size (``align_corners=False``), in float32 because resampling in half precision
    visibly shifts the embeddings, then cast back to the table's dtype. At the table's own grid the table is
    returned as it is: bicubic and bilinear resampling to the same size are the identity (their weights at
    zero offset are exactly one and zeros), so this only saves eager time. While compiling or exporting the
    sizes may be symbolic and comparing them would guard the graph to one size, so there the table is always
    resampled (as transformers does when tracing).

    Args:
        table: ``(1, grid * grid, channels)``, the patch rows of a position table (no class or register rows).
        grid: Side of the table's square grid.
        height: Patch rows wanted.
        width: Patch columns wanted.
        mode: ``"bicubic"`` (DINOv2 and most ViTs) or ``"bilinear"``.
        antialias: Resample with antialiasing (it changes the values where the table is downsampled).

    Returns:
        ``(1, height * width, channels)``, of ``table``'s dtype.
    """
    if not torch.compiler.is_compiling() and (height, width) == (grid, grid):
        return table
    channels = table.shape[-1]
    square = table.reshape(1, grid, grid, channels).permute(0, 3, 1, 2)
    resized = F.interpolate(square.float(), size=(height, width), mode=mode, align_corners=False, antialias=antialias)
    return resized.to(table.dtype).permute(0, 2, 3, 1).reshape(1, height * width, channels)
