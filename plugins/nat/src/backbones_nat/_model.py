"""Neighborhood Attention Transformer (NAT) backbone, and the layers DiNAT reuses.

Paper: Hassani et al., "Neighborhood Attention Transformer" (2022), https://arxiv.org/abs/2204.07143.
DiNAT (``backbones-dinat``) is this model with a dilation per layer; everything here takes one.

Module attribute names are the checkpoint's key names, in the format transformers writes
(``encoder.levels.N.layers.M.attention.self.rpb``, ``embeddings.patch_embeddings.projection.0``,
``encoder.levels.N.downsample.reduction``, ``hidden_states_norms.stageN``), so checkpoints of
transformers' ``NatBackbone`` / ``DinatBackbone`` and the trunks of their ``...ForImageClassification``
checkpoints load unchanged. Attention is :func:`backbones_nat.attention.neighborhood_attention_2d`:
plain PyTorch, no natten.

Layout: hidden states stay channels-last ``(batch, height, width, channels)`` throughout, as in the
reference; feature maps are ``(batch, channels, height, width)`` views of them. The modules are the public
blocks of :mod:`backbones_nat.blocks`.
"""

from __future__ import annotations

from typing import ClassVar, cast

import torch
from torch import Tensor, nn

from backbones import Backbone
from backbones.layers import (
    check_pixel_channels,
    init_linear_and_norm_,
    reselect_output_modules,
    transformer_layer_options,
)

from ._config import NatConfig
from .blocks import NatDownsampler, NatEmbeddings, NatLayer, NatLevel, NeighborhoodSelfAttention

__all__ = ["NatBackbone"]


class _Layer(NatLayer):
    """A :class:`~backbones_nat.blocks.NatLayer` built from a config (NAT's, or DiNAT's with its dilations).

    Args:
        config: The architecture.
        dim: Channels.
        num_heads: Attention heads.
        dilation: Spacing of the neighbourhood's positions.
        drop_path: Stochastic-depth rate (training only).
    """

    def __init__(self, config: NatConfig, dim: int, num_heads: int, dilation: int, drop_path: float) -> None:
        super().__init__(
            dim,
            num_heads,
            kernel_size=config.kernel_size,
            dilation=dilation,
            **transformer_layer_options(config),
            layer_scale_init_value=config.layer_scale_init_value,
            hidden_dropout=config.hidden_dropout_prob,
            attention_dropout=config.attention_probs_dropout_prob,
            drop_path=drop_path,
        )


class _Encoder(nn.Module):
    """Keys ``encoder.levels.N``: the stages (pruning shortens the list)."""

    def __init__(self, config: NatConfig) -> None:
        super().__init__()
        depths, dilations = config.depths, config.layer_dilations
        # The reference's schedule: torch.linspace in float32, so the rates match it bit for bit.
        rates = torch.linspace(0, config.drop_path_rate, sum(depths), device="cpu").tolist()
        starts = [sum(depths[:index]) for index in range(len(depths))]
        last = len(depths) - 1
        self.levels = nn.ModuleList(
            NatLevel(
                (
                    _Layer(config, config.embed_dim * 2**index, config.num_heads[index], dilation, rate)
                    for dilation, rate in zip(dilations[index], rates[start : start + depth])
                ),
                None if index == last else NatDownsampler(config.embed_dim * 2**index),
            )
            for index, (start, depth) in enumerate(zip(starts, depths))
        )

    def stages(self) -> list[NatLevel]:
        return cast("list[NatLevel]", list(self.levels))


