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
from torch import Tensor, nn

from backbones_dinov2.blocks import (
    Dinov2Embeddings,
    Dinov2Encoder,
    Dinov2Layer,
    PlainViTBackbone,
    init_dinov2_weights_,
)

from ._config import Dinov2WithRegistersConfig

__all__ = ["Dinov2WithRegistersBackbone"]


class _RegisterEmbeddings(Dinov2Embeddings):
    """DINOv2's stem with register tokens (key ``register_tokens``) after the class token.

    Registers are appended after the position embeddings are added: they have no position. The position table
    is resampled with antialiasing (bicubic, by target size, in float32).
    """

    antialias = True

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


class Dinov2WithRegistersBackbone(PlainViTBackbone):
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
    lora_target_modules = ("query", "key", "value", "output.dense", "fc1", "fc2", "weights_in", "weights_out")
    config: Dinov2WithRegistersConfig
    # Trunk prefix in Dinov2WithRegistersForImageClassification checkpoints.
    base_model_prefix = "dinov2_with_registers"
    has_attentions = True
    reference_class_name = "Dinov2WithRegistersBackbone"

    def __init__(self, config: Dinov2WithRegistersConfig) -> None:
        super().__init__(config)
        self.embeddings = _RegisterEmbeddings(config)
        self.encoder = Dinov2Encoder(Dinov2Layer.from_config(config) for _ in range(config.num_hidden_layers))
        # Only built when the feature maps use it, so that no parameter goes unused.
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.apply_layernorm else None
        # The prefix: the class token, then the registers.
        self._set_plain_stages(
            config, num_prefix_tokens=config.num_prefix_tokens, reshape_maps=config.reshape_hidden_states
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``Dinov2WithRegistersPreTrainedModel`` does
        (registers start at zero)."""
        init_dinov2_weights_(module, self.config.initializer_range, self.config.layerscale_value)
        if isinstance(module, _RegisterEmbeddings):
            nn.init.zeros_(module.register_tokens)
