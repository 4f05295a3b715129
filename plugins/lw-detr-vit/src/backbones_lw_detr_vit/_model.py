"""LW-DETR's ViT: a plain vision transformer whose layers attend within a fixed grid of windows or over the
whole map, pre-trained with CAE (layer scale on both residual branches).

Paper: Chen et al., "LW-DETR: A Transformer Replacement to YOLO for Real-Time Detection" (2024),
https://arxiv.org/abs/2406.03459.

Built on the public blocks of backbones-vitdet (:mod:`backbones_vitdet.blocks`) where the math is ViTDet's:
the stem (patch projection plus bicubically resampled absolute positions, :class:`VitDetEmbeddings`) and the
MLP (:class:`VitDetMlp`). The attention is LW-DETR's own (separate query/key/value projections, no key bias,
no relative positions), and so is the layer (layer scale, windows by count rather than by size).

Module attribute names are transformers' ``LwDetrViTBackbone`` checkpoint keys (``embeddings.projection``,
``encoder.layer.N.attention.q_proj``, ``encoder.layer.N.gamma_1``, ``encoder.layer.N.intermediate.fc1``, ...),
so its checkpoints load unchanged and ours load into it. Inside an ``LwDetrForObjectDetection`` checkpoint
the trunk sits under ``model.backbone.backbone.``, with the attention projections under their original
names (``attention.attention.query``, ..., ``attention.output``), which are renamed on loading as transformers
does.

Layout: as in LW-DETR, the tokens are kept window-major from the stem to the last layer,
``(batch * num_windows, window_height * window_width, channels)``. A windowed layer attends within each row
of that tensor with no reshuffling, and a global layer sees one batch item's windows as one sequence (a view):
attention has no positional term, so the order of the tokens changes nothing but the order of the
probabilities, which are returned in this window-major order, as transformers returns them. Feature maps are
reassembled into ``(batch, channels, height, width)`` maps (channels-last memory) only for the stages
requested.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import InputError
from backbones.layers import CheckpointableLayer, check_pixel_channels, init_linear_and_norm_
from backbones_dinov2.blocks import Dinov2Encoder, PlainViTBackbone
from backbones_vitdet.blocks import VitDetEmbeddings, VitDetMlp

from ._config import LwDetrViTConfig

__all__ = ["LwDetrViTBackbone"]


def _to_windows(x: Tensor, side: int) -> Tensor:
    """``(B, H, W, C)`` -> ``(B * side**2, (H / side) * (W / side), C)``: ``side x side`` windows, row-major."""
    batch, height, width, channels = x.shape
    x = x.view(batch, side, height // side, side, width // side, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch * side * side, (height // side) * (width // side), channels)


def _from_windows(tokens: Tensor, batch: int, side: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`_to_windows`: ``(B, C, H, W)`` maps with channels-last memory."""
    channels = tokens.shape[-1]
    x = tokens.view(batch, side, side, height // side, width // side, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


class _Attention(nn.Module):
    """Multi-head self-attention over token sequences (keys ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``).

    The key projection has no bias (softmax is invariant to it); ``qkv_bias`` sets the query's and value's.
    """

    def __init__(self, hidden_size: int, num_heads: int, qkv_bias: bool, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """``(N, T, C)`` to ``(N, T, C)``; also the probabilities ``(N, heads, T, T)`` if ``need_weights``."""
        batch, tokens, channels = x.shape
        shape = (batch, tokens, self.num_heads, channels // self.num_heads)
        query = self.q_proj(x).view(shape).transpose(1, 2)
        key = self.k_proj(x).view(shape).transpose(1, 2)
        value = self.v_proj(x).view(shape).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            weights = torch.matmul(query * query.shape[-1] ** -0.5, key.transpose(-1, -2)).softmax(dim=-1)
            context = torch.matmul(F.dropout(weights, dropout, self.training), value)
        else:
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout)
        context = context.transpose(1, 2)
        if torch.compiler.is_compiling():
            # ONNX export swaps in an attention decomposition whose output layout differs from the traced
            # kernel's; a contiguous copy keeps the reshape below independent of it (as ViTDet's attention).
            context = context.clone(memory_format=torch.contiguous_format)
        return self.o_proj(context.reshape(batch, tokens, channels)), weights


class _Layer(CheckpointableLayer):
    """One pre-norm transformer layer with layer scale, windowed or global (keys ``layernorm_before``,
    ``attention``, ``gamma_1``, ``layernorm_after``, ``intermediate``, ``gamma_2``).

    Takes and returns window-major tokens ``(batch * num_windows, tokens per window, C)``; a global layer
    attends over all ``num_windows`` windows of a batch item at once. The unit of gradient checkpointing and
    of FSDP sharding.
    """

    def __init__(self, config: LwDetrViTConfig, windowed: bool) -> None:
        super().__init__()
        width = config.hidden_size
        self.windowed = windowed
        self.num_windows = config.num_windows
        self.layernorm_before = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.attention = _Attention(width, config.num_attention_heads, config.qkv_bias, config.dropout_prob)
        self.gamma_1 = nn.Parameter(torch.full((width,), config.cae_init_values))
        self.layernorm_after = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.intermediate = VitDetMlp(width, width * config.mlp_ratio, config.hidden_act, config.dropout_prob)
        self.gamma_2 = nn.Parameter(torch.full((width,), config.cae_init_values))

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Window-major tokens to window-major tokens; also the attention probabilities if ``need_weights``."""
        branch = self.layernorm_before(x)
        if not self.windowed:
            windows, tokens, channels = x.shape
            branch = branch.view(windows // self.num_windows, self.num_windows * tokens, channels)
        branch, weights = self.attention(branch, need_weights)
        x = x + (branch * self.gamma_1).view(x.shape)
        return x + self.intermediate(self.layernorm_after(x)) * self.gamma_2, weights


class LwDetrViTBackbone(PlainViTBackbone):
    """LW-DETR's ViT feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the embeddings) and ``stage1..stageN`` (the transformer layers), all of stride
    ``patch_size``; a stage's feature map is its tokens reassembled into a ``(batch, hidden_size,
    height // patch_size, width // patch_size)`` map, exactly as transformers' ``LwDetrViTBackbone``.
    ``hidden_states`` are transformers' too: the window-major tokens of every stage,
    ``(batch * num_windows, tokens per window, hidden_size)``; ``attentions`` hold each run layer's
    probabilities, ``(batch * num_windows, heads, n, n)`` for windowed layers and ``(batch, heads, N, N)``
    (window-major token order) for global ones.

    An input's patch grid must be a multiple of ``sqrt(num_windows)`` on both sides (e.g. multiples of 64
    pixels for 16x16 patches and 16 windows); other sizes are refused with a ``ValueError``. With the default
    config a 640x640 input gives 768-channel 40x40 maps.
    """

    config_class = LwDetrViTConfig
    lora_target_modules = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")
    config: LwDetrViTConfig
    # transformers' base-model prefix; backbone checkpoints are unprefixed, the detector's sit under
    # ``model.backbone.backbone.`` (load them with checkpoint_prefix and config_key="backbone_config").
    base_model_prefix = "lw_detr_vit"
    # LW-DETR detector checkpoints (model_type "lw_detr", the hub's and those transformers saves) keep the
    # attention projections under their original names; transformers renames them when loading, so do we.
    checkpoint_key_renames = (
        (r"\.attention\.attention\.query\.", ".attention.q_proj."),
        (r"\.attention\.attention\.key\.", ".attention.k_proj."),
        (r"\.attention\.attention\.value\.", ".attention.v_proj."),
        (r"\.attention\.output\.", ".attention.o_proj."),
    )

    def __init__(self, config: LwDetrViTConfig) -> None:
        super().__init__(config)
        windowed = set(config.window_block_indices)
        self.embeddings = VitDetEmbeddings.from_config(config)
        self.encoder = Dinov2Encoder(_Layer(config, index in windowed) for index in range(config.num_hidden_layers))
        self.side = config.num_windows_side
        self._set_plain_stages(config)  # no class token
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``LwDetrViTPreTrainedModel`` does."""
        std = self.config.initializer_range
        if init_linear_and_norm_(module, std, truncated=True):
            return
        if isinstance(module, VitDetEmbeddings) and module.position_embeddings is not None:
            nn.init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
        elif isinstance(module, _Layer):
            nn.init.constant_(module.gamma_1, self.config.cae_init_values)
            nn.init.constant_(module.gamma_2, self.config.cae_init_values)

    def _check_grid(self, pixel_values: Tensor, height: int, width: int) -> None:
        side = self.side
        if not torch.compiler.is_compiling() and (height % side or width % side):
            patch = self.config.patch_size
            raise InputError(
                f"a {pixel_values.shape[2]}x{pixel_values.shape[3]} input gives a {height}x{width} grid of "
                f"{patch}-pixel patches, which does not split into sqrt(num_windows)={side} windows per side; "
                f"use an input whose height and width are multiples of {side * patch} pixels (pad or resize it)"
            )

    def _embed(self, pixel_values: Tensor) -> tuple[Tensor, int, int]:
        """The stem's tokens in window-major order and the patch grid's height and width."""
        check_pixel_channels(pixel_values, self.config.num_channels, "LW-DETR ViT")
        grid = self.embeddings(pixel_values)  # (B, h, w, C)
        _, height, width, _ = grid.shape
        self._check_grid(pixel_values, height, width)
        return _to_windows(grid, self.side), height, width

    def _feature_map(self, tokens: Tensor, position: int, height: int, width: int, with_prefix: bool) -> Any:
        """The stage's window-major tokens reassembled into a ``(batch, channels, height, width)`` map."""
        return _from_windows(tokens, tokens.shape[0] // self.side**2, self.side, height, width)
