"""Sapiens2 backbone: a plain vision transformer for human-centric vision whose layers are the stages.

Paper: Khirodkar et al., "Sapiens2" (Meta, 2026), https://arxiv.org/abs/2604.21681 (the successor of "Sapiens:
Foundation for Human Vision Models", https://arxiv.org/abs/2408.12569); code: https://github.com/facebookresearch/sapiens2.

Module attribute names are the checkpoint's key names as transformers writes them to disk and the hub holds them,
which are the original Sapiens2 code's (``cls_token``, ``storage_tokens``, ``patch_embed.projection``,
``blocks.N.attn.wq``, ``blocks.N.attn.gamma``, ``blocks.N.ffn.w12``, ``ln1``): transformers renames them to its
own names (``embeddings.cls_token``, ``model.layer.N.attention.q_proj``, ...) in memory only, and splits the fused
``ffn.w12`` into ``mlp.gate_proj`` and ``mlp.up_proj``. Task checkpoints (``Sapiens2ForPoseEstimation``,
``...ForSemanticSegmentation``, ...) hold the trunk under ``backbone.`` (``base_model_prefix``).

Layout: tokens stay ``(batch, prefix + height * width, channels)`` through every layer, the prefix being the class
token and then the register ("storage") tokens. Positions are DINOv3's 2-D rotary embeddings, the public block of
backbones-dinov3-vit: every attention layer RMS-normalises each head's queries and keys and then rotates those of
the patch tokens by angles proportional to their patch centre's coordinates. Layers are pre-norm with RMS norms and
a layer scale on the attention branch only; some middle layers use grouped-query attention (fewer key/value heads).
A feature map is the patch tokens after the final RMS norm (``ln1``), as a ``(batch, channels, height, width)`` view.

DINOv2's and DINOv3's other blocks do not fit these checkpoints: their norms are layer norms, their layer scale is
``lambda1`` on both branches (here ``attn.gamma.weight``, attention only) and their projections have other keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.activations import make_activation
from backbones.layers import CheckpointableLayer, attend, check_pixel_channels, drop_path, init_linear_and_norm_
from backbones_dinov2.blocks import LayerScale
from backbones_dinov3_vit.blocks import RotaryPositions, RotaryViTBackbone, Rotation, rotate

from ._config import Sapiens2Config

__all__ = ["Sapiens2Backbone"]


class _RMSNorm(nn.Module):
    """Root-mean-square norm over the last axis with a learned scale (key ``weight``).

    Normalised in float32 and cast back before the scale, as transformers and the original code do."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        wide = x.float()
        normalised = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normalised.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class _LayerScale(LayerScale):
    """DINOv2's layer scale on the attention branch, its factors under the key ``weight`` (``attn.gamma.weight``)."""

    factor_key = "weight"


class _PatchEmbed(nn.Module):
    """Non-overlapping patch projection (key ``patch_embed.projection``)."""

    def __init__(self, config: Sapiens2Config) -> None:
        super().__init__()
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: Tensor) -> Tensor:
        projection = self.projection
        check_pixel_channels(pixel_values, projection.in_channels, "Sapiens2")
        return projection(pixel_values.to(projection.weight.dtype))


class _PrefixTokens(nn.Module):
    """A view of the backbone's class and register tokens as one module, so that freezing the stem freezes them.

    The tokens are parameters of the backbone itself (their checkpoint keys, ``cls_token`` and ``storage_tokens``,
    have no module prefix); this module is built on demand and never registered, so it adds no key."""

    def __init__(self, cls_token: nn.Parameter, storage_tokens: nn.Parameter) -> None:
        super().__init__()
        self.cls_token = cls_token
        self.storage_tokens = storage_tokens


