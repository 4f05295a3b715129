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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import Backbone
from backbones.activations import make_activation
from backbones.layers import CheckpointableLayer, drop_path

from ._config import Dinov2Config

__all__ = ["Dinov2Backbone"]


def _named(**children: nn.Module) -> nn.Module:
    """A parameterless module that only groups ``children``, to reproduce the checkpoint's key paths."""
    module = nn.Module()
    for name, child in children.items():
        module.add_module(name, child)
    return module


class _Embeddings(nn.Module):
    """Stem (keys ``embeddings.*``): patch projection, class token, resampled position embeddings.

    No ``mask_token``: it only replaces masked patches in pre-training, which a backbone never does.
    """

    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        patch = config.patch_size
        self.patch_size = patch
        self.grid = config.position_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = _named(
            projection=nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=patch, stride=patch)
        )
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, config.hidden_size))
        self.dropout = config.hidden_dropout_prob

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, int, int]:
        """Returns the tokens ``(batch, 1 + height * width, channels)`` and the patch grid's height and width."""
        projection: nn.Conv2d = self.patch_embeddings.projection  # type: ignore[assignment]
        if pixel_values.shape[1] != projection.in_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but this DINOv2 expects "
                f"{projection.in_channels} (config.num_channels)"
            )
        patches = projection(pixel_values.to(projection.weight.dtype))
        batch, _, height, width = patches.shape
        table = self.position_embeddings
        # The class token and its position are added before concatenating: one pass fewer over the tokens.
        cls_token = (self.cls_token + table[:, :1]).expand(batch, -1, -1)
        patches = patches.flatten(2).transpose(1, 2) + self._patch_positions(height, width)
        tokens = torch.cat((cls_token, patches), dim=1)
        return F.dropout(tokens, self.dropout, self.training), height, width

    def _patch_positions(self, height: int, width: int) -> Tensor:
        """Position embeddings of a ``height x width`` patch grid, ``(1, height * width, channels)``."""
        table = self.position_embeddings[:, 1:]
        grid = self.grid
        # Bicubic resampling to the table's own size is the identity (the cubic weights at zero offset are
        # exactly 0, 1, 0, 0), so skipping it at the pre-training grid changes no value: it only saves eager
        # time. While compiling or exporting the sizes may be symbolic and comparing them would guard the
        # graph to one size, so there the table is always resampled (as transformers does when tracing).
        if not torch.compiler.is_compiling() and (height, width) == (grid, grid):
            return table
        # As transformers (and the original code): bicubic by target size, no antialiasing, computed in
        # float32 because bicubic resampling in half precision visibly shifts the embeddings.
        channels = table.shape[-1]
        square = table.reshape(1, grid, grid, channels).permute(0, 3, 1, 2)
        resized = F.interpolate(square.float(), size=(height, width), mode="bicubic", align_corners=False)
        return resized.to(table.dtype).permute(0, 2, 3, 1).reshape(1, height * width, channels)


