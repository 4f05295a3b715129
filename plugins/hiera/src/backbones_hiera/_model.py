"""Hiera backbone.

Paper: Ryali et al., "Hiera: A Hierarchical Vision Transformer without the Bells-and-Whistles" (2023),
https://arxiv.org/abs/2306.00989.

Hiera is a plain pre-norm transformer made hierarchical by two cheap operations on a token order chosen once:

* **Unrolling.** After the patch embedding the tokens are reordered so that, for each of the ``stages - 1``
  query strides ``s``, the ``s x s`` neighbours of a position are ``s * s`` contiguous slices of the sequence
  (outermost the finest stride). A 2x2 max-pool is then a ``max`` over the first axis of a view, and a mask
  unit (a square window of tokens) is a fixed set of strided positions: no gather, no padding.
* **Query pooling.** The first block of each of the first ``num_query_pool`` stages after the first pools its
  queries (and its residual, projected to the new width) over the outermost stride: the resolution halves.
* **Mask-unit attention.** Stages flagged in ``masked_unit_attention`` (and the first block after such a stage)
  attend within mask units; the others attend globally.

Feature maps are the tokens **rerolled** back to raster order (the strides not yet pooled away moved back into
the spatial axes), passed through a LayerNorm per output stage (``hidden_states_norms.<stage>``).

Module attribute names are the checkpoint keys of transformers' ``HieraBackbone`` / ``HieraModel``
(``embeddings.position_embeddings``, ``encoder.stages.N.layers.M.attn.qkv``, ...), so their checkpoints load
unchanged; task checkpoints hold them under ``hiera.``.

Unlike transformers 5.23's ``HieraBackbone``, whose forward skips the unroll (its maps then mix unrelated
image regions and disagree with ``HieraModel`` and the original implementation on the same weights), this
backbone unrolls as ``HieraModel`` and the paper's code do; and it resamples the position table for inputs of
another size (bicubic, as ``HieraModel(..., interpolate_pos_encoding=True)``).
"""

from __future__ import annotations

import math
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import Backbone, InputError
from backbones.layers import CheckpointableLayer, StemAndStages, drop_path, drop_path_rates, reselect_output_modules
from backbones_dinov2.blocks import Mlp, resample_position_table

from ._config import HieraConfig

__all__ = ["HieraBackbone"]


class HieraPatchEmbeddings(nn.Module):
    """The patch-embedding convolution (key ``projection``)."""

    def __init__(self, config: HieraConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(
            config.num_channels,
            config.embed_dim,
            kernel_size=(config.patch_size[0], config.patch_size[1]),
            stride=(config.patch_stride[0], config.patch_stride[1]),
            padding=(config.patch_padding[0], config.patch_padding[1]),
        )

    def forward(self, pixel_values: Tensor) -> Tensor:
        """``(batch, channels, height, width)`` images to ``(batch, embed_dim, rows, columns)`` patches."""
        return cast("Tensor", self.projection(pixel_values))


class HieraEmbeddings(nn.Module):
    """Patch embedding plus absolute position embeddings (keys ``patch_embeddings``, ``position_embeddings``).

    The table holds one row per patch of ``image_size``; for other inputs it is resampled bicubically (a square
    table; a non-square one serves its own grid only).
    """

    def __init__(self, config: HieraConfig) -> None:
        super().__init__()
        self.grid = config.position_grid
        self.patch_embeddings = HieraPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], config.embed_dim))

    def _positions(self, rows: int, columns: int) -> Tensor:
        table = self.position_embeddings
        if self.grid[0] == self.grid[1]:
            return resample_position_table(table, self.grid[0], rows, columns)
        if not torch.compiler.is_compiling() and (rows, columns) != self.grid:
            raise InputError(
                f"this Hiera's position table covers a {self.grid[0]}x{self.grid[1]} grid of patches (image_size), "
                f"which is not square, so it cannot be resampled to the {rows}x{columns} grid of this input; "
                "feed images of image_size"
            )
        return table

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, int, int]:
        """``(batch, rows * columns, embed_dim)`` tokens in raster order, and the grid's rows and columns."""
        patches = self.patch_embeddings(pixel_values)
        rows, columns = patches.shape[-2:]
        tokens = patches.flatten(2).transpose(1, 2)
        return tokens + self._positions(rows, columns), rows, columns


