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

from typing import ClassVar

from torch import nn

from ._config import Dinov2Config
from .blocks import (
    Dinov2Embeddings,
    Dinov2Encoder,
    Dinov2Layer,
    PlainViTBackbone,
    embeddings_options,
    init_dinov2_weights_,
)

__all__ = ["Dinov2Backbone"]


class Dinov2Backbone(PlainViTBackbone):
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

    def __init__(self, config: Dinov2Config) -> None:
        super().__init__(config)
        self.embeddings = self._build_embeddings()
        self.encoder = Dinov2Encoder(Dinov2Layer.from_config(config) for _ in range(config.num_hidden_layers))
        # Only built when the feature maps use it, so that no parameter goes unused.
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.apply_layernorm else None
        self._set_plain_stages(
            config, num_prefix_tokens=config.num_prefix_tokens, reshape_maps=config.reshape_hidden_states
        )
        self.post_init()

    def _build_embeddings(self) -> Dinov2Embeddings:
        """The stem of ``self.config``; a subclass whose stem adds tokens (e.g. registers) builds its own."""
        return Dinov2Embeddings(**embeddings_options(self.config))

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``Dinov2PreTrainedModel`` does."""
        init_dinov2_weights_(module, self.config.initializer_range, self.config.layerscale_value)
