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

The modules are the public blocks of :mod:`backbones_swin.blocks`. Extension points of the backbone (used by
backbones-swinv2 and backbones-maskformer-swin, which subclass it): ``_make_embeddings``, ``_make_block`` and
``_make_merging`` (which modules a stage is made of), ``trunk_name`` (where the stem and stages live in the
checkpoint), ``_add_output_norms``, ``_stage_map``, ``_hidden_state`` and
``per_block_hidden_states`` (what a stage's ``hidden_states`` entry is).
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from backbones import Backbone
from backbones.layers import drop_path_rates, init_linear_and_norm_, reselect_output_modules, transformer_layer_options

from ._config import SwinConfig, SwinFamilyConfig
from .blocks import PatchMerging, SwinBlock, SwinEmbeddings, SwinEncoder, SwinStage, SwinTrunk, WindowSelfAttention

__all__ = ["SwinBackbone"]


class SwinBackbone(Backbone):
    """Swin Transformer feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the patch embeddings) and ``stage1..stageK``; a stage's feature map is taken
    before its patch merging and passed through its own LayerNorm (``hidden_states_norms.<stage>``),
    exactly as transformers' ``SwinBackbone``. ``hidden_states`` are the stage outputs before those
    norms; ``attentions`` hold the last block's attention probabilities of each stage. Feature maps
    and hidden states are ``(B, C, H, W)`` views of channels-last memory (call ``.contiguous()`` if a
    consumer needs the default layout).
    """

    config_class: ClassVar[type[SwinFamilyConfig]] = SwinConfig
    lora_target_modules = ("query", "key", "value", "output.dense", "intermediate.dense")
    base_model_prefix = "swin"  # trunk prefix in SwinForImageClassification checkpoints
    has_attentions = True
    # Saved by transformers before 5.x; recomputed from window_size here.
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = (r"relative_position_index$",)

    config: SwinFamilyConfig
    hidden_states_norms: nn.Module  # a ModuleDict by stage name here; subclasses may lay them out otherwise

    def __init__(self, config: SwinFamilyConfig) -> None:
        super().__init__(config)
        depths = config.depths
        stages = [
            SwinStage(
                [self._make_block(index, depth, rate) for depth, rate in enumerate(rates)],
                None if index == len(depths) - 1 else self._make_merging(config.embed_dim * 2**index),
            )
            for index, rates in enumerate(drop_path_rates(config.drop_path_rate, depths))
        ]
        self._add_trunk(self._make_embeddings(), SwinEncoder(stages))
        self.num_features = [config.embed_dim] + [config.embed_dim * 2**index for index in range(len(depths))]
        self.reductions = [config.patch_size] + [config.patch_size * 2**index for index in range(len(depths))]
        self._add_output_norms()
        self.post_init()

    # -- module hooks: what the stem and the stages are made of ---------------------------------------

    def _make_embeddings(self) -> SwinEmbeddings:
        """The stem, from ``self.config``."""
        config = self.config
        size = config.image_size if isinstance(config.image_size, tuple) else (config.image_size,) * 2
        grid = (size[0] // config.patch_size, size[1] // config.patch_size)
        return SwinEmbeddings(
            config.num_channels,
            config.embed_dim,
            config.patch_size,
            position_grid=grid if config.use_absolute_embeddings else None,
            dropout=config.hidden_dropout_prob,
        )

    def _block_options(self) -> dict[str, Any]:
        """The :class:`~backbones_swin.blocks.SwinBlock` arguments every block of ``self.config`` shares."""
        config = self.config
        return {
            **transformer_layer_options(config),
            "hidden_dropout": config.hidden_dropout_prob,
            "attention_dropout": config.attention_probs_dropout_prob,
        }

    def _make_block(self, stage: int, depth: int, drop_path: float) -> SwinBlock:
        """Block ``depth`` of stage ``stage`` (0-based): every second one shifts its windows by half a window."""
        config = self.config
        return SwinBlock(
            config.embed_dim * 2**stage,
            config.num_heads[stage],
            window_size=config.window_size,
            shift=0 if depth % 2 == 0 else config.window_size // 2,
            drop_path=drop_path,
            **self._block_options(),
        )

    def _make_merging(self, dim: int) -> nn.Module:
        """The patch merging after a stage of ``dim`` channels (``2 * dim`` out)."""
        return PatchMerging(dim)

    # -- layout hooks: where the stem, the stages and the output norms live in the checkpoint --------

    trunk_name: ClassVar[str] = "swin"
    """The attribute (checkpoint key prefix) of the :class:`~backbones_swin.blocks.SwinTrunk` holding the stem
    and the stages; ``""``: the backbone holds them itself (``embeddings``, ``encoder``)."""

    def _add_trunk(self, embeddings: SwinEmbeddings, encoder: SwinEncoder) -> None:
        """Register the stem and the stages under :attr:`trunk_name`."""
        if self.trunk_name:
            self.add_module(self.trunk_name, SwinTrunk(embeddings, encoder))
        else:
            self.add_module("embeddings", embeddings)
            self.add_module("encoder", encoder)

    def _trunk(self) -> nn.Module:
        return cast("nn.Module", getattr(self, self.trunk_name)) if self.trunk_name else self

    def _embeddings(self) -> SwinEmbeddings:
        return cast("SwinEmbeddings", self._trunk().embeddings)

    def _encoder(self) -> SwinEncoder:
        return cast("SwinEncoder", self._trunk().encoder)

    def _add_output_norms(self) -> None:
        """One LayerNorm per selected stage (``hidden_states_norms.<stage>``), as transformers' SwinBackbone."""
        self.hidden_states_norms = nn.ModuleDict(
            {name: nn.LayerNorm(self.out_feature_channels[name]) for name in self.out_features}
        )

    def _stage_map(self, position: int, x: Tensor) -> Tensor:
        """The feature map of stage ``position`` from its channels-last output ``x``."""
        norms = cast("nn.ModuleDict", self.hidden_states_norms)
        return norms[self.stage_names[position]](x).permute(0, 3, 1, 2)

    per_block_hidden_states: ClassVar[bool] = False
    """Whether a stage's ``hidden_states`` entry holds every block's input and output (stacked on a new first
    axis, as transformers' MaskFormer-Swin nests them) instead of the stage output alone."""

    def _hidden_state(self, x: Tensor) -> Tensor:
        """The ``hidden_states`` entry of a channels-last stage output ``x``: here ``(B, C, H, W)``."""
        return x.permute(0, 3, 1, 2)

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``SwinPreTrainedModel`` does."""
        if init_linear_and_norm_(module, self.config.initializer_range):
            return
        if isinstance(module, SwinEmbeddings) and module.position_embeddings is not None:
            nn.init.zeros_(module.position_embeddings)
        elif isinstance(module, WindowSelfAttention):
            nn.init.zeros_(module.relative_position_bias_table)

    def _on_out_features_changed(self) -> None:
        """Keep one output norm per selected stage, as a model built for the new selection would have.

        New norms start at weight 1, bias 0 (transformers' initialisation); norms of deselected stages
        are dropped, so the state dict stays that of a fresh model of this config.
        """
        reference = self._embeddings().norm.weight
        self.hidden_states_norms = reselect_output_modules(
            cast("nn.ModuleDict", self.hidden_states_norms),
            self.out_features,
            lambda name: nn.LayerNorm(self.out_feature_channels[name], device=reference.device, dtype=reference.dtype),
        )

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        if output_attentions:
            # transformers returns the attentions of every stage; core only runs to the deepest selected one.
            last_stage = self.num_kept_stages - 1
        names = self.stage_names
        wanted = set(self.out_positions)
        stages = cast("list[SwinStage]", list(self._encoder().layers))
        maps: list[Tensor | None] = [None] * len(names)
        hidden_states: list[Tensor] = []
        attentions: list[Tensor] = []
        x = self._embeddings()(pixel_values)
        for position in range(last_stage + 1):
            block_states: list[Tensor] | None = None
            if position:
                if position > 1:
                    x = stages[position - 2].merge(x)
                if output_hidden_states and self.per_block_hidden_states:
                    block_states = []
                x, weights = stages[position - 1](x, output_attentions, block_states)
                if weights is not None:
                    attentions.append(weights)
            if position in wanted:
                maps[position] = self._stage_map(position, x)
            if output_hidden_states:
                if block_states is not None:
                    hidden_states.append(torch.stack([self._hidden_state(state) for state in block_states]))
                else:
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
        layers = cast("list[SwinStage]", list(self._encoder().layers))
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
            cast("SwinStage", layers[-1]).downsample = None  # it only fed the first pruned stage
