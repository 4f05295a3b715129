"""Pixio: a masked-autoencoder vision transformer with several class tokens.

Paper: Yang et al., "In Pursuit of Pixel Supervision for Visual Pre-training" (Meta, 2025); transformers'
model page: https://huggingface.co/docs/transformers/main/en/model_doc/pixio.

Built on the public blocks of backbones-dinov2 (:mod:`backbones_dinov2.blocks`): the patch projection and stem,
the self-attention, the resampling of the position table. What differs from DINOv2: ``n_cls_tokens`` class
tokens (8 in the released checkpoints), each with its own row of the position table; layers without layer
scale, with dropout on both residual branches, whose MLP keys are ViT's (``intermediate.dense``,
``output.dense``).

Checkpoint layout (the names transformers writes to disk): a ``PixioBackbone`` checkpoint holds the trunk
under ``encoder.`` (``encoder.embeddings.*``, ``encoder.encoder.layer.N.*``, and ``encoder.layernorm``, the
trunk's own final norm, which the backbone never runs) and the backbone's ``layernorm``; a ``PixioModel``
checkpoint (the hub's) holds ``embeddings.*``, ``encoder.layer.N.*`` and its final ``layernorm``, which becomes
the feature maps' norm. This module keeps the backbone's layout, so our checkpoints load into transformers'
``PixioBackbone``.

Layout: tokens stay ``(batch, n_cls_tokens + height * width, channels)`` through every layer. A feature map is
the token sequence after the layer norm, without the class tokens, returned as a ``(batch, channels, height,
width)`` view of it (channels-last memory).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.activations import make_activation
from backbones.layers import CheckpointableLayer, drop_path, init_linear_and_norm_, linear
from backbones_dinov2.blocks import (
    Dinov2Attention,
    Dinov2Embeddings,
    Dinov2Encoder,
    PlainViTBackbone,
    embeddings_options,
    resample_position_table,
)

from ._config import PixioConfig

__all__ = ["PixioBackbone"]


class _PixioEmbeddings(Dinov2Embeddings):
    """DINOv2's stem with ``n_cls_tokens`` class tokens (keys ``cls_token`` ``(1, n, C)``, ``position_embeddings``
    ``(1, n + grid * grid, C)``, ``patch_embeddings.projection``).

    Every class token has its own position row. The patch rows are resampled bicubically, without
    antialiasing, for any other patch grid.
    """

    def __init__(self, config: PixioConfig) -> None:
        super().__init__(**embeddings_options(config))
        self.num_class_tokens = count = config.n_cls_tokens
        grid = config.position_grid
        self.cls_token = nn.Parameter(torch.zeros(1, count, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, count + grid * grid, config.hidden_size))

    def _prefix_tokens(self, batch: int) -> Tensor:
        """The class tokens with their positions: ``(batch, n_cls_tokens, channels)``."""
        count = self.num_class_tokens
        return (self.cls_token + self.position_embeddings[:, :count]).expand(batch, -1, -1)

    def _patch_positions(self, height: int, width: int) -> Tensor:
        table = self.position_embeddings[:, self.num_class_tokens :]
        return resample_position_table(table, self.grid, height, width)


class _Dense(nn.Module):
    """Holds one linear layer under the checkpoint's name for it (``intermediate.dense``, ``output.dense``)."""

    def __init__(self, features_in: int, features_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(features_in, features_out)


class _PixioLayer(CheckpointableLayer):
    """One pre-norm transformer layer without layer scale (keys ``norm1``, ``attention``, ``norm2``,
    ``intermediate.dense``, ``output.dense``); dropout on both residual branches. The unit of gradient
    checkpointing and of FSDP sharding."""

    def __init__(self, config: PixioConfig) -> None:
        super().__init__()
        width = config.hidden_size
        hidden = width * config.mlp_ratio
        self.norm1 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.attention = Dinov2Attention.from_config(config)
        self.norm2 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.intermediate = _Dense(width, hidden)
        self.activation = make_activation(config.hidden_act)
        self.output = _Dense(hidden, width)
        self.dropout = config.hidden_dropout_prob
        self.drop_path = config.drop_path_rate

    def _residual(self, branch: Tensor) -> Tensor:
        branch = F.dropout(branch, self.dropout, self.training)
        return drop_path(branch, self.drop_path, self.training)

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """``(B, N, C)`` to ``(B, N, C)``; also the attention probabilities if ``need_weights``."""
        context, weights = self.attention(self.norm1(x), need_weights)
        x = x + self._residual(context)
        branch = linear(linear(self.norm2(x), self.intermediate.dense, self.activation), self.output.dense)
        return x + self._residual(branch), weights


class _Trunk(nn.Module):
    """The stem and the layers (keys ``embeddings``, ``encoder.layer.N``): transformers' ``PixioModel`` without
    its final norm."""

    def __init__(self, config: PixioConfig) -> None:
        super().__init__()
        self.embeddings = _PixioEmbeddings(config)
        self.encoder = Dinov2Encoder(_PixioLayer(config) for _ in range(config.num_hidden_layers))


class PixioBackbone(PlainViTBackbone):
    """Pixio feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the embeddings) and ``stage1..stageN`` (the transformer layers), all of stride
    ``patch_size``. A feature map is the stage's tokens through ``layernorm`` (if ``apply_layernorm``), without
    the class tokens, as ``(batch, hidden_size, height // patch_size, width // patch_size)``; if not
    ``reshape_hidden_states`` it is the whole token sequence ``(batch, n_cls_tokens + tokens, hidden_size)``,
    exactly as transformers' ``PixioBackbone``. ``hidden_states`` are the raw token sequences of every stage;
    ``attentions`` hold each run layer's attention probabilities; ``prefix_tokens`` (on request) are the
    ``n_cls_tokens`` class tokens of each selected stage, through the same norm as the map.
    """

    config_class: ClassVar[type[PixioConfig]] = PixioConfig
    config: PixioConfig
    # The trunk's prefix in PixioBackbone checkpoints; a PixioModel checkpoint holds it without one.
    base_model_prefix = "encoder"
    # PixioModel checkpoints: their layers are ``encoder.layer.N``, ours ``encoder.encoder.layer.N``.
    checkpoint_key_renames = ((r"^encoder\.layer\.", "encoder.encoder.layer."),)
    # The trunk's own final norm in PixioBackbone checkpoints: transformers' backbone never runs it (its maps
    # use the backbone's ``layernorm``); without this it could take the place of ``layernorm``.
    ignored_checkpoint_keys = (r"^encoder\.layernorm\.",)
    lora_target_modules = ("query", "key", "value", "output.dense", "intermediate.dense")

    def __init__(self, config: PixioConfig) -> None:
        super().__init__(config)
        self.encoder = _Trunk(config)
        # Only built when the feature maps use it, so that no parameter goes unused.
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.apply_layernorm else None
        self._set_plain_stages(config, num_prefix_tokens=config.n_cls_tokens, reshape_maps=config.reshape_hidden_states)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``PixioPreTrainedModel`` does."""
        std = self.config.initializer_range
        if init_linear_and_norm_(module, std):
            return
        if isinstance(module, _PixioEmbeddings):
            nn.init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            nn.init.trunc_normal_(module.cls_token, mean=0.0, std=std)

    @property
    def token_layers(self) -> nn.ModuleList:
        return self.encoder.encoder.layer

    def _embed(self, pixel_values: Tensor) -> tuple[Tensor, int, int]:
        return self.encoder.embeddings(pixel_values)

    def _stem_modules(self) -> list[nn.Module]:
        return [self.encoder.embeddings]