class NatBackbone(Backbone):
    """NAT feature extractor with transformers-compatible checkpoints (``NatBackbone`` in transformers 4.x).

    Stages are ``stem`` (the convolutional patch embedding) and ``stage1..stageK``; a stage's feature map
    is its output before downsampling, passed through its own LayerNorm (``hidden_states_norms.<stage>``),
    as in the reference. ``hidden_states`` are the stem and stage outputs before those norms, channels-last
    ``(B, H, W, C)`` as transformers returns them; ``attentions`` hold each stage's last layer's attention
    weights, ``(B, heads, H, W, kernel_size**2)`` on the (padded) map attended over.
    """

    config_class: ClassVar[type[NatConfig]] = NatConfig
    lora_target_modules = ("query", "key", "value", "output.dense", "intermediate.dense")
    base_model_prefix = "nat"  # trunk prefix in NatForImageClassification checkpoints
    has_attentions = True

    config: NatConfig

    def __init__(self, config: NatConfig) -> None:
        super().__init__(config)
        self.embeddings = NatEmbeddings(config.num_channels, config.embed_dim, dropout=config.hidden_dropout_prob)
        self.encoder = _Encoder(config)
        widths = [config.embed_dim * 2**index for index in range(len(config.depths))]
        self.num_features = [config.embed_dim, *widths]
        self.reductions = [config.patch_size] + [config.patch_size * 2**index for index in range(len(widths))]
        self.hidden_states_norms = nn.ModuleDict(
            {name: nn.LayerNorm(self.out_feature_channels[name]) for name in self.out_features}
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``NatPreTrainedModel`` does."""
        if init_linear_and_norm_(module, self.config.initializer_range):
            return
        if isinstance(module, NeighborhoodSelfAttention):
            nn.init.zeros_(module.rpb)
        elif isinstance(module, NatLayer) and module.layer_scale_parameters is not None:
            nn.init.constant_(module.layer_scale_parameters, module.layer_scale_init_value)

    def _on_out_features_changed(self) -> None:
        """Keep one output norm per selected stage, as a model built for the new selection would have.

        New norms start at weight 1, bias 0 (the reference's initialisation); norms of deselected stages
        are dropped, so the state dict stays that of a fresh model of this config.
        """
        reference = self.embeddings.norm.weight
        self.hidden_states_norms = reselect_output_modules(
            self.hidden_states_norms,
            self.out_features,
            lambda name: nn.LayerNorm(self.out_feature_channels[name], device=reference.device, dtype=reference.dtype),
        )

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        check_pixel_channels(pixel_values, self.config.num_channels, self.reference_class_name.removesuffix("Backbone"))
        if output_attentions:
            # The reference returns the attentions of every stage; core only runs to the deepest selected one.
            last_stage = self.num_kept_stages - 1
        norms = self.hidden_states_norms
        names = self.stage_names
        wanted = set(self.out_positions)
        stages = self.encoder.stages()
        maps: list[Tensor | None] = [None] * len(names)
        hidden_states: list[Tensor] = []
        attentions: list[Tensor] = []
        x = self.embeddings(pixel_values)
        for position in range(last_stage + 1):
            if position:
                if position > 1:
                    downsample = stages[position - 2].downsample
                    assert downsample is not None
                    x = downsample(x)
                x, weights = stages[position - 1](x, output_attentions)
                if weights is not None:
                    attentions.append(weights)
            if position in wanted:
                maps[position] = norms[names[position]](x).permute(0, 3, 1, 2)
            if output_hidden_states:
                hidden_states.append(x)
        return (
            maps,
            tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
        )

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """Stage 0 is the stem (``embeddings``); stage ``i`` is the layers of ``encoder.levels[i - 1]`` and,
        for ``i >= 2``, the downsampler before them (``encoder.levels[i - 2].downsample``). The output norms
        (``hidden_states_norms``) belong to no stage."""
        if position == 0:
            return [self.embeddings]
        levels = self.encoder.stages()
        modules: list[nn.Module] = [levels[position - 1].layers]
        if position > 1:
            downsample = levels[position - 2].downsample
            assert downsample is not None
            modules.insert(0, downsample)
        return modules

    def _prune_stages(self, last_stage: int) -> None:
        del self.encoder.levels[last_stage:]
        if last_stage:
            self.encoder.stages()[-1].downsample = None  # it only fed the first pruned stage
