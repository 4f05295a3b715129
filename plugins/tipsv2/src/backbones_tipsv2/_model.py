"""TIPSv2's vision encoder: a DINOv2-with-registers vision transformer trained on image-text pairs.

Paper: Maninis et al., "TIPS: Text-Image Pretraining with Spatial awareness" (ICLR 2025),
https://arxiv.org/abs/2410.16512 (TIPSv2 is its second release); transformers' model page:
https://huggingface.co/docs/transformers/main/en/model_doc/tipsv2.

The computation is DINOv2 with registers' (pre-norm layers with layer scale, an MLP or a SwiGLU network, a
class token then registers without position) except the resampling of the position table, which is bilinear
with antialiasing here (bicubic there). The layer norms, residual structure and SwiGLU split follow
:mod:`backbones_dinov2.blocks`; the table resampling and the token-to-map step are its public
:func:`~backbones_dinov2.blocks.resample_position_table` and :func:`~backbones_dinov2.blocks.tokens_to_map`.
The layers are this module's own because the checkpoints keep the original code's names, which are not
DINOv2's in transformers: one fused ``attn.qkv`` projection, ``ls1.gamma``, ``mlp.c_fc``/``mlp.c_proj`` (or
``mlp.w12``/``mlp.w3``), and the stem's tensors at the top level (``cls_token``, ``register_tokens``,
``pos_embed``, ``patch_embed.proj``). transformers writes and reads these names for
``Tipsv2VisionBackbone`` and ``Tipsv2VisionModel`` (whose final ``norm`` is the backbone's); ``Tipsv2Model``
holds them under ``vision_encoder.`` beside the text tower.

Layout: tokens stay ``(batch, 1 + registers + height * width, channels)`` through every layer. A feature map
is the token sequence after the final layer norm, without the class and register tokens, returned as a
``(batch, channels, height, width)`` view of it (channels-last memory).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.activations import make_activation
from backbones.layers import CheckpointableLayer, attend, check_pixel_channels, drop_path, init_linear_and_norm_, linear
from backbones_dinov2.blocks import LayerScale, PlainViTBackbone, resample_position_table, swiglu_hidden_features

from ._config import Tipsv2VisionConfig

__all__ = ["Tipsv2VisionBackbone"]


class _PatchEmbed(nn.Module):
    """Non-overlapping patch projection (key ``proj``)."""

    def __init__(self, config: Tipsv2VisionConfig) -> None:
        super().__init__()
        size = config.patch_size
        self.proj = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=size, stride=size)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """``(B, num_channels, H, W)`` to the ``(B, hidden_size, H / patch, W / patch)`` patch grid."""
        check_pixel_channels(pixel_values, self.proj.in_channels, "TIPSv2")
        return self.proj(pixel_values.to(self.proj.weight.dtype))


class _Attention(nn.Module):
    """Multi-head self-attention with one fused projection (keys ``qkv``: query, key then value rows;
    ``proj``)."""

    def __init__(self, config: Tipsv2VisionConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.dropout = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(width, 3 * width, bias=config.qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, tokens: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        batch, length, width = tokens.shape
        qkv = self.qkv(tokens).view(batch, length, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        context, weights = attend(
            query, key, value, dropout=self.dropout, training=self.training, need_weights=need_weights
        )
        return self.proj(context.transpose(1, 2).reshape(batch, length, width)), weights


class _LayerScale(LayerScale):
    """DINOv2's layer scale, its factors under the key ``gamma``."""

    factor_key = "gamma"


