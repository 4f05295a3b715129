"""DINOv3 ViT backbone: a plain vision transformer with 2-D rotary positions, whose layers are the stages.

Paper: Siméoni et al., "DINOv3" (2025), https://arxiv.org/abs/2508.10104.

Module attribute names are the checkpoint's key names as transformers writes them to disk and the hub
holds them (``embeddings.cls_token``, ``layer.N.attention.q_proj``, ``layer.N.mlp.gate_proj``,
``norm``). transformers 5 moves the layers under ``model.`` in memory and back on save; a checkpoint
written from its in-memory state dict (``model.layer.N...``) is accepted too.

Layout: tokens stay ``(batch, prefix + height * width, channels)`` through every layer, the prefix being
the class token and then the register tokens. Positions are not added to the tokens: every attention
layer rotates the queries and keys of the patch tokens by angles proportional to their patch centre's
coordinates (normalised to ``[-1, 1]`` per axis), half of each head's channels for the vertical axis and
half for the horizontal one. The prefix tokens are not rotated. A feature map is the patch tokens after
the final norm, returned as a ``(batch, channels, height, width)`` view (channels-last memory).

The layer is backbones-dinov2's public :class:`~backbones_dinov2.blocks.LayerScaledLayer` (same keys, the layer
scale's ``lambda1`` included) around DINOv3's attention and MLP. DINOv2's other blocks do not fit DINOv3's
checkpoints: its attention keys are ``attention.attention.query`` (here ``attention.q_proj``)
and its SwiGLU holds the gate and value projections in one ``weights_in`` (here ``gate_proj`` and
``up_proj``, with a configurable activation and width).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.activations import make_activation
from backbones.layers import attend, check_pixel_channels, linear
from backbones_dinov2.blocks import LayerScaledLayer, PlainViTBackbone, init_dinov2_weights_

from ._config import Dinov3ViTConfig

__all__ = ["Dinov3ViTBackbone"]

Rotation = tuple[Tensor, Tensor]
"""Cosines and sines of the rotary angles, each ``(prefix + height * width, head_width)``."""


class _Embeddings(nn.Module):
    """Stem (keys ``embeddings.*``): patch projection, then the class and register tokens in front.

    No ``mask_token``: it only replaces masked patches in pre-training, which a backbone never does.
    """

    def __init__(self, config: Dinov3ViTConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, width))
        self.patch_embeddings = nn.Conv2d(
            config.num_channels, width, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, int, int]:
        """Returns the tokens ``(batch, prefix + height * width, channels)`` and the patch grid's size."""
        projection = self.patch_embeddings
        check_pixel_channels(pixel_values, projection.in_channels, "DINOv3 ViT")
        patches = projection(pixel_values.to(projection.weight.dtype))
        batch, _, height, width = patches.shape
        prefix = torch.cat((self.cls_token, self.register_tokens), dim=1).expand(batch, -1, -1)
        return torch.cat((prefix, patches.flatten(2).transpose(1, 2)), dim=1), height, width


