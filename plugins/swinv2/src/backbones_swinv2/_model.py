"""Swin Transformer V2 backbone.

Paper: Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution" (2022),
https://arxiv.org/abs/2111.09883.

Swin V2 keeps Swin's stem, (shifted) windows, padding and staging, and changes four things, each
supplied here by subclassing the public blocks of :mod:`backbones_swin.blocks` rather than copying them:

* scaled cosine attention: scores are the cosine similarity of query and key, times a learned
  per-head temperature ``exp(logit_scale)`` clamped at 100; the key projection has no bias;
* a continuous relative-position bias: a two-layer MLP (``continuous_position_bias_mlp``) maps the
  log-spaced offset between two tokens of a window to one bias per head, squashed to ``(0, 16)``;
* residual post-norm: each residual branch is normalised after the attention or MLP, not before, and
  patch merging normalises after its projection (2C channels) instead of before it (4C);
* windows fixed by the pre-training resolution: a stage whose pre-training map (from ``image_size``) is
  smaller than ``window_size`` uses that smaller window and never shifts.

Module names are the checkpoint keys transformers writes for ``Swinv2Backbone``: ``embeddings.*`` and
``encoder.layers.N.*`` at the top level (``swinv2.`` in task checkpoints, accepted through
``base_model_prefix``). transformers 5 keeps these names in memory too (no renaming on save).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.layers import linear, transformer_layer_options
from backbones_swin import SwinBackbone
from backbones_swin.blocks import (
    SHIFT_MASK_VALUE,
    PatchMerging,
    SwinBlock,
    WindowAttention,
    WindowSelfAttention,
    size_table,
)

from ._config import Swinv2Config

__all__ = ["Swinv2Backbone"]

# transformers clamps the temperature at log(1 / 0.01): attention logits stay within +-100.
_MAX_LOGIT_SCALE = math.log(100.0)
_BIAS_MLP_WIDTH = 512
# The bias MLP's output passes through a sigmoid scaled to (0, _BIAS_RANGE).
_BIAS_RANGE = 16.0


def _log_spaced_offsets(window: int, pretrained_window: int, device: torch.device) -> Tensor:
    """``((2 * window - 1) ** 2, 2)`` inputs of the bias MLP, one row per relative offset ``(dy, dx)``.

    Offsets are divided by ``pretrained_window - 1`` (or ``window - 1`` without one), stretched to
    ``[-8, 8]`` and log-spaced: ``sign(t) * log2(1 + |t|) / 3``, so a model fine-tuned with larger
    windows extrapolates smoothly to offsets it never saw.
    """
    span = torch.arange(-(window - 1), window, device=device).float()
    offsets = torch.stack(torch.meshgrid(span, span, indexing="ij"), dim=-1)
    if pretrained_window > 0:
        offsets = offsets / (pretrained_window - 1)
    elif window > 1:
        offsets = offsets / (window - 1)
    offsets = offsets * 8
    return (torch.sign(offsets) * torch.log2(offsets.abs() + 1.0) / math.log2(8)).view(-1, 2)


class _CosineWindowSelfAttention(WindowSelfAttention):
    """Keys ``attention.self.*``: scaled cosine attention in windows with the continuous position bias.

    Runs as scaled-dot-product attention: the normalised query is multiplied by the clamped temperature,
    the key is normalised, and the bias (plus the shift mask) is the additive mask, with ``scale=1``.

    Args:
        dim: Channels of the tokens.
        num_heads: Attention heads.
        window_size: Side of the windows.
        pretrained_window: The stage's pre-training window side, or ``0`` (see
            :attr:`Swinv2Config.pretrained_window_sizes`).
        **options: The other keyword arguments of :class:`backbones_swin.blocks.WindowSelfAttention`.
    """

    key_bias = False
    softmax_scale = 1.0
    # transformers' Swinv2 adds the shift mask to the scores twice. The sum matters: next to cosine scores
    # scaled by up to 100, a single -100 does not always silence a token pair.
    shift_mask_value = 2 * SHIFT_MASK_VALUE

    def __init__(
        self, dim: int, num_heads: int, window_size: int, *, pretrained_window: int = 0, **options: Any
    ) -> None:
        super().__init__(dim, num_heads, window_size, **options)
        self.pretrained_window = pretrained_window

    def _add_bias_parameters(self, num_heads: int) -> None:
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.continuous_position_bias_mlp = nn.Sequential(
            nn.Linear(2, _BIAS_MLP_WIDTH), nn.ReLU(), nn.Linear(_BIAS_MLP_WIDTH, num_heads, bias=False)
        )

    def _bias_parameters(self) -> list[Tensor]:
        return list(self.continuous_position_bias_mlp.parameters())

    def _bias_table(self) -> Tensor:
        mlp = self.continuous_position_bias_mlp
        reference = mlp[0].weight
        offsets = size_table(_log_spaced_offsets, self.window_size, self.pretrained_window, reference.device)
        return _BIAS_RANGE * torch.sigmoid(mlp(offsets.to(reference.dtype)))

    def _qkv(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        temperature = self.logit_scale.clamp(max=_MAX_LOGIT_SCALE).exp().view(self.num_heads, 1)
        query = F.normalize(self._split_heads(linear(tokens, self.query)), dim=-1) * temperature
        key = F.normalize(self._split_heads(linear(tokens, self.key)), dim=-1)
        return query, key, self._split_heads(linear(tokens, self.value))


class _CosineWindowAttention(WindowAttention):
    """Keys ``attention.*``: cosine self-attention (``self``) and the output projection."""

    self_attention_class = _CosineWindowSelfAttention


class _PostNormBlock(SwinBlock):
    """A Swin V2 block: ``x + drop_path(norm(attention(x)))``, then ``x + drop_path(norm(mlp(x)))``.

    ``layernorm_before`` / ``layernorm_after`` keep transformers' names although they now follow the
    attention and the MLP. The attention sees the un-normalised map (zero-padded to whole windows); its
    output dropout is ``attention_probs_dropout_prob``, as in transformers.

    Args:
        config: The architecture.
        dim: Channels.
        num_heads: Attention heads.
        shift: Cyclic shift of the window grid (0 for regular windows).
        drop_path: Stochastic-depth rate (training only).
        window: Side of the windows (default ``config.window_size``).
        pretrained_window: The stage's pre-training window side, or ``0``.
    """

    attention_class = _CosineWindowAttention

    def __init__(
        self,
        config: Swinv2Config,
        dim: int,
        num_heads: int,
        shift: int,
        drop_path: float,
        window: int | None = None,
        pretrained_window: int = 0,
    ) -> None:
        super().__init__(
            dim,
            num_heads,
            window_size=config.window_size if window is None else window,
            shift=shift,
            **transformer_layer_options(config),
            hidden_dropout=config.hidden_dropout_prob,
            attention_dropout=config.attention_probs_dropout_prob,
            attention_output_dropout=config.attention_probs_dropout_prob,
            drop_path=drop_path,
            pretrained_window=pretrained_window,
        )

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        branch, weights = self._attend(x, need_weights)
        branch = self.layernorm_before(F.dropout(branch, self.attention_dropout, self.training))
        x = x + self._drop_path(branch)
        branch = linear(linear(x, self.intermediate.dense, self.activation), self.output.dense)
        branch = F.dropout(branch, self.dropout, self.training)
        return x + self._drop_path(self.layernorm_after(branch)), weights


class Swinv2Backbone(SwinBackbone):
    """Swin Transformer V2 feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the patch embeddings) and ``stage1..stageK``; a stage's feature map is its
    output before patch merging, with no further norm, exactly as transformers' ``Swinv2Backbone``.
    ``hidden_states`` are the same outputs as ``(B, H * W, C)`` token sequences (transformers' layout);
    ``attentions`` hold the last block's attention probabilities of each stage. Feature maps are
    ``(B, C, H, W)`` views of channels-last memory. With the default config, ``stage1..stage4`` are 96, 192,
    384 and 768 channels wide.
    """

    config_class = Swinv2Config
    lora_target_modules = ("query", "key", "value", "output.dense", "intermediate.dense")
    base_model_prefix = "swinv2"  # trunk prefix in Swinv2ForImageClassification checkpoints
    # Derived from the window sizes; some converted checkpoints hold them.
    ignored_checkpoint_keys = (r"relative_position_index$", r"relative_coords_table$")
    trunk_name = ""  # transformers' Swinv2Backbone holds the stem and the stages itself

    config: Swinv2Config

    def _make_block(self, stage: int, depth: int, drop_path: float) -> SwinBlock:
        """A post-norm block with the stage's window, shift and pre-training window."""
        config = self.config
        return _PostNormBlock(
            config,
            config.embed_dim * 2**stage,
            config.num_heads[stage],
            config.stage_shift_sizes[stage] if depth % 2 else 0,
            drop_path,
            window=config.stage_window_sizes[stage],
            pretrained_window=config.pretrained_window_sizes[stage],
        )

    def _make_merging(self, dim: int) -> nn.Module:
        """Patch merging that normalises after its projection (2C channels)."""
        return PatchMerging(dim, norm_after=True)

    def _add_output_norms(self) -> None:
        """Swin V2's backbone has no output norms: its blocks already end in a norm."""

    def _on_out_features_changed(self) -> None:
        """Nothing to follow: no module depends on the selection."""

    def _stage_map(self, position: int, x: Tensor) -> Tensor:
        return x.permute(0, 3, 1, 2)

    def _hidden_state(self, x: Tensor) -> Tensor:
        return x.flatten(1, 2)

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``Swinv2PreTrainedModel`` does."""
        if isinstance(module, _CosineWindowSelfAttention):
            nn.init.constant_(module.logit_scale, math.log(10.0))
        else:
            super()._init_weights(module)