class _Mlp(nn.Module):
    """Two-layer MLP (keys ``c_fc``, ``c_proj``)."""

    def __init__(self, config: Tipsv2VisionConfig) -> None:
        super().__init__()
        hidden = int(config.hidden_size * config.mlp_ratio)
        self.c_fc = nn.Linear(config.hidden_size, hidden)
        self.activation = make_activation(config.hidden_act)
        self.c_proj = nn.Linear(hidden, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return linear(linear(x, self.c_fc, self.activation), self.c_proj)


class _SwiGLU(nn.Module):
    """SwiGLU feed-forward network (keys ``w12``: gate rows then value rows; ``w3``), two thirds of the MLP's
    width rounded up to a multiple of 8, as DINOv2's."""

    def __init__(self, config: Tipsv2VisionConfig) -> None:
        super().__init__()
        hidden = swiglu_hidden_features(config.hidden_size, config.mlp_ratio)
        self.w12 = nn.Linear(config.hidden_size, 2 * hidden)
        self.w3 = nn.Linear(hidden, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class _Block(CheckpointableLayer):
    """One pre-norm layer with layer-scaled residual branches (keys ``norm1``, ``attn``, ``ls1``, ``norm2``,
    ``mlp``, ``ls2``). The unit of gradient checkpointing and of FSDP sharding."""

    def __init__(self, config: Tipsv2VisionConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.norm1 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.attn = _Attention(config)
        self.ls1 = _LayerScale(width, config.layerscale_value)
        self.norm2 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.mlp: nn.Module = _SwiGLU(config) if config.use_swiglu_ffn else _Mlp(config)
        self.ls2 = _LayerScale(width, config.layerscale_value)
        self.drop_path = config.drop_path_rate

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """``(B, N, C)`` to ``(B, N, C)``; also the attention probabilities if ``need_weights``."""
        context, weights = self.attn(self.norm1(x), need_weights)
        x = x + drop_path(self.ls1(context), self.drop_path, self.training)
        return x + drop_path(self.ls2(self.mlp(self.norm2(x))), self.drop_path, self.training), weights


class _StemTokens(nn.Module):
    """The stem's learned tokens, which the checkpoint keeps at the top level, as one module for
    :meth:`Backbone.freeze_stages`: it shares the backbone's parameters and is not a child of it (a fresh one is
    made on each request, so it always holds the live parameters). Its training mode is the patch projection's,
    which belongs to the same stage and so is frozen, and put in evaluation mode, with it.
    """

    def __init__(self, mode_of: nn.Module, *parameters: nn.Parameter) -> None:
        super().__init__()
        object.__setattr__(self, "_mode_of", mode_of)  # not a child: its parameters are the backbone's own
        for index, parameter in enumerate(parameters):
            self.register_parameter(f"tensor{index}", parameter)

    @property
    def training(self) -> bool:
        mode_of: nn.Module | None = self.__dict__.get("_mode_of")
        return True if mode_of is None else mode_of.training

    @training.setter
    def training(self, mode: bool) -> None:
        """Ignored: the mode is the patch projection's (see the class docstring)."""


class Tipsv2VisionBackbone(PlainViTBackbone):
    """TIPSv2 vision-encoder feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the embeddings) and ``stage1..stageN`` (the transformer layers), all of stride
    ``patch_size``. A feature map is the stage's tokens through the final ``norm`` (if ``apply_layernorm``),
    without the class and register tokens, as ``(batch, hidden_size, height // patch_size, width //
    patch_size)``; if not ``reshape_hidden_states`` it is the whole token sequence ``(batch, 1 + registers +
    tokens, hidden_size)``, exactly as transformers' ``Tipsv2VisionBackbone``. ``hidden_states`` are the raw
    token sequences of every stage; ``attentions`` hold each run layer's attention probabilities;
    ``prefix_tokens`` (on request) the class token and registers (TIPSv2's two image embeddings) of each
    selected stage, through the same norm as the map.
    """

    config_class: ClassVar[type[Tipsv2VisionConfig]] = Tipsv2VisionConfig
    config: Tipsv2VisionConfig
    # The vision tower's prefix in Tipsv2Model checkpoints (beside ``text_encoder.``).
    base_model_prefix = "vision_encoder"
    lora_target_modules = ("qkv", "attn.proj", "c_fc", "c_proj", "w12", "w3")

    def __init__(self, config: Tipsv2VisionConfig) -> None:
        super().__init__(config)
        width, grid = config.hidden_size, config.position_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, width))
        self.patch_embed = _PatchEmbed(config)
        self.blocks = nn.ModuleList([_Block(config) for _ in range(config.num_hidden_layers)])
        # Only built when the feature maps use it, so that no parameter goes unused.
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps) if config.apply_layernorm else None
        # The prefix: the class token, then the registers (TIPSv2's two image embeddings).
        self._set_plain_stages(
            config, num_prefix_tokens=config.num_prefix_tokens, reshape_maps=config.reshape_hidden_states
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``Tipsv2VisionPreTrainedModel`` does
        (registers start at zero)."""
        std = self.config.initializer_range
        if init_linear_and_norm_(module, std, truncated=True):
            return
        if module is self:
            nn.init.trunc_normal_(self.pos_embed, mean=0.0, std=std)
            nn.init.trunc_normal_(self.cls_token, mean=0.0, std=std)
            nn.init.zeros_(self.register_tokens)
        elif isinstance(module, _LayerScale):
            nn.init.constant_(module.factor, self.config.layerscale_value)

    def _embed(self, pixel_values: Tensor) -> tuple[Tensor, int, int]:
        """The stem: ``(batch, 1 + registers + height * width, channels)`` tokens and the patch grid's size.

        The class token gets the table's first row; the registers get no position; the patch rows are
        resampled bilinearly with antialiasing (by target size, in float32) for any other patch grid.
        """
        patches = self.patch_embed(pixel_values)
        batch, _, height, width = patches.shape
        positions = resample_position_table(
            self.pos_embed[:, 1:], self.config.position_grid, height, width, mode="bilinear", antialias=True
        )
        patches = patches.flatten(2).transpose(1, 2) + positions
        prefix = torch.cat((self.cls_token + self.pos_embed[:, :1], self.register_tokens), dim=1)
        tokens = torch.cat((prefix.expand(batch, -1, -1), patches), dim=1)
        return F.dropout(tokens, self.config.hidden_dropout_prob, self.training), height, width

    @property
    def token_layers(self) -> nn.ModuleList:
        return self.blocks

    def _map_norm(self, position: int) -> nn.Module | None:
        return self.norm

    def _stem_modules(self) -> list[nn.Module]:
        """The patch projection and the top-level class token, registers and position table."""
        return [self.patch_embed, _StemTokens(self.patch_embed, self.cls_token, self.register_tokens, self.pos_embed)]