class _RotaryPositions(nn.Module):
    """2-D rotary angles of a patch grid, with DINOv3's train-time coordinate augmentations.

    Each head's channels form ``head_width / 2`` rotation pairs ``(i, i + head_width / 2)``: the first
    quarter of the frequencies turns with the vertical coordinate, the second with the horizontal one.
    Frequencies are ``rope_theta ** -(4k / head_width)``; an angle is ``2 pi * coordinate * frequency``.
    Parameterless: the frequencies are recomputed in float32 on every call (a few flops), so casting the
    model to another dtype or building it on the meta device leaves them exact.
    """

    def __init__(self, config: Dinov3ViTConfig) -> None:
        super().__init__()
        self.head_width = config.hidden_size // config.num_attention_heads
        self.theta = config.rope_theta
        self.num_prefix = config.num_prefix_tokens
        self.shift = config.pos_embed_shift
        self.jitter = config.pos_embed_jitter
        self.rescale = config.pos_embed_rescale

    def _augment(self, coords: Tensor) -> Tensor:
        """Random shift, per-axis jitter and overall rescale of the coordinates (one draw per forward,
        from torch's global generator: ``torch.manual_seed`` makes a training step reproducible)."""
        if self.shift is not None:
            coords = coords + torch.empty(1, 2, device=coords.device).uniform_(-self.shift, self.shift)
        if self.jitter is not None:
            bound = math.log(self.jitter)
            coords = coords * torch.empty(1, 2, device=coords.device).uniform_(-bound, bound).exp()
        if self.rescale is not None:
            bound = math.log(self.rescale)
            coords = coords * torch.empty(1, device=coords.device).uniform_(-bound, bound).exp()
        return coords

    def forward(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> Rotation:
        """Cosines and sines for the prefix tokens (angle 0) and a ``height x width`` grid of patches."""
        rows = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        cols = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)
        coords = grid * 2.0 - 1.0  # patch centres in [-1, 1], (height * width, 2) as (y, x)
        if self.training:
            coords = self._augment(coords)
        quarter = self.head_width // 4
        exponents = torch.arange(quarter, device=device, dtype=torch.float32) * (4.0 / self.head_width)
        frequencies = self.theta**-exponents
        angles = (2 * math.pi) * coords[:, :, None] * frequencies  # (patches, 2, quarter)
        angles = angles.flatten(1).repeat(1, 2)  # both members of a pair turn by the same angle
        # Prefix tokens get angle 0 (cos 1, sin 0): the rotation leaves them exactly as they are, so one
        # elementwise expression serves the whole sequence without splitting it in every layer.
        cos = F.pad(angles.cos(), (0, 0, self.num_prefix, 0), value=1.0)
        sin = F.pad(angles.sin(), (0, 0, self.num_prefix, 0), value=0.0)
        return cos.to(dtype), sin.to(dtype)