class _Attention(nn.Module):
    """Self-attention with query/key RMS norms, rotary positions, grouped key/value heads and the branch's layer
    scale (keys ``attn.{wq,wk,wv,proj,q_norm,k_norm,gamma}``)."""

    def __init__(self, config: Sapiens2Config, key_value_heads: int) -> None:
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_width = width // self.num_heads
        self.num_key_value_heads = key_value_heads
        self.dropout = config.attention_dropout
        self.wq = nn.Linear(width, width, bias=config.query_bias)
        self.wk = nn.Linear(width, key_value_heads * self.head_width, bias=config.key_bias)
        self.wv = nn.Linear(width, key_value_heads * self.head_width, bias=config.value_bias)
        self.proj = nn.Linear(width, width, bias=config.proj_bias)
        norm = config.use_qk_norm
        self.q_norm = _RMSNorm(self.head_width, config.rms_norm_eps) if norm else nn.Identity()
        self.k_norm = _RMSNorm(self.head_width, config.rms_norm_eps) if norm else nn.Identity()
        self.gamma = _LayerScale(width, config.layerscale_value)

    def _heads(self, x: Tensor, heads: int) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, heads, self.head_width).transpose(1, 2)

    def forward(self, tokens: Tensor, rotation: Rotation, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Returns the layer-scaled context ``(batch, tokens, channels)`` and, if asked, the attention
        probabilities ``(batch, heads, tokens, tokens)``."""
        batch, length, width = tokens.shape
        query = rotate(self.q_norm(self._heads(self.wq(tokens), self.num_heads)), rotation)
        key = rotate(self.k_norm(self._heads(self.wk(tokens), self.num_key_value_heads)), rotation)
        value = self._heads(self.wv(tokens), self.num_key_value_heads)
        group = self.num_heads // self.num_key_value_heads
        if group > 1:
            # Key/value head g serves query heads g * group ... (g + 1) * group - 1.
            key = key.repeat_interleave(group, dim=1)
            value = value.repeat_interleave(group, dim=1)
        context, weights = attend(
            query, key, value, dropout=self.dropout, training=self.training, need_weights=need_weights
        )
        return self.gamma(self.proj(context.transpose(1, 2).reshape(batch, length, width))), weights


class _FeedForward(nn.Module):
    """Feed-forward network (keys ``ffn.w12``, ``ffn.w3``).

    Gated, ``w12`` holds the gate projection's rows first, then the up projection's (one matmul computes both) and
    the network is ``w3(act(gate) * up)``; plain, ``w12`` is the up projection alone and it is ``w3(act(w12(x)))``.
    """

    def __init__(self, config: Sapiens2Config) -> None:
        super().__init__()
        self.gated = config.use_gated_mlp
        hidden = config.intermediate_size
        self.w12 = nn.Linear(config.hidden_size, 2 * hidden if self.gated else hidden, bias=config.mlp_bias)
        self.act_fn = make_activation(config.hidden_act)
        self.w3 = nn.Linear(hidden, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        if not self.gated:
            return self.w3(self.act_fn(self.w12(x)))
        if type(self.w12) is nn.Linear:
            # Two matmuls on views of the weight's halves: on CPU, one twice as wide is about 12% slower.
            hidden = self.w3.in_features
            weight, bias = self.w12.weight, self.w12.bias
            gate = F.linear(x, weight[:hidden], None if bias is None else bias[:hidden])
            up = F.linear(x, weight[hidden:], None if bias is None else bias[hidden:])
        else:  # a wrapped module (peft's LoRA, FSDP): its own forward
            gate, up = self.w12(x).chunk(2, dim=-1)
        return self.w3(self.act_fn(gate) * up)


class _Block(CheckpointableLayer):
    """One pre-norm transformer layer (keys ``blocks.N.{ln1,attn,ln2,ffn}``); the unit of gradient checkpointing
    and of FSDP sharding."""

    def __init__(self, config: Sapiens2Config, key_value_heads: int) -> None:
        super().__init__()
        self.ln1 = _RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = _Attention(config, key_value_heads)
        self.ln2 = _RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.ffn = _FeedForward(config)
        self.drop_path = config.drop_path_rate  # the same rate in every layer, as transformers

    def forward(self, x: Tensor, rotation: Rotation, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        context, weights = self.attn(self.ln1(x), rotation, need_weights)
        x = x + drop_path(context, self.drop_path, self.training)
        return x + drop_path(self.ffn(self.ln2(x)), self.drop_path, self.training), weights


class Sapiens2Backbone(RotaryViTBackbone):
    """Sapiens2 feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the embeddings) and ``stage1..stageN`` (the transformer layers), all of stride
    ``patch_size``. A feature map is the stage's patch tokens (class and register tokens dropped), through the
    final RMS norm ``ln1`` if ``normalize_backbone_outputs``, as ``(batch, hidden_size, height // patch_size,
    width // patch_size)`` (if ``reshape_hidden_states``), exactly as transformers' ``Sapiens2Backbone``.
    ``hidden_states`` are the raw token sequences ``(batch, prefix + tokens, hidden_size)`` of every stage;
    ``attentions`` hold each run layer's attention probabilities. ``output_prefix_tokens=True`` adds each selected
    stage's class and register tokens, normalised as its map (the class token is transformers' ``cls_tokens``).
    """

    config_class = Sapiens2Config
    lora_target_modules = ("wq", "wk", "wv", "proj", "w12", "w3")
    config: Sapiens2Config
    # Sapiens2For{PoseEstimation,SemanticSegmentation,...} files hold the trunk under ``backbone.``.
    base_model_prefix = "backbone"

    def __init__(self, config: Sapiens2Config) -> None:
        super().__init__(config)
        width = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.storage_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, width))
        self.patch_embed = _PatchEmbed(config)
        self.rope_embeddings = RotaryPositions(config)
        self.blocks = nn.ModuleList(_Block(config, heads) for heads in config.key_value_heads)
        self.ln1 = _RMSNorm(width, config.rms_norm_eps)
        # The prefix: the class token, then the register ("storage") tokens.
        self._set_plain_stages(
            config, num_prefix_tokens=config.num_prefix_tokens, reshape_maps=config.reshape_hidden_states
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``Sapiens2PreTrainedModel`` does."""
        std = self.config.initializer_range
        if init_linear_and_norm_(module, std, truncated=True):
            return
        if isinstance(module, Sapiens2Backbone):
            nn.init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            nn.init.trunc_normal_(module.storage_tokens, mean=0.0, std=std)
        elif isinstance(module, _LayerScale):
            nn.init.constant_(module.factor, self.config.layerscale_value)
        elif isinstance(module, _RMSNorm):
            nn.init.ones_(module.weight)

    def _embed(self, pixel_values: Tensor) -> tuple[Tensor, int, int]:
        """The stem's tokens ``(batch, prefix + height * width, channels)`` and the patch grid's size."""
        patches = self.patch_embed(pixel_values)
        batch, _, height, width = patches.shape
        prefix = torch.cat((self.cls_token, self.storage_tokens), dim=1).to(patches.dtype).expand(batch, -1, -1)
        return torch.cat((prefix, patches.flatten(2).transpose(1, 2)), dim=1), height, width

    @property
    def token_layers(self) -> nn.ModuleList:
        return self.blocks

    def _map_norm(self, position: int) -> nn.Module | None:
        return self.ln1 if self.config.normalize_backbone_outputs else None

    def _stem_modules(self) -> list[nn.Module]:
        """The patch projection and the class and register tokens."""
        tokens = _PrefixTokens(self.cls_token, self.storage_tokens)
        # Built afresh on every call: its mode is the stem's (evaluation once the stem is frozen).
        return [self.patch_embed, tokens.train(self.training and not self.frozen_stages)]
