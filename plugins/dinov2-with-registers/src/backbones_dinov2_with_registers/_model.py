"""DINOv2 with registers: DINOv2's vision transformer with extra learned tokens after the class token.

Paper: Darcet et al., "Vision Transformers Need Registers" (2023), https://arxiv.org/abs/2309.16588.

Built on backbones-dinov2: the backbone is :class:`~backbones_dinov2.Dinov2Backbone` with its own stem (a
subclass of the public :class:`~backbones_dinov2.blocks.Dinov2Embeddings`), so the layers are DINOv2's layers
and the checkpoint keys are DINOv2's, plus ``embeddings.register_tokens``. Two things differ from DINOv2, both
in the stem: the register tokens (no position embedding; placed between the class token and the
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

from backbones_dinov2 import Dinov2Backbone
from backbones_dinov2.blocks import Dinov2Embeddings, embeddings_options

from ._config import Dinov2WithRegistersConfig

__all__ = ["Dinov2WithRegistersBackbone"]


class _RegisterEmbeddings(Dinov2Embeddings):
    """DINOv2's stem with register tokens (key ``register_tokens``) after the class token.

    Registers are appended after the position embeddings are added: they have no position. The position table
    is resampled with antialiasing (bicubic, by target size, in float32).
    """

    antialias = True

    def __init__(self, config: Dinov2WithRegistersConfig) -> None:
        super().__init__(**embeddings_options(config))
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, config.hidden_size))

    def _prefix_tokens(self, batch: int) -> Tensor:
        """The class token with its position, then the registers: ``(batch, 1 + registers, channels)``."""
        prefix = torch.cat((self.cls_token + self.position_embeddings[:, :1], self.register_tokens), dim=1)
        return prefix.expand(batch, -1, -1)


class Dinov2WithRegistersBackbone(Dinov2Backbone):
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

    def _build_embeddings(self) -> Dinov2Embeddings:
        """DINOv2's stem with the register tokens after the class token."""
        return _RegisterEmbeddings(self.config)

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``Dinov2WithRegistersPreTrainedModel`` does
        (as DINOv2's, and the registers start at zero)."""
        super()._init_weights(module)
        if isinstance(module, _RegisterEmbeddings):
            nn.init.zeros_(module.register_tokens)
