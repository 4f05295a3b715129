"""ViTDet backbone: a plain, single-scale vision transformer adapted for detection.

Paper: Li, Mao, Girshick, He, "Exploring Plain Vision Transformer Backbones for Object Detection" (2022),
https://arxiv.org/abs/2203.16527.

Module attribute names are transformers' ``VitDetBackbone`` / ``VitDetModel`` checkpoint keys
(``embeddings.projection``, ``encoder.layer.N.attention.qkv``, ``attention.rel_pos_h``,
``residual.conv1``, ...); both classes write the same unprefixed keys.

Layout: hidden states stay channels-last ``(batch, height, width, channels)`` from the stem to the last
layer, which is what the layer norms, the attention and the MLP all want; feature maps and hidden states
are returned as ``(batch, channels, height, width)`` views of them (the channels-last memory format), so
no stage pays for a transposing copy. The residual conv blocks run in that layout as well: their 1x1
convolutions are matrix products over the channel axis and their channel norms are ordinary layer norms.

The modules are the public blocks of :mod:`backbones_vitdet.blocks`, held under ``encoder.layer`` by
backbones-dinov2's :class:`~backbones_dinov2.blocks.Dinov2Encoder`.
"""

from __future__ import annotations

from torch import Tensor, nn

from backbones import Backbone
from backbones.layers import drop_path_rates, init_linear_and_norm_, run_token_layers, transformer_layer_options
from backbones_dinov2.blocks import Dinov2Encoder

from ._config import VitDetConfig
from .blocks import BottleneckConv, ChannelNorm, VitDetAttention, VitDetEmbeddings, VitDetLayer

__all__ = ["VitDetBackbone"]


class VitDetBackbone(Backbone):
    """ViTDet feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the embeddings) and ``stage1..stageN`` (the transformer layers), all of stride
    ``patch_size``; a stage's feature map is its hidden state, exactly as transformers' ``VitDetBackbone``.
    ``attentions`` hold each run layer's attention probabilities, ``(batch * windows, heads, N, N)`` for
    windowed layers and ``(batch, heads, N, N)`` for global ones.
    """

    config_class = VitDetConfig
    lora_target_modules = ("qkv", "proj", "fc1", "fc2")
    config: VitDetConfig
    # transformers' prefix for the trunk; VitDetModel and VitDetBackbone checkpoints are both unprefixed.
    base_model_prefix = "vitdet"

    def __init__(self, config: VitDetConfig) -> None:
        super().__init__(config)
        depth = config.num_hidden_layers
        (rates,) = drop_path_rates(config.drop_path_rate, [depth])
        windowed, residual = set(config.window_block_indices), set(config.residual_block_indices)
        layers = [
            self._make_layer(config.window_size if index in windowed else 0, index in residual, rates[index])
            for index in range(depth)
        ]
        self.embeddings = VitDetEmbeddings.from_config(config)
        self.encoder = Dinov2Encoder(layers)
        self.num_features = [config.hidden_size] * (depth + 1)
        self.reductions = [config.patch_size] * (depth + 1)
        self.post_init()

    def _make_layer(self, window: int, residual: bool, drop_path: float) -> VitDetLayer:
        """One layer of ``self.config``: windowed (``window`` > 0) or global, with a residual block or not."""
        config = self.config
        grid = (window, window) if window else config.global_attention_grid
        return VitDetLayer(
            config.hidden_size,
            config.num_attention_heads,
            window_size=window,
            relative_grid=grid if config.use_relative_position_embeddings else None,
            residual=residual,
            **transformer_layer_options(config),
            dropout=config.dropout_prob,
            drop_path=drop_path,
        )

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``VitDetPreTrainedModel`` does."""
        std = self.config.initializer_range
        if isinstance(module, BottleneckConv):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, ChannelNorm) and module.zero_init:
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
        elif init_linear_and_norm_(module, std, truncated=True):
            return
        elif isinstance(module, VitDetEmbeddings) and module.position_embeddings is not None:
            nn.init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
        elif isinstance(module, VitDetAttention) and module.rel_pos_h is not None:
            nn.init.trunc_normal_(module.rel_pos_h, mean=0.0, std=std)
            nn.init.trunc_normal_(module.rel_pos_w, mean=0.0, std=std)  # type: ignore[arg-type]  # set with rel_pos_h

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        maps, hidden_states, attentions = run_token_layers(
            self.embeddings(pixel_values),
            self.encoder.layer,
            last_stage=last_stage,
            out_positions=set(self.out_positions),
            num_stages=len(self.stage_names),
            feature_map=lambda x, _: x.permute(0, 3, 1, 2),
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        # Hidden states are returned as maps too: (batch, channels, height, width) views.
        as_maps = None if hidden_states is None else tuple(x.permute(0, 3, 1, 2) for x in hidden_states)
        return maps, as_maps, attentions

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """Stage 0 is the embeddings, stage ``p`` the transformer layer ``p - 1`` (with its residual block)."""
        if position == 0:
            return [self.embeddings]
        return [self.encoder.layer[position - 1]]

    def _prune_stages(self, last_stage: int) -> None:
        del self.encoder.layer[last_stage:]
