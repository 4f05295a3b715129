"""Public building blocks of the Neighborhood Attention Transformer: the convolutional stem, (dilated)
neighbourhood attention, the transformer layer, the downsampler and stages, for plugins that build on NAT
(backbones-dinat, which varies the dilation per layer).

Paper: Hassani et al., "Neighborhood Attention Transformer" (2022), https://arxiv.org/abs/2204.07143.

Every name in ``__all__`` is part of backbones-nat's public API and follows the versioning rule of docs/plugins.md
("Building on another plugin's blocks"): a dependent plugin pins ``backbones-nat>=0.1,<0.2``. Attribute names are
checkpoint key names in transformers' NAT / DiNAT format (``attention.self.rpb``, ``patch_embeddings.projection.0``,
``downsample.reduction``, ...). The attention op itself is :func:`backbones_nat.neighborhood_attention_2d`.

Layout: maps are channels-last ``(batch, height, width, channels)`` throughout.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.activations import make_activation
from backbones.layers import CheckpointableLayer, drop_path, linear, module_group, query_key_value_projections

from .attention import neighborhood_attention_2d

__all__ = [
    "NatDownsampler",
    "NatEmbeddings",
    "NatLayer",
    "NatLevel",
    "NatPatchEmbeddings",
    "NeighborhoodAttention",
    "NeighborhoodSelfAttention",
]


class NatPatchEmbeddings(nn.Module):
    """Keys ``projection.{0,1}``: two 3x3 stride-2 convolutions (``embed_dim // 2``, then ``embed_dim`` channels).

    Args:
        num_channels: Input channels.
        embed_dim: Output channels.
    """

    def __init__(self, num_channels: int, embed_dim: int) -> None:
        super().__init__()
        dim = embed_dim
        self.projection = nn.Sequential(
            nn.Conv2d(num_channels, dim // 2, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1),
        )

    def forward(self, pixel_values: Tensor) -> Tensor:
        """``(B, num_channels, H, W)`` to the channels-last ``(B, H / 4, W / 4, embed_dim)``."""
        return self.projection(pixel_values).permute(0, 2, 3, 1)


class NatEmbeddings(nn.Module):
    """Stem (keys ``patch_embeddings.*``, ``norm``): overlapping convolutional patch embedding, then a LayerNorm.

    Args:
        num_channels: Input channels.
        embed_dim: Output channels.
        dropout: Dropout on the output (training only).
    """

    def __init__(self, num_channels: int, embed_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.patch_embeddings = NatPatchEmbeddings(num_channels, embed_dim)
        self.norm = nn.LayerNorm(embed_dim)  # the reference leaves this one at the default eps
        self.dropout = dropout

    def forward(self, pixel_values: Tensor) -> Tensor:
        """``(B, num_channels, H, W)`` to the channels-last ``(B, H / 4, W / 4, embed_dim)``."""
        return F.dropout(self.norm(self.patch_embeddings(pixel_values)), self.dropout, self.training)


class NeighborhoodSelfAttention(nn.Module):
    """Query/key/value projections and the relative position bias ``rpb`` of (dilated) neighbourhood attention.

    Args:
        dim: Channels.
        num_heads: Attention heads.
        kernel_size: Side of each query's neighbourhood.
        dilation: Spacing of the neighbourhood's positions (1: contiguous).
        qkv_bias: Whether the projections have a bias.
        attention_dropout: Dropout on the attention probabilities (training only).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int,
        dilation: int = 1,
        *,
        qkv_bias: bool = True,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        kernel = kernel_size
        self.num_heads = num_heads
        self.kernel_size = kernel
        self.dilation = dilation
        self.dropout = attention_dropout
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel - 1, 2 * kernel - 1))
        self.query, self.key, self.value = query_key_value_projections(dim, bias=qkv_bias)

    def forward(self, x: Tensor, need_weights: bool, pad_virtually: bool = False) -> tuple[Tensor, Tensor | None]:
        """``(B, H, W, C)`` -> context of the same shape, and the ``(B, heads, H, W, K*K)`` weights if asked.

        With ``pad_virtually`` the map may be smaller than the dilated window: it is attended over as if
        zero-padded to it (see :func:`~backbones_nat.attention.neighborhood_attention_2d`'s ``padding``), and only real positions return.
        """
        heads = (*x.shape[:3], self.num_heads, x.shape[-1] // self.num_heads)
        query, key, value = (linear(x, p).view(heads) for p in (self.query, self.key, self.value))
        padding: tuple[Tensor, Tensor] | None = None
        if pad_virtually:
            # What the projections make of a zero-padded position: their biases.
            key_padding, value_padding = (
                (layer.bias if layer.bias is not None else x.new_zeros(x.shape[-1])).view(heads[3:])
                for layer in (self.key, self.value)
            )
            padding = (key_padding, value_padding)
        context, weights = neighborhood_attention_2d(
            query,
            key,
            value,
            self.rpb,
            self.kernel_size,
            self.dilation,
            dropout_p=self.dropout if self.training else 0.0,
            return_weights=need_weights,
            padding=padding,
        )
        return context.view(x.shape), weights


class NeighborhoodAttention(nn.Module):
    """Self-attention (key ``self``) and its output projection (``output.dense``).

    The output gets the self-attention's dropout rate too (training only), as in the reference.

    Args:
        attention: The self-attention; its input width is the projection's.
    """

    def __init__(self, attention: NeighborhoodSelfAttention) -> None:
        super().__init__()
        dim = attention.query.in_features
        self.self = attention  # the checkpoint's name
        self.output = module_group(dense=nn.Linear(dim, dim))
        self.dropout = attention.dropout

    def forward(self, x: Tensor, need_weights: bool, pad_virtually: bool = False) -> tuple[Tensor, Tensor | None]:
        """See :meth:`NeighborhoodSelfAttention.forward`; the context is projected by ``output.dense``."""
        context, weights = self.self(x, need_weights, pad_virtually)
        return F.dropout(linear(context, self.output.dense), self.dropout, self.training), weights


class NatLayer(CheckpointableLayer):
    """One transformer layer: neighbourhood attention then an MLP, each a pre-norm residual branch.

    Keys ``layernorm_before``, ``attention``, ``layernorm_after``, ``intermediate.dense``, ``output.dense``;
    ``layer_scale_parameters`` (``(2, dim)``: attention branch, MLP branch) exists only when
    ``layer_scale_init_value > 0``. Maps smaller than the dilated window are padded up to it (bottom and
    right), as the reference does.

    Args:
        dim: Channels.
        num_heads: Attention heads.
        kernel_size: Side of each query's neighbourhood.
        dilation: Spacing of the neighbourhood's positions (DiNAT varies it per layer).
        mlp_ratio: Hidden width of the MLP relative to ``dim``.
        qkv_bias: Whether the query, key and value projections have a bias.
        hidden_act: Activation of the MLP (a name of :data:`backbones.activations.ACTIVATIONS`).
        layer_norm_eps: Epsilon of the two layer norms.
        layer_scale_init_value: Initial value of the layer scales; ``<= 0``: no layer scale.
        hidden_dropout: Dropout on the MLP output (training only).
        attention_dropout: Dropout of the attention (training only).
        drop_path: Stochastic-depth rate of both residual branches (training only).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kernel_size: int,
        dilation: int = 1,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-5,
        layer_scale_init_value: float = 0.0,
        hidden_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.layernorm_before = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.attention = NeighborhoodAttention(
            NeighborhoodSelfAttention(
                dim, num_heads, kernel_size, dilation, qkv_bias=qkv_bias, attention_dropout=attention_dropout
            )
        )
        self.layernorm_after = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.intermediate = module_group(dense=nn.Linear(dim, int(mlp_ratio * dim)))
        self.output = module_group(dense=nn.Linear(int(mlp_ratio * dim), dim))
        self.activation = make_activation(hidden_act)
        self.layer_scale_parameters = (
            nn.Parameter(torch.full((2, dim), layer_scale_init_value)) if layer_scale_init_value > 0 else None
        )
        self.layer_scale_init_value = layer_scale_init_value
        self.window = kernel_size * dilation
        self.dropout = hidden_dropout
        self.drop_path = drop_path

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """``(B, H, W, C)`` to ``(B, H, W, C)``; also the attention weights if ``need_weights``."""
        _, height, width, _ = x.shape
        branch = self.layernorm_before(x)
        if not (isinstance(height, int) and isinstance(width, int)):
            # Symbolic sizes (torch.export with dynamic height and width): the padding is virtual, so one
            # guard-free program serves maps both smaller and larger than the window.
            branch, weights = self.attention(branch, need_weights, pad_virtually=True)
        else:
            pad_bottom, pad_right = max(0, self.window - height), max(0, self.window - width)
            if pad_bottom or pad_right:
                branch = F.pad(branch, (0, 0, 0, pad_right, 0, pad_bottom))
            branch, weights = self.attention(branch, need_weights)
            if pad_bottom or pad_right:
                branch = branch[:, :height, :width]
        scales = self.layer_scale_parameters
        if scales is not None:
            branch = scales[0] * branch
        x = x + drop_path(branch, self.drop_path, self.training)
        branch = linear(linear(self.layernorm_after(x), self.intermediate.dense, self.activation), self.output.dense)
        branch = F.dropout(branch, self.dropout, self.training)
        if scales is not None:
            branch = scales[1] * branch
        return x + drop_path(branch, self.drop_path, self.training), weights


class NatDownsampler(nn.Module):
    """Keys ``reduction``, ``norm``: a 3x3 stride-2 convolution doubling the channels, then a LayerNorm.

    Args:
        dim: Channels in (``2 * dim`` out).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, dim)`` to ``(B, ceil(H / 2), ceil(W / 2), 2 * dim)``."""
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class NatLevel(nn.Module):
    """One stage: its layers (key ``layers``) and the downsampler feeding the next stage (key ``downsample``).

    Args:
        layers: The stage's layers, in order.
        downsample: The downsampler after the stage, or ``None`` (the last stage, or a pruned model).
    """

    def __init__(self, layers: Iterable[NatLayer], downsample: NatDownsampler | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.downsample = downsample

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Returns the stage output (before downsampling) and, if asked, its last layer's weights."""
        weights = None
        for depth, layer in enumerate(self.layers):
            x, weights = layer(x, need_weights and depth == len(self.layers) - 1)
        return x, weights