class HieraMaskUnitAttention(nn.Module):
    """Attention within mask units (or global), with optional query pooling (keys ``qkv``, ``proj``).

    The input is unrolled: a mask unit is the ``tokens_per_window`` positions that are ``num_windows`` apart, and
    the pooled neighbours of a query are ``query_stride`` slices of the window.

    Args:
        width: Channels in.
        width_out: Channels out (the stage's width).
        heads: Attention heads.
        query_stride: Tokens max-pooled into one query (1: no pooling).
        window_size: Tokens of a mask unit after this block's pooling.
        use_mask_unit_attn: Attend within mask units (else over the whole sequence).
    """

    def __init__(
        self, width: int, width_out: int, heads: int, query_stride: int, window_size: int, use_mask_unit_attn: bool
    ) -> None:
        super().__init__()
        self.num_heads = heads
        self.head_dim = width_out // heads
        self.width_out = width_out
        self.query_stride = query_stride
        self.tokens_per_window = query_stride * window_size if use_mask_unit_attn else 0
        self.qkv = nn.Linear(width, 3 * width_out)
        self.proj = nn.Linear(width_out, width_out)

    def forward(self, tokens: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """``(batch, tokens / query_stride, width_out)``, and ``(batch, heads, windows, queries, keys)``
        attention probabilities if ``need_weights``."""
        batch = tokens.shape[0]
        if self.tokens_per_window:
            qkv = self.qkv(tokens).reshape(batch, self.tokens_per_window, -1, 3, self.num_heads, self.head_dim)
        else:
            qkv = self.qkv(tokens).reshape(batch, -1, 1, 3, self.num_heads, self.head_dim)
        # (3, batch, heads, windows, tokens of a window, head_dim)
        query, key, value = qkv.permute(3, 0, 4, 2, 1, 5).unbind(0)
        if self.query_stride > 1:
            query = query.unflatten(3, (self.query_stride, -1)).amax(dim=3)
        weights: Tensor | None = None
        if need_weights:
            weights = (query * self.head_dim**-0.5 @ key.transpose(-2, -1)).softmax(dim=-1)
            context = weights @ value
        else:
            context = F.scaled_dot_product_attention(query.flatten(1, 2), key.flatten(1, 2), value.flatten(1, 2))
            context = context.unflatten(1, (self.num_heads, -1))
        # Back to (batch, queries of a window, windows, heads, head_dim): the unrolled order.
        context = context.transpose(1, 3).reshape(batch, -1, self.width_out)
        return self.proj(context), weights


class HieraLayer(CheckpointableLayer):
    """Pre-norm block; where the width changes, the residual is projected and pooled as the queries are.

    Keys: ``layernorm_before``, ``attn``, ``layernorm_after``, ``mlp`` (``fc1``, ``fc2``), ``proj`` (width changes).

    Args:
        config: The architecture (MLP ratio, activation, epsilon).
        width: Channels in.
        width_out: Channels out.
        heads: Attention heads.
        drop_path: Stochastic-depth rate of both residual branches.
        query_stride: Tokens max-pooled into one (1: none).
        window_size: Tokens of a mask unit after this block's pooling.
        use_mask_unit_attn: Attend within mask units.
    """

    def __init__(
        self,
        config: HieraConfig,
        width: int,
        width_out: int,
        heads: int,
        drop_path: float,
        query_stride: int,
        window_size: int,
        use_mask_unit_attn: bool,
    ) -> None:
        super().__init__()
        self.query_stride = query_stride
        self.drop_path_rate = drop_path
        self.layernorm_before = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.attn = HieraMaskUnitAttention(width, width_out, heads, query_stride, window_size, use_mask_unit_attn)
        self.layernorm_after = nn.LayerNorm(width_out, eps=config.layer_norm_eps)
        self.mlp = Mlp(width_out, int(width_out * config.mlp_ratio), config.hidden_act)
        self.proj = nn.Linear(width, width_out) if width != width_out else None

    def forward(self, tokens: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        normed = self.layernorm_before(tokens)
        if self.proj is not None:
            pooled = self.proj(normed).unflatten(1, (self.query_stride, -1))
            tokens = pooled.amax(dim=1)
        attended, weights = self.attn(normed, need_weights)
        tokens = tokens + drop_path(attended, self.drop_path_rate, self.training)
        tokens = tokens + drop_path(self.mlp(self.layernorm_after(tokens)), self.drop_path_rate, self.training)
        return tokens, weights


class HieraStage(nn.Module):
    """The blocks of one stage (key ``layers``)."""

    def __init__(self, layers: list[HieraLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, tokens: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """The stage's output, and the last block's attention probabilities if ``need_weights``."""
        weights: Tensor | None = None
        for layer in self.layers:
            tokens, weights = layer(tokens, need_weights)
        return tokens, weights


class HieraEncoder(nn.Module):
    """The stages (key ``stages``), built as transformers' ``HieraEncoder`` lays them out."""

    def __init__(self, config: HieraConfig) -> None:
        super().__init__()
        pool_area = math.prod(config.query_stride)
        unit_area = math.prod(config.masked_unit_size)
        pooling_stages = set(range(1, config.num_query_pool + 1))
        widths = config.stage_widths
        stages = []
        width = config.embed_dim
        for index, rates in enumerate(drop_path_rates(config.drop_path_rate, config.depths)):
            # The first block after a mask-unit stage still attends within (pooled) mask units.
            previous_masked = config.masked_unit_attention[max(index - 1, 0)]
            window = int(unit_area * pool_area**-index)
            layers = [
                HieraLayer(
                    config,
                    width if depth == 0 else widths[index],
                    widths[index],
                    config.num_heads[index],
                    rate,
                    pool_area if depth == 0 and index in pooling_stages else 1,
                    window,
                    config.masked_unit_attention[index] or (previous_masked and depth == 0),
                )
                for depth, rate in enumerate(rates)
            ]
            stages.append(HieraStage(layers))
            width = widths[index]
        self.stages = nn.ModuleList(stages)


class HieraBackbone(StemAndStages, Backbone):
    """Hiera feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the patch embeddings with positions) and ``stage1..stageK``; each selected stage's
    map is its tokens rerolled to ``(batch, height, width, channels)``, passed through its own LayerNorm
    (``hidden_states_norms.<stage>``, epsilon 1e-5) and returned as ``(batch, channels, height, width)``.
    ``hidden_states`` are the stem's and every stage's tokens before those norms, ``(batch, tokens,
    channels)`` in the unrolled order the stages compute in (transformers' structure); ``attentions`` hold the
    last block's probabilities of each stage, ``(batch, heads, windows, queries, keys)``.

    Inputs must be multiples of ``patch_stride * masked_unit_size`` (32 pixels for the released models).
    """

    config_class: ClassVar[type[HieraConfig]] = HieraConfig
    base_model_prefix = "hiera"  # trunk prefix in HieraForImageClassification / HieraForPreTraining checkpoints
    has_attentions = True
    input_model_name = "Hiera"
    lora_target_modules: ClassVar[tuple[str, ...]] = ("qkv", "proj", "fc1", "fc2")

    config: HieraConfig
    hidden_states_norms: nn.ModuleDict

    def __init__(self, config: HieraConfig) -> None:
        super().__init__(config)
        self.embeddings = HieraEmbeddings(config)
        self.encoder = HieraEncoder(config)
        self.num_features = [config.embed_dim, *config.stage_widths]
        self.reductions = [config.patch_stride[0], *config.stage_strides]
        self.hidden_states_norms = nn.ModuleDict({name: self._output_norm(name) for name in self.out_features})
        stride = config.query_stride[0]
        steps = len(config.depths) - 1
        self._stride = stride
        self._steps = steps
        # Strides still unrolled in the tokens after each stage position (the stem is stage 1's input).
        self._unrolled = [steps] + [steps - min(index, config.num_query_pool) for index in range(len(config.depths))]
        self.post_init()

    def _output_norm(self, name: str) -> nn.LayerNorm:
        return nn.LayerNorm(self.out_feature_channels[name])

    # -- token order ----------------------------------------------------------------------------------

    def _unroll(self, tokens: Tensor, rows: int, columns: int) -> Tensor:
        """Raster-order tokens to the unrolled order ``(sy1, sx1, ..., syN, sxN, rows / S, columns / S)``."""
        batch, _, channels = tokens.shape
        stride, steps = self._stride, self._steps
        if not steps:
            return tokens
        cell = stride**steps
        # A row index is ((r * s + syN) * s + ...) * s + sy1: view the strides out, finest last.
        grid = tokens.reshape(batch, rows // cell, *[stride] * steps, columns // cell, *[stride] * steps, channels)
        order = [0]
        for step in range(1, steps + 1):
            order += [1 + steps + 1 - step, 2 + 2 * steps + 1 - step]
        order += [1, 2 + steps, 3 + 2 * steps]
        return grid.permute(order).reshape(batch, -1, channels)

    def _reroll(self, tokens: Tensor, position: int, rows: int, columns: int) -> Tensor:
        """Stage ``position``'s tokens back to a raster ``(batch, height, width, channels)`` map.

        Args:
            tokens: The stage's unrolled tokens.
            position: Stage position (0 is the stem).
            rows: Patch rows of the input.
            columns: Patch columns of the input.
        """
        batch, _, channels = tokens.shape
        left = self._unrolled[position]
        cell = self._stride**self._steps
        coarse_rows, coarse_columns = rows // cell, columns // cell
        if not left:
            return tokens.reshape(batch, coarse_rows, coarse_columns, channels)
        grid = tokens.reshape(batch, *[self._stride] * (2 * left), coarse_rows, coarse_columns, channels)
        # The pairs are the remaining strides, coarsest last: the coarsest goes next to the coarse axis.
        order = [0, 2 * left + 1, *range(2 * left - 1, 0, -2), 2 * left + 2, *range(2 * left, 0, -2), 2 * left + 3]
        span = self._stride**left
        return grid.permute(order).reshape(batch, coarse_rows * span, coarse_columns * span, channels)

    def _check_size(self, pixel_values: Tensor) -> None:
        multiple = self.config.input_multiple
        height, width = pixel_values.shape[-2:]
        if not torch.compiler.is_compiling() and (height % multiple[0] or width % multiple[1]):
            raise InputError(
                f"Hiera takes inputs whose height and width are multiples of patch_stride * masked_unit_size = "
                f"{multiple[0]}x{multiple[1]} pixels (whole mask units of whole patches), got {height}x{width}; "
                "resize or pad the images"
            )

    # -- forward --------------------------------------------------------------------------------------

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        self._check_input_channels(pixel_values)
        self._check_size(pixel_values)
        if output_attentions:
            # transformers returns the attentions of every stage; core only runs to the deepest selected one.
            last_stage = self.num_kept_stages - 1
        wanted = set(self.out_positions)
        names = self.stage_names
        maps: list[Tensor | None] = [None] * len(names)
        hidden_states: list[Tensor] = []
        attentions: list[Tensor] = []
        embedded, rows, columns = self.embeddings(pixel_values)
        tokens = self._unroll(embedded, rows, columns)
        stages = cast("list[HieraStage]", list(self.encoder.stages))
        for position in range(last_stage + 1):
            if position:
                tokens, weights = stages[position - 1](tokens, output_attentions)
                if weights is not None:
                    attentions.append(weights)
            if output_hidden_states:
                hidden_states.append(tokens)
            if position in wanted:
                spatial = self._reroll(tokens, position, rows, columns)
                maps[position] = self.hidden_states_norms[names[position]](spatial).permute(0, 3, 1, 2)
        return (
            maps,
            tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
        )

    # -- weights and stages ---------------------------------------------------------------------------

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``HieraPreTrainedModel`` does: truncated
        normal weights, and biases set to ``initializer_range`` (LayerNorm weights to ``layer_norm_init``)."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.constant_(module.bias, std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.constant_(module.weight, self.config.layer_norm_init)
            nn.init.constant_(module.bias, std)
        elif isinstance(module, HieraEmbeddings):
            nn.init.trunc_normal_(module.position_embeddings, std=std)

    def _on_out_features_changed(self) -> None:
        """Keep one output norm per selected stage, initialised as in a model built for the new selection."""
        reference = self.embeddings.position_embeddings

        def make(name: str) -> nn.Module:
            norm = self._output_norm(name).to(device=reference.device, dtype=reference.dtype)
            self._init_weights(norm)
            return norm

        self.hidden_states_norms = reselect_output_modules(self.hidden_states_norms, self.out_features, make)

    def _stem_and_stages(self) -> tuple[nn.Module, nn.ModuleList]:
        return self.embeddings, self.encoder.stages