class _SelfAttention(nn.Module):
    """Multi-head self-attention over all tokens (keys ``attention.attention.{query,key,value}``)."""

    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.dropout = config.attention_probs_dropout_prob
        self.query = nn.Linear(width, width, bias=config.qkv_bias)
        self.key = nn.Linear(width, width, bias=config.qkv_bias)
        self.value = nn.Linear(width, width, bias=config.qkv_bias)

    def forward(self, tokens: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Returns the context ``(batch, tokens, channels)`` and, if asked, the attention probabilities
        ``(batch, heads, tokens, tokens)``."""
        batch, length, width = tokens.shape
        heads = (batch, length, self.num_heads, width // self.num_heads)
        query, key, value = (proj(tokens).view(heads).transpose(1, 2) for proj in (self.query, self.key, self.value))
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = torch.matmul(query, key.transpose(-1, -2)) * query.shape[-1] ** -0.5
            weights = F.dropout(scores.softmax(dim=-1), dropout, self.training)
            context = torch.matmul(weights, value)
        else:
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout)
        return context.transpose(1, 2).reshape(batch, length, width), weights


class _LayerScale(nn.Module):
    """Learned per-channel factor on a residual branch (key ``lambda1``)."""

    def __init__(self, width: int, value: float) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((width,), value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.lambda1


class _Mlp(nn.Module):
    """Two-layer MLP (keys ``mlp.fc1``, ``mlp.fc2``)."""

    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        hidden = int(config.hidden_size * config.mlp_ratio)
        self.fc1 = nn.Linear(config.hidden_size, hidden)
        self.activation = make_activation(config.hidden_act)
        self.fc2 = nn.Linear(hidden, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class _SwiGLU(nn.Module):
    """SwiGLU feed-forward network (keys ``mlp.weights_in``, ``mlp.weights_out``).

    ``weights_in`` holds the gate projection's rows first, then the value projection's: one matmul
    computes both, and ``silu(gate) * value`` is projected back by ``weights_out``.
    """

    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        hidden = int(config.hidden_size * config.mlp_ratio)
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8  # two thirds of the MLP width, rounded up to 8
        self.weights_in = nn.Linear(config.hidden_size, 2 * hidden)
        self.weights_out = nn.Linear(hidden, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.weights_in(x).chunk(2, dim=-1)
        return self.weights_out(F.silu(gate) * value)


class _Layer(CheckpointableLayer):
    """One pre-norm transformer layer; each residual branch is layer-scaled (keys ``encoder.layer.N.*``).

    The unit of gradient checkpointing and of FSDP sharding."""

    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        width = config.hidden_size
        self.norm1 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.attention = _named(attention=_SelfAttention(config), output=_named(dense=nn.Linear(width, width)))
        self.layer_scale1 = _LayerScale(width, config.layerscale_value)
        self.norm2 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.mlp = _SwiGLU(config) if config.use_swiglu_ffn else _Mlp(config)
        self.layer_scale2 = _LayerScale(width, config.layerscale_value)
        self.drop_path = config.drop_path_rate  # the same rate in every layer, as transformers

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        context, weights = self.attention.attention(self.norm1(x), need_weights)
        branch = self.layer_scale1(self.attention.output.dense(context))
        x = x + drop_path(branch, self.drop_path, self.training)
        branch = self.layer_scale2(self.mlp(self.norm2(x)))
        return x + drop_path(branch, self.drop_path, self.training), weights


class Dinov2Backbone(Backbone):
    """DINOv2 feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the embeddings) and ``stage1..stageN`` (the transformer layers), all of stride
    ``patch_size``. A feature map is the stage's tokens through the final ``layernorm`` (if
    ``apply_layernorm``), without the class token, as ``(batch, hidden_size, height // patch_size,
    width // patch_size)`` (if ``reshape_hidden_states``), exactly as transformers' ``Dinov2Backbone``.
    ``hidden_states`` are the raw token sequences ``(batch, 1 + tokens, hidden_size)`` of every stage;
    ``attentions`` hold each run layer's attention probabilities.
    """

    config_class = Dinov2Config
    base_model_prefix = "dinov2"  # trunk prefix in Dinov2ForImageClassification checkpoints
    has_attentions = True
    reference_class_name = "Dinov2Backbone"

    def __init__(self, config: Dinov2Config) -> None:
        super().__init__(config)
        self.embeddings = _Embeddings(config)
        self.encoder = _named(layer=nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers)))
        # Only built when the feature maps use it, so that no parameter goes unused.
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.apply_layernorm else None
        self.reshape_hidden_states = config.reshape_hidden_states
        stages = config.num_hidden_layers + 1
        self.num_features = [config.hidden_size] * stages
        self.reductions = [config.patch_size] * stages
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``Dinov2PreTrainedModel`` does."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, _Embeddings):
            nn.init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            nn.init.trunc_normal_(module.cls_token, mean=0.0, std=std)
        elif isinstance(module, _LayerScale):
            nn.init.constant_(module.lambda1, self.config.layerscale_value)

    def _feature_map(self, tokens: Tensor, height: int, width: int) -> Tensor:
        if self.layernorm is not None:
            tokens = self.layernorm(tokens)
        if not self.reshape_hidden_states:
            return tokens
        # Splitting the token axis of the class-token-free slice is a view: no copy.
        return tokens[:, 1:].reshape(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2)

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
        """Stage 0 is the embeddings, stage ``p`` the transformer layer ``p - 1``; the final layer norm
        only forms feature maps, so it belongs to no stage (and stays trainable)."""
        if position == 0:
            return [self.embeddings]
        return [self.encoder.layer[position - 1]]

    def _prune_stages(self, last_stage: int) -> None:
        del self.encoder.layer[last_stage:]
