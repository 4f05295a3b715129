"""BEiT backbone: a plain vision transformer whose layers are read out as feature maps.

Paper: Bao et al., "BEiT: BERT Pre-Training of Image Transformers" (2021), https://arxiv.org/abs/2106.08254.

Module attribute names are the checkpoint's key names, in the format transformers writes to disk and the
hub holds: ``beit.encoder.layer.N.attention.attention.query.weight``, ``intermediate.dense``,
``output.dense``, and the pyramid as ``fpn1.0`` / ``fpn1.1`` / ``fpn1.3`` / ``fpn2.0``. transformers 5
renames these in memory (``q_proj``, ``mlp.fc1``, ``fpn.fpn1.conv_transpose1``) but writes them back
under these names, and task checkpoints (``BeitForImageClassification``, ``BeitForSemanticSegmentation``)
use them too. transformers' ``BeitBackbone`` saves its trunk without the ``beit.`` prefix; the loader
adds it (``base_model_prefix``).

Layout: tokens stay ``(batch, 1 + height * width, channels)``, CLS token first, from the embeddings to
the last layer. A stage's feature map is a ``(batch, channels, height, width)`` view of its patch tokens,
so no stage pays for a transposing copy.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.activations import make_activation as build_activation
from backbones.layers import (
    CheckpointableLayer,
    check_pixel_channels,
    drop_path,
    drop_path_rates,
    linear,
    module_group,
    query_key_value_projections,
)
from backbones_dinov2.blocks import PlainViTBackbone

from ._config import BeitConfig

__all__ = ["BeitBackbone"]

# Input sizes whose attention bias one relative-position module keeps (a few sizes alternate in practice).
_CACHED_SIZES = 8


def _activation(name: str) -> nn.Module:
    return build_activation(name)


def _build_relative_index(height: int, width: int, device: torch.device) -> Tensor:
    """``(1 + h*w, 1 + h*w)`` rows of the bias table for every (query, key) token pair of an ``h x w`` grid.

    Patch pairs index a ``(2h - 1, 2w - 1)`` grid of offsets, row-major; the three rows after it hold
    the CLS-to-patch, patch-to-CLS and CLS-to-CLS biases.
    """
    # Row and column of every patch by division (not repeat_interleave, whose ONNX translation with a
    # symbolic count yields the wrong length).
    patch = torch.arange(height * width, device=device)
    row = patch.div(width, rounding_mode="floor")
    col = patch - row * width
    offsets = (row[:, None] - row[None, :] + height - 1) * (2 * width - 1) + (col[:, None] - col[None, :] + width - 1)
    grid_rows = (2 * height - 1) * (2 * width - 1)
    index = torch.full((height * width + 1, height * width + 1), grid_rows, dtype=torch.long, device=device)
    index[1:, 0] = grid_rows + 1
    index[0, 0] = grid_rows + 2
    index[1:, 1:] = offsets
    return index


@functools.lru_cache(maxsize=32)
def _cached_relative_index(height: int, width: int, device: torch.device) -> Tensor:
    # Built outside inference mode so that a table cached there also serves autograd-recording calls.
    with torch.inference_mode(False), torch.no_grad():
        return _build_relative_index(height, width, device)


class _RelativePositionBias(nn.Module):
    """Learned attention bias per head for every relative offset between two patches (and the CLS token).

    Key ``relative_position_bias_table``: ``(2H - 1) * (2W - 1) + 3`` rows for the pre-training grid
    ``H x W``. For another grid the offset part of the table is resampled bilinearly, as transformers does.
    """

    grid_index: Tensor

    def __init__(self, config: BeitConfig) -> None:
        super().__init__()
        self.grid = config.patch_grid
        rows = (2 * self.grid[0] - 1) * (2 * self.grid[1] - 1) + 3
        self.relative_position_bias_table = nn.Parameter(torch.zeros(rows, config.num_attention_heads))
        # The pre-training grid's index as a buffer, read in eager mode at that grid (graphs build theirs).
        self.register_buffer("grid_index", _build_relative_index(*self.grid, torch.device("cpu")), persistent=False)
        self._bias_cache: dict[tuple[int, int], Tensor] = {}
        self._bias_cache_stamp: tuple[int, int] | None = None

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        self._bias_cache.clear()  # cached biases must follow .to() / .half() / .cuda()
        # torch leaves Module._apply unannotated (untyped_calls_exclude does not reach a super() call).
        return super()._apply(fn, recurse)  # type: ignore[no-untyped-call]

    def forward(self, height: int, width: int) -> Tensor:
        """The additive attention bias ``(1, heads, 1 + h*w, 1 + h*w)`` for an ``height x width`` patch grid."""
        table = self.relative_position_bias_table
        # Reuse is only safe while the table cannot change under us or need a graph: eval mode, no
        # gradient into the table, and the table's storage and version unchanged. Never while tracing.
        if torch.compiler.is_compiling() or self.training or (torch.is_grad_enabled() and table.requires_grad):
            return self._bias(height, width)
        stamp = (table.data_ptr(), table._version)
        if stamp != self._bias_cache_stamp:
            self._bias_cache.clear()
            self._bias_cache_stamp = stamp
        bias = self._bias_cache.get((height, width))
        if bias is None:
            with torch.inference_mode(False), torch.no_grad():
                bias = self._bias(height, width)
            if len(self._bias_cache) >= _CACHED_SIZES:
                self._bias_cache.pop(next(iter(self._bias_cache)))
            self._bias_cache[(height, width)] = bias
        return bias

    def _bias(self, height: int, width: int) -> Tensor:
        table: Tensor = self.relative_position_bias_table
        # Bilinear resampling to the table's own size is the identity (every output sits exactly on an input
        # offset, weights 1 and 0), so eager reads the table as stored at the pre-training grid. While
        # compiling or exporting the sizes may be symbolic and comparing them would guard the graph to one
        # size, so there the table is always resampled (as transformers always does).
        if not torch.compiler.is_compiling() and (height, width) == self.grid:
            index = self.grid_index
        else:
            table = self._resampled_table(height, width)
            index = (
                _build_relative_index(height, width, table.device)
                if torch.compiler.is_compiling()
                else _cached_relative_index(height, width, table.device)
            )
        tokens = height * width + 1
        heads = table.shape[1]
        # Heads first before the gather, so the bias comes out contiguous in the layout attention reads.
        return table.t().contiguous().index_select(1, index.view(-1)).view(1, heads, tokens, tokens)

    def _resampled_table(self, height: int, width: int) -> Tensor:
        table = self.relative_position_bias_table
        rows, cols = 2 * self.grid[0] - 1, 2 * self.grid[1] - 1
        offsets = table[: rows * cols].t().reshape(1, -1, rows, cols)
        # transformers reshapes this grid as (cols, rows): the same for the square pre-training sizes of
        # every published checkpoint; for a non-square image_size the (rows, cols) order here is the right one.
        offsets = F.interpolate(offsets, size=(2 * height - 1, 2 * width - 1), mode="bilinear", align_corners=False)
        return torch.cat([offsets.flatten(2)[0].t(), table[rows * cols :]])


class _Embeddings(nn.Module):
    """Stem (keys ``beit.embeddings.*``): patch projection, CLS token, optional absolute positions."""

    def __init__(self, config: BeitConfig) -> None:
        super().__init__()
        patch = config.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = module_group(
            projection=nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=patch, stride=patch)
        )
        self.grid = config.patch_grid
        # No mask_token: the backbone never masks patches (the key of pre-training checkpoints is unused).
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + 1, config.hidden_size))
            if config.use_absolute_position_embeddings
            else None
        )
        self.dropout = config.hidden_dropout_prob

    def forward(self, pixel_values: Tensor) -> Tensor:
        patches = self.patch_embeddings.projection(pixel_values)
        batch, _, height, width = patches.shape
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
        if self.position_embeddings is not None:
            tokens = tokens + self._positions(height, width)
        return F.dropout(tokens, self.dropout, self.training)

    def _positions(self, height: int, width: int) -> Tensor:
        table = self.position_embeddings
        assert table is not None
        # Bicubic resampling to the table's own size is the identity (cubic weights 0, 1, 0, 0 at zero
        # offset), so eager skips it at the pre-training grid; while compiling or exporting the sizes may be
        # symbolic, so the table is always resampled there (as transformers does when tracing).
        if not torch.compiler.is_compiling() and (height, width) == self.grid:
            return table
        # Another input size: resample the patch part of the table bicubically, as transformers does.
        patch_part = table[:, 1:].reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        patch_part = F.interpolate(patch_part, size=(height, width), mode="bicubic", align_corners=False)
        return torch.cat([table[:, :1], patch_part.flatten(2).transpose(1, 2)], dim=1)


class _SelfAttention(nn.Module):
    """Multi-head self-attention over all tokens (keys ``attention.attention.*``); the key has no bias.

    The output projection is the sibling ``attention.output.dense``. The relative-position bias, when the
    layer has its own, is the child ``relative_position_bias``.
    """

    def __init__(self, config: BeitConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.dropout = config.attention_probs_dropout_prob
        self.query, self.key, self.value = query_key_value_projections(width, key_bias=False)
        self.relative_position_bias = _RelativePositionBias(config) if config.use_relative_position_bias else None

    def forward(self, tokens: Tensor, bias: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Returns the context ``(B, L, C)`` and, if asked, the probabilities ``(B, heads, L, L)``."""
        batch, length, width = tokens.shape
        split = (batch, length, self.num_heads, width // self.num_heads)
        query, key, value = (linear(tokens, p).view(split).transpose(1, 2) for p in (self.query, self.key, self.value))
        if bias is not None:
            bias = bias.to(query.dtype)  # autocast may run the projections in a lower precision
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = torch.matmul(query, key.transpose(-1, -2)) * query.shape[-1] ** -0.5
            if bias is not None:
                scores = scores + bias
            weights = F.dropout(scores.softmax(-1, dtype=torch.float32).to(query.dtype), dropout, self.training)
            context = torch.matmul(weights, value)
        else:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout)
        context = context.transpose(1, 2)
        if torch.compiler.is_compiling():
            # The traced reshape becomes a view when the traced attention kernel returns heads-inner memory;
            # ONNX export later swaps in a decomposition that returns heads-outer memory, which that view
            # cannot read. An explicit contiguous copy makes the graph independent of the kernel's layout.
            context = context.clone(memory_format=torch.contiguous_format)
        return context.reshape(batch, length, width), weights