def _rotate(x: Tensor, rotation: Rotation) -> Tensor:
    """Rotate each channel pair ``(i, i + half)`` of ``x`` (``(..., tokens, head_width)``) by its angle."""
    cos, sin = rotation
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class _Attention(nn.Module):
    """Multi-head self-attention with rotary queries and keys (keys ``attention.{q,k,v,o}_proj``)."""

    def __init__(self, config: Dinov3ViTConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(width, width, bias=config.query_bias)
        self.k_proj = nn.Linear(width, width, bias=config.key_bias)
        self.v_proj = nn.Linear(width, width, bias=config.value_bias)
        self.o_proj = nn.Linear(width, width, bias=config.proj_bias)

    def forward(self, tokens: Tensor, rotation: Rotation, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Returns the projected context ``(batch, tokens, channels)`` and, if asked, the attention
        probabilities ``(batch, heads, tokens, tokens)``."""
        batch, length, width = tokens.shape
        heads = (batch, length, self.num_heads, width // self.num_heads)
        query = _rotate(linear(tokens, self.q_proj).view(heads).transpose(1, 2), rotation)
        key = _rotate(linear(tokens, self.k_proj).view(heads).transpose(1, 2), rotation)
        value = linear(tokens, self.v_proj).view(heads).transpose(1, 2)
        context, weights = attend(
            query, key, value, dropout=self.dropout, training=self.training, need_weights=need_weights
        )
        return linear(context.transpose(1, 2).reshape(batch, length, width), self.o_proj), weights


class _Mlp(nn.Module):
    """Two-layer feed-forward network (keys ``mlp.up_proj``, ``mlp.down_proj``)."""

    def __init__(self, config: Dinov3ViTConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.act_fn = make_activation(config.hidden_act)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        return linear(linear(x, self.up_proj, self.act_fn), self.down_proj)


class _GatedMlp(nn.Module):
    """Gated feed-forward network, ``down(act(gate(x)) * up(x))`` (keys ``mlp.{gate,up,down}_proj``)."""

    def __init__(self, config: Dinov3ViTConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.act_fn = make_activation(config.hidden_act)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        return linear(linear(x, self.gate_proj, self.act_fn) * linear(x, self.up_proj), self.down_proj)


class _Layer(LayerScaledLayer):
    """DINOv2's layer-scaled pre-norm layer (keys ``layer.N.*``) around the rotary attention and DINOv3's MLP;
    called as ``layer(tokens, rotation, need_weights)``."""

    def __init__(self, config: Dinov3ViTConfig) -> None:
        super().__init__(
            config.hidden_size,
            _Attention(config),
            _GatedMlp(config) if config.use_gated_mlp else _Mlp(config),
            layer_norm_eps=config.layer_norm_eps,
            layerscale_value=config.layerscale_value,
            drop_path=config.drop_path_rate,  # the same rate in every layer, as transformers
        )


class RotaryViTBackbone(PlainViTBackbone):
    """Base of a plain vision transformer whose positions are 2-D rotary embeddings (DINOv3 ViT, Sapiens2).

    A subclass builds ``rope_embeddings`` (DINOv3's rotary positions); every layer is called as
    ``layer(tokens, rotation, need_weights)`` with the rotation of the input's patch grid. Without
    ``reshape_maps`` a feature map is the patch tokens only (the prefix tokens dropped), as transformers'
    DINOv3 and Sapiens2 backbones return them.
    """

    sequence_maps_keep_prefix = False
    rope_embeddings: _RotaryPositions

    def _layer_inputs(self, tokens: Tensor, height: int, width: int) -> tuple[Any, ...]:
        """Every layer takes the rotary positions of the patch grid."""
        return (self.rope_embeddings(height, width, tokens.device, tokens.dtype),)


class Dinov3ViTBackbone(RotaryViTBackbone):
    """DINOv3 ViT feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the embeddings) and ``stage1..stageN`` (the transformer layers), all of stride
    ``patch_size``. A feature map is the stage's patch tokens (class and register tokens dropped) through
    the final ``norm`` (always for the last stage; for the others if ``apply_layernorm``), as
    ``(batch, hidden_size, height // patch_size, width // patch_size)`` (if ``reshape_hidden_states``),
    exactly as transformers' ``DINOv3ViTBackbone``. ``hidden_states`` are the raw token sequences
    ``(batch, prefix + tokens, hidden_size)`` of every stage; ``attentions`` hold each run layer's
    attention probabilities.
    """

    config_class = Dinov3ViTConfig
    lora_target_modules = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj")
    config: Dinov3ViTConfig
    reference_class_name = "DINOv3ViTBackbone"
    # A checkpoint saved from transformers' in-memory state dict (not by save_pretrained) nests the layers.
    checkpoint_key_renames = ((r"^model\.layer\.", "layer."),)

    def __init__(self, config: Dinov3ViTConfig) -> None:
        super().__init__(config)
        self.embeddings = _Embeddings(config)
        self.rope_embeddings = _RotaryPositions(config)
        self.layer = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # The prefix: the class token, then the registers.
        self._set_plain_stages(
            config, num_prefix_tokens=config.num_prefix_tokens, reshape_maps=config.reshape_hidden_states
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``DINOv3ViTPreTrainedModel`` does."""
        std = self.config.initializer_range
        if not init_dinov2_weights_(module, std, self.config.layerscale_value) and isinstance(module, _Embeddings):
            nn.init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            nn.init.trunc_normal_(module.register_tokens, mean=0.0, std=std)

    @property
    def token_layers(self) -> nn.ModuleList:
        return self.layer

    def _map_norm(self, position: int) -> nn.Module | None:
        """The final norm: always for the last stage, for the others if ``apply_layernorm``."""
        return self.norm if self.config.apply_layernorm or position == self.config.num_hidden_layers else None
