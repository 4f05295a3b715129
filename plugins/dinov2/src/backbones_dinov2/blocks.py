"""Public building blocks of DINOv2's vision transformer: patch and position embeddings with a class token,
self-attention, layer scale, the MLP and SwiGLU feed-forward networks, and the pre-norm layer, for plugins
that build on DINOv2 (DINOv2 with registers, RF-DETR's windowed DINOv2, ...).

Paper: Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision" (2023),
https://arxiv.org/abs/2304.07193.

Every name in ``__all__`` is part of backbones-dinov2's public API and follows the versioning rule of
docs/plugins.md ("Building on another plugin's blocks"): a dependent plugin pins ``backbones-dinov2>=0.1,<0.2``.
Attribute names are checkpoint key names in the format transformers writes to disk (``embeddings.cls_token``,
``attention.attention.query``, ``attention.output.dense``, ``layer_scale1.lambda1``, ``mlp.fc1`` or
``mlp.weights_in``, ...).

Layout: tokens are ``(batch, tokens, channels)``, the class token first (then any extra tokens a subclass of
:class:`Dinov2Embeddings` inserts), then the patches row by row.

Extension points: :attr:`Dinov2Embeddings.antialias` (whether the position table is resampled with
antialiasing), :meth:`Dinov2Embeddings._patch_positions` (how the position table follows the patch grid) and
:meth:`Dinov2Embeddings._prefix_tokens` (the tokens before the patches, e.g. register tokens).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypedDict, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import Backbone
from backbones.activations import make_activation
from backbones.layers import (
    CheckpointableLayer,
    attend,
    check_pixel_channels,
    drop_path,
    init_linear_and_norm_,
    linear,
    query_key_value_projections,
    run_token_layers,
    transformer_layer_options,
)

if TYPE_CHECKING:
    from ._config import Dinov2Config

__all__ = [
    "Dinov2Attention",
    "Dinov2Embeddings",
    "Dinov2EmbeddingsOptions",
    "Dinov2EmbeddingsShape",
    "Dinov2Encoder",
    "Dinov2Layer",
    "Dinov2PatchEmbeddings",
    "Dinov2SelfAttention",
    "LayerScale",
    "LayerScaledLayer",
    "Mlp",
    "PlainViTBackbone",
    "PlainViTShape",
    "SwiGLUFeedForward",
    "ViTAttentionShape",
    "embeddings_options",
    "init_dinov2_weights_",
    "resample_position_table",
    "swiglu_hidden_features",
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


class Dinov2EmbeddingsShape(Protocol):
    """The config fields :func:`embeddings_options` reads (a :class:`~backbones_dinov2.Dinov2Config` has them).

    Attributes:
        num_channels: Input channels.
        hidden_size: Token channels.
        patch_size: Side of the square patches.
        hidden_dropout_prob: Dropout on the tokens (training only).
    """

    num_channels: int
    hidden_size: int
    patch_size: int
    hidden_dropout_prob: float

    @property
    def position_grid(self) -> int:
        """Side of the square patch grid of the position table (``image_size // patch_size``)."""
        ...


class Dinov2EmbeddingsOptions(TypedDict):
    """The constructor arguments of :class:`Dinov2Embeddings` (and of subclasses that keep them), by name."""

    num_channels: int
    hidden_size: int
    patch_size: int
    position_grid: int
    dropout: float


def embeddings_options(config: Dinov2EmbeddingsShape) -> Dinov2EmbeddingsOptions:
    """The arguments of a config's :class:`Dinov2Embeddings`: ``Dinov2Embeddings(**embeddings_options(config))``,
    or ``super().__init__(**embeddings_options(config))`` in a subclass that adds its own tokens.

    Args:
        config: A config with the fields of :class:`Dinov2EmbeddingsShape`.

    Returns:
        Its ``num_channels``, ``hidden_size``, ``patch_size`` and ``position_grid``, and ``hidden_dropout_prob`` as
        ``dropout``.
    """
    return Dinov2EmbeddingsOptions(
        num_channels=config.num_channels,
        hidden_size=config.hidden_size,
        patch_size=config.patch_size,
        position_grid=config.position_grid,
        dropout=config.hidden_dropout_prob,
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
        self.query, self.key, self.value = query_key_value_projections(hidden_size, bias=qkv_bias)

    def forward(self, tokens: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Returns the context ``(batch, tokens, channels)`` and, if asked, the attention probabilities
        ``(batch, heads, tokens, tokens)``."""
        batch, length, width = tokens.shape
        heads = (batch, length, self.num_heads, width // self.num_heads)
        query, key, value = (linear(tokens, p).view(heads).transpose(1, 2) for p in (self.query, self.key, self.value))
        context, weights = attend(
            query, key, value, dropout=self.dropout, training=self.training, need_weights=need_weights
        )
        return context.transpose(1, 2).reshape(batch, length, width), weights


class _Dense(nn.Module):
    """Holds the output projection under the checkpoint's name for it (``output.dense``)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)


class ViTAttentionShape(Protocol):
    """The config fields :meth:`Dinov2Attention.from_config` reads (transformers' ViT names).

    Attributes:
        hidden_size: Token channels.
        num_attention_heads: Attention heads per layer.
        qkv_bias: Whether the query, key and value projections have a bias.
        attention_probs_dropout_prob: Dropout on the attention probabilities (training only).
    """

    hidden_size: int
    num_attention_heads: int
    qkv_bias: bool
    attention_probs_dropout_prob: float


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

    @classmethod
    def from_config(cls, config: ViTAttentionShape) -> Dinov2Attention:
        """The attention of one layer as a config with transformers' ViT field names describes it (DINOv2's,
        Pixio's, ViTPose's, ...)."""
        return cls(
            config.hidden_size,
            config.num_attention_heads,
            qkv_bias=config.qkv_bias,
            attention_dropout=config.attention_probs_dropout_prob,
        )

    def forward(self, tokens: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Returns the projected context ``(batch, tokens, channels)`` and the probabilities if asked."""
        context, weights = self.attention(tokens, need_weights)
        return linear(context, self.output.dense), weights


class LayerScale(nn.Module):
    """Learned per-channel factor on a residual branch (key ``lambda1``, or :attr:`factor_key`).

    Args:
        width: Channels.
        value: Initial value of every factor.
    """

    factor_key: ClassVar[str] = "lambda1"
    """The factors' checkpoint key: a subclass for a format that names them otherwise (``gamma``, ``weight``)
    sets it; the module, its forward and :func:`init_dinov2_weights_` are the same."""

    def __init__(self, width: int, value: float) -> None:
        super().__init__()
        self.register_parameter(self.factor_key, nn.Parameter(torch.full((width,), value)))

    @property
    def factor(self) -> nn.Parameter:
        """The factors, ``(width,)`` (the parameter under :attr:`factor_key`)."""
        return cast(nn.Parameter, getattr(self, self.factor_key))

    def forward(self, x: Tensor) -> Tensor:
        """``x * factor`` over the last axis."""
        return x * getattr(self, self.factor_key)


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
        return linear(linear(x, self.fc1, self.activation), self.fc2)


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
        hidden = swiglu_hidden_features(hidden_size, mlp_ratio)
        self.weights_in = nn.Linear(hidden_size, 2 * hidden)
        self.weights_out = nn.Linear(hidden, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        """``weights_out(silu(gate) * value)``."""
        gate, value = linear(x, self.weights_in).chunk(2, dim=-1)
        return linear(F.silu(gate) * value, self.weights_out)


class LayerScaledLayer(CheckpointableLayer):
    """DINOv2's pre-norm transformer layer around a given attention and feed-forward network: both residual
    branches are layer-scaled (keys ``norm1``, ``attention``, ``layer_scale1``, ``norm2``, ``mlp``,
    ``layer_scale2``). The unit of gradient checkpointing and of FSDP sharding.

    Subclasses build the attention and the network (DINOv2's in :class:`Dinov2Layer`, DINOv3's rotary
    attention, RF-DETR's windowed one) and pass them here; the forward is this class's.

    Args:
        hidden_size: Token channels.
        attention: Called as ``attention(normalised_tokens, *attention_inputs)`` (see :meth:`forward`); returns
            the context ``(batch, tokens, hidden_size)`` and the attention probabilities or ``None``.
        mlp: The feed-forward network, ``(..., hidden_size)`` to ``(..., hidden_size)``.
        layer_norm_eps: Epsilon of the two layer norms.
        layerscale_value: Initial value of the layer-scale factors.
        drop_path: Stochastic-depth rate of both residual branches (training only).
    """

    def __init__(
        self,
        hidden_size: int,
        attention: nn.Module,
        mlp: nn.Module,
        *,
        layer_norm_eps: float = 1e-6,
        layerscale_value: float = 1.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.attention = attention
        self.layer_scale1 = LayerScale(hidden_size, layerscale_value)
        self.norm2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mlp = mlp
        self.layer_scale2 = LayerScale(hidden_size, layerscale_value)
        self.drop_path = drop_path

    def forward(self, x: Tensor, *attention_inputs: Any) -> tuple[Tensor, Tensor | None]:
        """``(B, N, C)`` to ``(B, N, C)``, and the attention probabilities or ``None``.

        ``attention_inputs`` go to the attention after the normalised tokens: the inputs every layer takes
        (e.g. rotary positions, see :meth:`PlainViTBackbone._layer_inputs`), then ``need_weights``.
        """
        context, weights = self.attention(self.norm1(x), *attention_inputs)
        x = x + drop_path(self.layer_scale1(context), self.drop_path, self.training)
        branch = self.layer_scale2(self.mlp(self.norm2(x)))
        return x + drop_path(branch, self.drop_path, self.training), weights


class Dinov2Layer(LayerScaledLayer):
    """DINOv2's transformer layer: :class:`LayerScaledLayer` around :class:`Dinov2Attention` and an
    :class:`Mlp` (or a :class:`SwiGLUFeedForward`). Called as ``layer(tokens, need_weights)``.

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
        width = hidden_size
        attention = Dinov2Attention(width, num_heads, qkv_bias=qkv_bias, attention_dropout=attention_dropout)
        mlp = SwiGLUFeedForward(width, mlp_ratio) if use_swiglu_ffn else Mlp(width, int(width * mlp_ratio), hidden_act)
        super().__init__(
            width, attention, mlp, layer_norm_eps=layer_norm_eps, layerscale_value=layerscale_value, drop_path=drop_path
        )

    @classmethod
    def from_config(cls, config: Dinov2Config) -> Dinov2Layer:
        """One layer as a :class:`~backbones_dinov2.Dinov2Config` (or a subclass's) describes it; every layer has
        the same drop-path rate, as in transformers."""
        return cls(
            config.hidden_size,
            config.num_attention_heads,
            **transformer_layer_options(config),
            layerscale_value=config.layerscale_value,
            use_swiglu_ffn=config.use_swiglu_ffn,
            attention_dropout=config.attention_probs_dropout_prob,
            drop_path=config.drop_path_rate,
        )


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


def swiglu_hidden_features(hidden_size: int, mlp_ratio: float) -> int:
    """Hidden width of DINOv2's SwiGLU network: two thirds of the MLP it replaces, rounded up to a multiple of 8.

    Args:
        hidden_size: Channels in and out.
        mlp_ratio: Width of the replaced MLP relative to ``hidden_size``.

    Returns:
        ``ceil8(int(int(hidden_size * mlp_ratio) * 2 / 3))``, as DINOv2, transformers and the models built on
        them (RF-DETR, TIPSv2) size it.
    """
    return (int(int(hidden_size * mlp_ratio) * 2 / 3) + 7) // 8 * 8


def init_dinov2_weights_(module: nn.Module, std: float, layerscale_value: float) -> bool:
    """Initialise ``module``'s own parameters as transformers' DINOv2 models do, if it is a kind they initialise.

    Linear and convolution weights from the truncated normal distribution, layer norms to 1 and 0 (see
    :func:`backbones.layers.init_linear_and_norm_`); a :class:`Dinov2Embeddings` (or subclass) gets its position
    table and class token from the truncated normal distribution; a :class:`LayerScale` is set to
    ``layerscale_value``. Meant for a backbone's ``_init_weights``, before its own cases.

    Args:
        module: The module (its children are not visited).
        std: Standard deviation of the weights (a config's ``initializer_range``).
        layerscale_value: Initial value of the layer-scale factors.

    Returns:
        Whether ``module`` was one of those kinds (and so is initialised).
    """
    if init_linear_and_norm_(module, std, truncated=True):
        return True
    if isinstance(module, Dinov2Embeddings):
        nn.init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
        nn.init.trunc_normal_(module.cls_token, mean=0.0, std=std)
        return True
    if isinstance(module, LayerScale):
        nn.init.constant_(module.factor, layerscale_value)
        return True
    return False


class Dinov2Encoder(nn.Module):
    """The transformer layers under the checkpoint's key path ``layer.N`` (a backbone holds it as ``encoder``).

    Args:
        layers: The layers, in order.
    """

    def __init__(self, layers: Iterable[nn.Module]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class PlainViTShape(Protocol):
    """The config fields :meth:`PlainViTBackbone._set_plain_stages` reads (every plain-ViT config has them).

    Attributes:
        hidden_size: Token width: the channels of every stage.
        patch_size: Side of the square patches: the stride of every stage.
        num_hidden_layers: Transformer layers: the stages after the stem.
    """

    hidden_size: int
    patch_size: int
    num_hidden_layers: int


class PlainViTBackbone(Backbone):
    """Base of a plain vision transformer backbone: stage 0 is the stem's tokens, stage ``p`` the output of
    transformer layer ``p - 1``, every stage ``hidden_size`` wide at stride ``patch_size``.

    Implements the forward (:func:`backbones.layers.run_token_layers` over :attr:`token_layers`), stage freezing
    and pruning once for DINOv2 and the plugins built on it. Tokens are ``(batch, prefix + height * width,
    channels)``, the ``num_prefix_tokens`` class and register tokens first. A stage's feature map is its tokens
    through :meth:`_map_norm`, then the patch tokens as a ``(batch, channels, height, width)`` view
    (:func:`tokens_to_map`); with ``reshape_maps`` off, the token sequence. Each layer is called as
    ``layer(tokens, *self._layer_inputs(...), need_weights)`` and returns ``(tokens, probabilities or None)``.

    A subclass builds its modules, calls :meth:`_set_plain_stages` (stage widths and strides, prefix tokens,
    ``reshape_maps``) and ``post_init()``, and overrides what
    differs from the defaults: :meth:`_embed` (``self.embeddings(pixel_values)``), :attr:`token_layers`
    (``self.encoder.layer``), :meth:`_map_norm` (``self.layernorm``, ``None`` for no norm),
    :meth:`_layer_inputs` (none), :meth:`_stem_modules` (``[self.embeddings]``) or :meth:`_feature_map`.
    """

    reshape_maps: bool = True
    """Return maps as ``(batch, channels, height, width)``; else token sequences (``reshape_hidden_states``)."""

    sequence_maps_keep_prefix: ClassVar[bool] = True
    """Without ``reshape_maps``: the map is the whole sequence (DINOv2, as transformers' ViTs), or only the
    patch tokens when ``False`` (DINOv3, Sapiens2)."""

    def _set_plain_stages(
        self, config: PlainViTShape, *, num_prefix_tokens: int = 0, reshape_maps: bool = True
    ) -> None:
        """Every stage (the stem and ``num_hidden_layers`` layers) ``hidden_size`` wide at stride ``patch_size``;
        the tokens start with ``num_prefix_tokens`` class and register tokens; ``reshape_maps`` (see there)."""
        stages = config.num_hidden_layers + 1
        self.num_features = [config.hidden_size] * stages
        self.reductions = [config.patch_size] * stages
        self.num_prefix_tokens = num_prefix_tokens
        self.reshape_maps = reshape_maps

    @property
    def token_layers(self) -> nn.ModuleList:
        """The transformer layers, in order (stage ``p`` is ``token_layers[p - 1]``)."""
        encoder: Any = self.encoder
        return cast(nn.ModuleList, encoder.layer)

    def _embed(self, pixel_values: Tensor) -> tuple[Tensor, int, int]:
        """The stem: the tokens of stage 0 and the patch grid's height and width."""
        embeddings: Any = self.embeddings
        return cast(tuple[Tensor, int, int], embeddings(pixel_values))

    def _layer_inputs(self, tokens: Tensor, height: int, width: int) -> tuple[Any, ...]:
        """Further inputs every layer takes after the tokens (e.g. rotary positions); none by default. Not called
        when no layer runs."""
        return ()

    def _map_norm(self, position: int) -> nn.Module | None:
        """The norm stage ``position``'s tokens go through before forming its map (``None``: none)."""
        return cast("nn.Module | None", self.layernorm)

    def _stem_modules(self) -> list[nn.Module]:
        """The modules of stage 0, for :meth:`~backbones.Backbone.freeze_stages`."""
        return [cast(nn.Module, self.embeddings)]

    def _feature_map(self, tokens: Tensor, position: int, height: int, width: int, with_prefix: bool) -> Any:
        """Stage ``position``'s map from its tokens; ``with_prefix``: and its prefix tokens, normalised alike."""
        norm = self._map_norm(position)
        if norm is not None:
            tokens = norm(tokens)
        prefix = self.num_prefix_tokens
        if self.reshape_maps or self.sequence_maps_keep_prefix:
            return tokens_to_map(tokens, prefix, height, width, reshape=self.reshape_maps, with_prefix=with_prefix)
        patches = tokens[:, prefix:]
        return (patches, tokens[:, :prefix]) if with_prefix else patches

    def _forward_features(
        self,
        pixel_values: Tensor,
        *,
        last_stage: int,
        output_hidden_states: bool,
        output_attentions: bool,
        output_prefix_tokens: bool = False,
    ) -> tuple[Any, ...]:
        tokens, height, width = self._embed(pixel_values)
        return run_token_layers(
            tokens,
            self.token_layers,
            last_stage=last_stage,
            out_positions=set(self.out_positions),
            num_stages=len(self.stage_names),
            feature_map=lambda stage_tokens, position: self._feature_map(
                stage_tokens, position, height, width, output_prefix_tokens
            ),
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            # Stage 0 runs no layer: nothing to compute for them.
            layer_inputs=self._layer_inputs(tokens, height, width) if last_stage else (),
            output_prefix_tokens=output_prefix_tokens,
        )

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """Stage 0 is the stem, stage ``p`` the layer ``p - 1``; the map norm only forms feature maps, so it
        belongs to no stage (and stays trainable)."""
        if position == 0:
            return self._stem_modules()
        return [self.token_layers[position - 1]]

    def _prune_stages(self, last_stage: int) -> None:
        del self.token_layers[last_stage:]