class _Layer(CheckpointableLayer):
    """One pre-norm transformer layer; both residual branches are scaled per channel (``lambda_1/2``).

    The unit of gradient checkpointing and of FSDP sharding (with its own relative-position bias)."""

    def __init__(self, config: BeitConfig, drop_path: float) -> None:
        super().__init__()
        width = config.hidden_size
        self.layernorm_before = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.attention = module_group(
            attention=_SelfAttention(config), output=module_group(dense=nn.Linear(width, width))
        )
        self.layernorm_after = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.intermediate = module_group(dense=nn.Linear(width, config.intermediate_size))
        self.output = module_group(dense=nn.Linear(config.intermediate_size, width))
        self.activation = _activation(config.hidden_act)
        scale = config.layer_scale_init_value
        self.lambda_1 = nn.Parameter(torch.full((width,), scale)) if scale > 0 else None
        self.lambda_2 = nn.Parameter(torch.full((width,), scale)) if scale > 0 else None
        self.dropout = config.hidden_dropout_prob
        self.drop_path = drop_path

    def forward(
        self, tokens: Tensor, shared_bias: Tensor | None, grid: tuple[int, int], need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        attention: _SelfAttention = self.attention.attention
        bias = shared_bias
        if attention.relative_position_bias is not None:
            own = attention.relative_position_bias(*grid)
            bias = own if bias is None else own + bias
        branch, weights = attention(self.layernorm_before(tokens), bias, need_weights)
        branch = F.dropout(linear(branch, self.attention.output.dense), self.dropout, self.training)
        if self.lambda_1 is not None:
            branch = self.lambda_1 * branch
        tokens = tokens + self._drop_path(branch)
        branch = linear(
            linear(self.layernorm_after(tokens), self.intermediate.dense, self.activation), self.output.dense
        )
        branch = F.dropout(branch, self.dropout, self.training)
        if self.lambda_2 is not None:
            branch = self.lambda_2 * branch
        return tokens + self._drop_path(branch), weights

    def _drop_path(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_path, self.training)


def _pyramid_level(level: int, width: int) -> nn.Module:
    """Level ``level`` (0..3) of transformers' BEiT pyramid neck: 4x up, 2x up, identity, 2x down.

    Sequential containers reproduce the checkpoint keys (``fpn1.0``, ``fpn1.1``, ``fpn1.3``, ``fpn2.0``).
    """
    if level == 0:
        return nn.Sequential(
            nn.ConvTranspose2d(width, width, kernel_size=2, stride=2),
            nn.BatchNorm2d(width),
            nn.GELU(),
            nn.ConvTranspose2d(width, width, kernel_size=2, stride=2),
        )
    if level == 1:
        return nn.Sequential(nn.ConvTranspose2d(width, width, kernel_size=2, stride=2))
    if level == 2:
        return nn.Identity()
    return nn.MaxPool2d(kernel_size=2, stride=2)


# Stride of each pyramid level relative to the patch grid, as (numerator, denominator).
_LEVEL_SCALES = ((1, 4), (1, 2), (1, 1), (2, 1))


def _level_stride(patch: int, level: int) -> int:
    """Stride of pyramid level ``level`` for ``patch``-pixel patches.

    A level finer than one pixel per position (level 0 with ``patch_size=2``: 0.5) or between whole pixels
    (``patch_size=6``: 1.5) has a fractional stride, returned as a float; core types strides as ints, which
    every other backbone's are.
    """
    numerator, denominator = _LEVEL_SCALES[level]
    stride = Fraction(patch * numerator, denominator)
    return int(stride) if stride.denominator == 1 else cast(int, float(stride))


class BeitBackbone(PlainViTBackbone):
    """BEiT feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the embeddings, positions added) and ``stage1..stageN`` (the output of each
    transformer layer); a stage's map is its patch tokens as a ``(batch, hidden_size, H / patch,
    W / patch)`` grid, exactly as transformers' ``BeitBackbone``. With ``add_fpn`` the four
    ``fpn_indices`` stages go through the pyramid neck (``fpn1``..``fpn4``) and their strides become
    ``patch / 4``, ``patch / 2``, ``patch`` and ``2 * patch`` (any ``patch_size``, as transformers; a
    fractional stride, 0.5 for ``patch_size=2``, is a float). ``hidden_states`` are the token sequences
    ``(batch, 1 + tokens, hidden_size)`` of the stem and every layer run; ``attentions`` the attention
    probabilities ``(batch, heads, 1 + tokens, 1 + tokens)`` of every layer run. With
    ``output_prefix_tokens=True``, ``prefix_tokens`` hold each requested stage's class token ``(batch, 1,
    hidden_size)``, as the stage's tokens hold it (BEiT's maps have no final norm).
    """

    config_class = BeitConfig
    lora_target_modules = ("query", "key", "value", "output.dense", "intermediate.dense")
    config: BeitConfig
    base_model_prefix = "beit"  # trunk prefix of task checkpoints; transformers' BeitBackbone saves it without
    # Saved by older transformers releases; recomputed from the grid here.
    ignored_checkpoint_keys = (r"relative_position_index$",)

    def __init__(self, config: BeitConfig) -> None:
        super().__init__(config)
        (rates,) = drop_path_rates(config.drop_path_rate, [config.num_hidden_layers])
        shared = _RelativePositionBias(config) if config.use_shared_relative_position_bias else None
        encoder = module_group(layer=nn.ModuleList(_Layer(config, rate) for rate in rates))
        encoder.add_module("relative_position_bias", shared)
        # No beit.layernorm nor beit.pooler: only transformers' pooling and heads use them.
        self.beit = module_group(embeddings=_Embeddings(config), encoder=encoder)
        patch = config.patch_size
        # One prefix token: the class token.
        self._set_plain_stages(config, num_prefix_tokens=1, reshape_maps=config.reshape_hidden_states)
        # Stage position -> attribute name of its pyramid level; fixed for the model's lifetime.
        self._pyramid: dict[int, str] = {}
        for level, position in enumerate(config.fpn_positions):
            self.add_module(f"fpn{level + 1}", _pyramid_level(level, config.hidden_size))
            self.reductions[position] = _level_stride(patch, level)
            self._pyramid[position] = f"fpn{level + 1}"
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``BeitPreTrainedModel`` does."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
        elif isinstance(module, _Embeddings):
            nn.init.zeros_(module.cls_token)
            if module.position_embeddings is not None:
                nn.init.zeros_(module.position_embeddings)
        elif isinstance(module, _RelativePositionBias):
            nn.init.zeros_(module.relative_position_bias_table)
        elif isinstance(module, _Layer) and module.lambda_1 is not None:
            nn.init.constant_(module.lambda_1, self.config.layer_scale_init_value)
            nn.init.constant_(module.lambda_2, self.config.layer_scale_init_value)  # type: ignore[arg-type]

    @property
    def minimum_input_size(self) -> int:
        """One patch; two with the feature pyramid, whose coarsest level halves the patch grid."""
        return self.config.patch_size * (2 if self.config.add_fpn else 1)

    @property
    def token_layers(self) -> nn.ModuleList:
        return cast(nn.ModuleList, self.beit.encoder.layer)

    def _embed(self, pixel_values: Tensor) -> tuple[Tensor, int, int]:
        check_pixel_channels(pixel_values, self.config.num_channels, "BEiT")
        patch = self.config.patch_size
        height, width = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
        return self.beit.embeddings(pixel_values), height, width

    def _layer_inputs(self, tokens: Tensor, height: int, width: int) -> tuple[Any, ...]:
        """Every layer takes the shared relative-position bias (``None`` without one) and the patch grid."""
        shared = self.beit.encoder.relative_position_bias
        return (None if shared is None else shared(height, width), (height, width))

    def _stem_modules(self) -> list[nn.Module]:
        return [self.beit.embeddings]

    def _feature_map(self, tokens: Tensor, position: int, height: int, width: int, with_prefix: bool) -> Any:
        """The stage's map (the whole sequence without ``reshape_hidden_states``); ``with_prefix``: and its
        class token, as the stage's tokens hold it."""
        fmap = self._stage_map(tokens, position, (height, width)) if self.reshape_maps else tokens
        return (fmap, tokens[:, : self.num_prefix_tokens]) if with_prefix else fmap

    def _stage_map(self, tokens: Tensor, position: int, grid: tuple[int, int]) -> Tensor:
        fmap = tokens[:, 1:].unflatten(1, grid).permute(0, 3, 1, 2)
        level = self._pyramid.get(position)
        if level is None:
            return fmap
        if torch.compiler.is_compiling():
            # The token view has symbolic strides (batch stride (1 + h * w) * C); ordering them to lay out the
            # pyramid's outputs makes the tracer guard on comparisons it cannot prove for every size. A
            # contiguous copy has plainly ordered strides (eager keeps the view: no copy, same values).
            fmap = fmap.contiguous()
        return getattr(self, level)(fmap)

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """Stage 0 is the embeddings, stage ``p`` the transformer layer ``p - 1`` (with its own relative-position
        bias). The shared relative-position bias feeds every layer; it belongs to ``stage1``, the first that
        reads it, so freezing ``stage1`` keeps that stage's output fixed. The pyramid levels only form
        feature maps: they belong to no stage and stay trainable."""
        modules = super()._stage_modules(position)
        shared = self.beit.encoder.relative_position_bias
        if position == 1 and shared is not None:
            modules.append(shared)
        return modules

    def _prune_stages(self, last_stage: int) -> None:
        super()._prune_stages(last_stage)
        for position, name in list(self._pyramid.items()):
            if position > last_stage:
                delattr(self, name)
                del self._pyramid[position]
