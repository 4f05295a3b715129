"""DINOv2 backbone: a plain vision transformer whose layers are the stages.

Paper: Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision" (2023),
https://arxiv.org/abs/2304.07193.

Module attribute names are the checkpoint's key names in the format transformers writes to disk and the
hub holds (``encoder.layer.N.attention.attention.query.weight``, ``attention.output.dense``,
``mlp.weights_in`` for SwiGLU). transformers 5 renames them in memory (``q_proj``, ``gate_proj`` and
``up_proj`` split from ``weights_in``) but writes these names back on save, so matching the files keeps
both directions compatible without a key map.

Layout: tokens stay ``(batch, 1 + height * width, channels)`` (class token first) through every layer.
A feature map is the token sequence after the final layer norm, without the class token, returned as a
``(batch, channels, height, width)`` view of it (channels-last memory), so no stage pays for a copy.

The modules are the public blocks of :mod:`backbones_dinov2.blocks`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from torch import Tensor, nn

from backbones import Backbone
from backbones.layers import init_linear_and_norm_, run_token_layers

from ._config import Dinov2Config
from .blocks import Dinov2Embeddings, Dinov2Layer, LayerScale, tokens_to_map

__all__ = ["Dinov2Backbone"]


class _Encoder(nn.Module):
    """The transformer layers under the checkpoint's ``encoder.layer`` keys; the backbone runs them."""

    def __init__(self, layers: Iterable[Dinov2Layer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class Dinov2Backbone(Backbone):
    """DINOv2 feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the embeddings) and ``stage1..stageN`` (the transformer layers), all of stride
    ``patch_size``. A feature map is the stage's tokens through the final ``layernorm`` (if
    ``apply_layernorm``), without the class token, as ``(batch, hidden_size, height // patch_size,
    width // patch_size)`` (if ``reshape_hidden_states``), exactly as transformers' ``Dinov2Backbone``.
    ``hidden_states`` are the raw token sequences ``(batch, 1 + tokens, hidden_size)`` of every stage;
    ``attentions`` hold each run layer's attention probabilities. With ``output_prefix_tokens=True``,
    ``prefix_tokens`` hold each requested stage's class token ``(batch, 1, hidden_size)``, through the
    final ``layernorm`` as the map is.
    """

    config_class: ClassVar[type[Dinov2Config]] = Dinov2Config
    lora_target_modules = ("query", "key", "value", "output.dense", "fc1", "fc2", "weights_in", "weights_out")
    config: Dinov2Config
    base_model_prefix = "dinov2"  # trunk prefix in Dinov2ForImageClassification checkpoints
    has_attentions = True
    reference_class_name = "Dinov2Backbone"

    def __init__(self, config: Dinov2Config) -> None:
        super().__init__(config)
        self.embeddings = Dinov2Embeddings(
            config.num_channels,
            config.hidden_size,
            config.patch_size,
            config.position_grid,
            dropout=config.hidden_dropout_prob,
        )
        self.encoder = _Encoder(self._make_layer() for _ in range(config.num_hidden_layers))
        # Only built when the feature maps use it, so that no parameter goes unused.
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.apply_layernorm else None
        self.reshape_hidden_states = config.reshape_hidden_states
        self.num_prefix_tokens = 1  # the class token
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
        """Initialise ``module``'s own parameters as transformers' ``Dinov2PreTrainedModel`` does."""
        std = self.config.initializer_range
        if init_linear_and_norm_(module, std, truncated=True):
            return
        if isinstance(module, Dinov2Embeddings):
            nn.init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            nn.init.trunc_normal_(module.cls_token, mean=0.0, std=std)
        elif isinstance(module, LayerScale):
            nn.init.constant_(module.lambda1, self.config.layerscale_value)

    def _feature_map(self, tokens: Tensor, height: int, width: int, with_prefix: bool = False) -> Any:
        """The stage's feature map; ``with_prefix``: and its prefix tokens, both through the final layer norm."""
        if self.layernorm is not None:
            tokens = self.layernorm(tokens)
        return tokens_to_map(
            tokens, self.num_prefix_tokens, height, width, reshape=self.reshape_hidden_states, with_prefix=with_prefix
        )

    def _forward_features(
        self,
        pixel_values: Tensor,
        *,
        last_stage: int,
        output_hidden_states: bool,
        output_attentions: bool,
        output_prefix_tokens: bool = False,
    ) -> tuple[Any, ...]:
        tokens, height, width = self.embeddings(pixel_values)
        return run_token_layers(
            tokens,
            self.encoder.layer,
            last_stage=last_stage,
            out_positions=set(self.out_positions),
            num_stages=len(self.stage_names),
            feature_map=lambda stage_tokens, _: self._feature_map(stage_tokens, height, width, output_prefix_tokens),
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            output_prefix_tokens=output_prefix_tokens,
        )

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """Stage 0 is the embeddings, stage ``p`` the transformer layer ``p - 1``; the final layer norm
        only forms feature maps, so it belongs to no stage (and stays trainable)."""
        if position == 0:
            return [self.embeddings]
        return [self.encoder.layer[position - 1]]

    def _prune_stages(self, last_stage: int) -> None:
        del self.encoder.layer[last_stage:]
