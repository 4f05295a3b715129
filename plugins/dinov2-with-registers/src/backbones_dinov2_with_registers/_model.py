"""DINOv2 with registers: DINOv2's vision transformer with extra learned tokens after the class token.

Paper: Darcet et al., "Vision Transformers Need Registers" (2023), https://arxiv.org/abs/2309.16588.

Built on the public blocks of backbones-dinov2 (:mod:`backbones_dinov2.blocks`): the layers are DINOv2's
layers and the checkpoint keys are DINOv2's, plus ``embeddings.register_tokens``. Two things differ from
DINOv2, both in the stem: the register tokens (no position embedding; placed between the class token and the
patches), and the resampling of the position table, which is antialiased here (as transformers' and the
original code's registers models do), where DINOv2's is not.

Layout: tokens stay ``(batch, 1 + registers + height * width, channels)`` through every layer. A feature map
is the token sequence after the final layer norm, without the class and register tokens, returned as a
``(batch, channels, height, width)`` view of it (channels-last memory).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import Backbone
from backbones_dinov2.blocks import Dinov2Embeddings, Dinov2Layer, LayerScale

from ._config import Dinov2WithRegistersConfig

__all__ = ["Dinov2WithRegistersBackbone"]


class _RegisterEmbeddings(Dinov2Embeddings):
    """DINOv2's stem with register tokens (key ``register_tokens``) after the class token.

    Registers are appended after the position embeddings are added: they have no position. The position table
    is resampled with antialiasing (bicubic, by target size, in float32).
    """

    def __init__(self, config: Dinov2WithRegistersConfig) -> None:
        super().__init__(
            config.num_channels,
            config.hidden_size,
            config.patch_size,
            config.position_grid,
            dropout=config.hidden_dropout_prob,
        )
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, config.hidden_size))

    def _prefix_tokens(self, batch: int) -> Tensor:
        """The class token with its position, then the registers: ``(batch, 1 + registers, channels)``."""
        prefix = torch.cat((self.cls_token + self.position_embeddings[:, :1], self.register_tokens), dim=1)
        return prefix.expand(batch, -1, -1)

    def _patch_positions(self, height: int, width: int) -> Tensor:
        """Position embeddings of a ``height x width`` patch grid, ``(1, height * width, channels)``."""
        table = self.position_embeddings[:, 1:]
        grid = self.grid
        # Antialiased bicubic resampling to the table's own size is the identity too: skipped in eager mode
        # only, since comparing symbolic sizes while tracing would specialise the graph to one size.
        if not torch.compiler.is_compiling() and (height, width) == (grid, grid):
            return table
        channels = table.shape[-1]
        square = table.reshape(1, grid, grid, channels).permute(0, 3, 1, 2)
        resized = F.interpolate(
            square.float(), size=(height, width), mode="bicubic", align_corners=False, antialias=True
        )
        return resized.to(table.dtype).permute(0, 2, 3, 1).reshape(1, height * width, channels)


class _Encoder(nn.Module):
    """Groups the layers under the checkpoint's key path (``encoder.layer.N``)."""

    def __init__(self, layers: list[Dinov2Layer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class Dinov2WithRegistersBackbone(Backbone):
    """DINOv2-with-registers feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the embeddings) and ``stage1..stageN`` (the transformer layers), all of stride
    ``patch_size``. A feature map is the stage's tokens through the final ``layernorm`` (if
    ``apply_layernorm``), without the class and register tokens, as ``(batch, hidden_size,
    height // patch_size, width // patch_size)``; if not ``reshape_hidden_states`` it is the whole token
    sequence ``(batch, 1 + registers + tokens, hidden_size)``, exactly as transformers'
    ``Dinov2WithRegistersBackbone``. ``hidden_states`` are the raw token sequences of every stage;
    ``attentions`` hold each run layer's attention probabilities.
    """

    config_class: ClassVar[type[Dinov2WithRegistersConfig]] = Dinov2WithRegistersConfig
    config: Dinov2WithRegistersConfig
    # Trunk prefix in Dinov2WithRegistersForImageClassification checkpoints.
    base_model_prefix = "dinov2_with_registers"
    has_attentions = True
    reference_class_name = "Dinov2WithRegistersBackbone"

    def __init__(self, config: Dinov2WithRegistersConfig) -> None:
        super().__init__(config)
        self.embeddings = _RegisterEmbeddings(config)
        self.encoder = _Encoder([self._make_layer() for _ in range(config.num_hidden_layers)])
        # Only built when the feature maps use it, so that no parameter goes unused.
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.apply_layernorm else None
        self.num_prefix = config.num_prefix_tokens
        stages = config.num_hidden_layers + 1
        self.num_features = [config.hidden_size] * stages
        self.reductions = [config.patch_size] * stages
        self.post_init()

    def _make_layer(self) -> Dinov2Layer:
        """One transformer layer of ``self.config`` (every layer has the same drop-path rate, as transformers)."""
        config = self.config
        return Dinov2Layer(
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

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``Dinov2WithRegistersPreTrainedModel`` does
        (registers start at zero)."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, _RegisterEmbeddings):
            nn.init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            nn.init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            nn.init.zeros_(module.register_tokens)
        elif isinstance(module, LayerScale):
            nn.init.constant_(module.lambda1, self.config.layerscale_value)

    def _feature_map(self, tokens: Tensor, height: int, width: int) -> Tensor:
        if self.layernorm is not None:
            tokens = self.layernorm(tokens)
        if not self.config.reshape_hidden_states:
            return tokens
        # Splitting the token axis of the prefix-free slice is a view: no copy.
        return tokens[:, self.num_prefix :].reshape(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2)

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        wanted = set(self.out_positions)
        layers = self.encoder.layer
        maps: list[Tensor | None] = [None] * len(self.stage_names)
        hidden_states: list[Tensor] = []
        attentions: list[Tensor] = []
        tokens, height, width = self.embeddings(pixel_values)
        for position in range(last_stage + 1):
            if position:
                tokens, weights = layers[position - 1](tokens, output_attentions)
                if weights is not None:
                    attentions.append(weights)
            if position in wanted:
                maps[position] = self._feature_map(tokens, height, width)
            if output_hidden_states:
                hidden_states.append(tokens)
        return (
            maps,
            tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
        )

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """Stage 0 is the embeddings, stage ``p`` the transformer layer ``p - 1``; the final layer norm only
        forms feature maps, so it belongs to no stage (and stays trainable)."""
        if position == 0:
            return [self.embeddings]
        return [self.encoder.layer[position - 1]]

    def _prune_stages(self, last_stage: int) -> None:
        del self.encoder.layer[last_stage:]
