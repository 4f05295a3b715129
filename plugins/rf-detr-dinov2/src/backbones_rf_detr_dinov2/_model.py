"""RF-DETR's DINOv2: DINOv2's vision transformer with windowed attention in most layers.

Paper: Robinson et al., "RF-DETR: Neural Architecture Search for Real-Time Detection Transformers" (2025),
https://arxiv.org/abs/2511.09554; the backbone is DINOv2 (Oquab et al., 2023, https://arxiv.org/abs/2304.07193).

Built on the public blocks of backbones-dinov2 (:mod:`backbones_dinov2.blocks`: the stem, layer scale, the
MLP). What differs from DINOv2:

- **Windows**: after the stem, the patch grid is cut into ``num_windows x num_windows`` windows, each with its
  own copy of the class token, and the windows become batch entries: tokens are ``(batch * windows, 1 +
  window tokens, channels)`` from there on. A windowed layer attends within each window; a global layer
  (those not in ``window_block_indexes``) joins an image's windows into one sequence for its attention only.
- **Position resampling**: antialiased (as transformers' and RF-DETR's code), where DINOv2's is not.
- **Checkpoint keys**: the attention projections are ``attention.q_proj``, ``k_proj``, ``v_proj``, ``o_proj``
  and the SwiGLU network's ``mlp.gate_proj``, ``up_proj``, ``down_proj``, as transformers'
  ``RfDetrDinov2Backbone`` writes them; the legacy names of RF-DETR detector checkpoints
  (``attention.attention.query``, ``attention.output.dense``, ...) are renamed on load.

Window layout: the partition reads each image's row-major patch sequence as a grid of ``width`` rows by
``height`` columns (patches), and the feature maps put the windows back as a ``height x width`` grid, exactly
as RF-DETR's original code and transformers do. For a square patch grid (RF-DETR trains and runs at square
sizes) this is the plain spatial partition and its inverse; for a non-square grid the windows are not
rectangles of the image and the maps come back permuted, as in the reference.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import InputError
from backbones.layers import attend, linear
from backbones_dinov2.blocks import (
    Dinov2Embeddings,
    Dinov2Encoder,
    LayerScaledLayer,
    Mlp,
    PlainViTBackbone,
    init_dinov2_weights_,
    swiglu_hidden_features,
)

from ._config import RfDetrDinov2Config

__all__ = ["RfDetrDinov2Backbone"]


class _Embeddings(Dinov2Embeddings):
    """DINOv2's stem with the position table resampled with antialiasing (bicubic, by target size, in float32),
    as transformers and RF-DETR's code do."""

    antialias = True


def _partition(tokens: Tensor, height: int, width: int, windows: int) -> Tensor:
    """``(batch, 1 + height * width, C)`` image tokens to ``(batch * windows**2, 1 + window tokens, C)``: the
    class token copied into every window, then the window's patches (see the module notes on the layout)."""
    batch, _, channels = tokens.shape
    rows, columns = width // windows, height // windows
    patches = tokens[:, 1:].reshape(batch, windows, rows, windows, columns, channels).transpose(2, 3)
    patches = patches.reshape(batch * windows * windows, rows * columns, channels)
    # The class token (with its position) is the same for every image: any copy serves every window.
    cls = tokens[:, :1].repeat_interleave(windows * windows, dim=0)
    return torch.cat((cls, patches), dim=1)


def _unpartition(patches: Tensor, height: int, width: int, windows: int) -> Tensor:
    """``(batch * windows**2, window tokens, C)`` patch tokens (no class token) to the ``(batch, height, width,
    C)`` grid, windows placed row by row."""
    channels = patches.shape[-1]
    grid = patches.reshape(-1, windows, windows, height // windows, width // windows, channels).transpose(2, 3)
    return grid.reshape(-1, height, width, channels)


class _SelfAttention(nn.Module):
    """Multi-head attention (keys ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``) over the tokens of a window,
    or, in a global layer, over all windows of an image joined into one sequence."""

    def __init__(self, config: RfDetrDinov2Config, global_attention: bool) -> None:
        super().__init__()
        width, bias = config.hidden_size, config.qkv_bias
        self.num_heads = config.num_attention_heads
        self.windows = config.num_windows * config.num_windows
        self.global_attention = global_attention and self.windows > 1
        self.dropout = config.attention_probs_dropout_prob
        self.q_proj = nn.Linear(width, width, bias=bias)
        self.k_proj = nn.Linear(width, width, bias=bias)
        self.v_proj = nn.Linear(width, width, bias=bias)
        self.o_proj = nn.Linear(width, width)

    def forward(self, tokens: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """``(batch * windows, N, C)`` to the same; also the probabilities ``(B', heads, N', N')`` if asked,
        where ``B'`` and ``N'`` are the sequences attended over (whole images in a global layer)."""
        shape = tokens.shape
        if self.global_attention:
            tokens = tokens.reshape(shape[0] // self.windows, self.windows * shape[1], shape[2])
        batch, length, width = tokens.shape
        heads = (batch, length, self.num_heads, width // self.num_heads)
        query, key, value = (
            linear(tokens, p).view(heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        context, weights = attend(
            query, key, value, dropout=self.dropout, training=self.training, need_weights=need_weights
        )
        context = linear(context.transpose(1, 2).reshape(batch, length, width), self.o_proj)
        return context.reshape(shape), weights


class _SwiGLU(nn.Module):
    """SwiGLU feed-forward network (keys ``gate_proj``, ``up_proj``, ``down_proj``), with DINOv2's hidden
    width: two thirds of ``hidden_size * mlp_ratio``, rounded up to a multiple of 8."""

    def __init__(self, hidden_size: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = swiglu_hidden_features(hidden_size, mlp_ratio)
        self.gate_proj = nn.Linear(hidden_size, hidden)
        self.up_proj = nn.Linear(hidden_size, hidden)
        self.down_proj = nn.Linear(hidden, hidden_size)
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        """``down_proj(silu(gate_proj(x)) * up_proj(x))``."""
        return linear(linear(x, self.gate_proj, self.act) * linear(x, self.up_proj), self.down_proj)


class _Layer(LayerScaledLayer):
    """DINOv2's layer-scaled pre-norm layer (keys ``norm1``, ``attention``, ``layer_scale1``, ``norm2``, ``mlp``,
    ``layer_scale2``), attending in windows or globally; called as ``layer(tokens, need_weights)``."""

    def __init__(self, config: RfDetrDinov2Config, global_attention: bool) -> None:
        width = config.hidden_size
        super().__init__(
            width,
            _SelfAttention(config, global_attention),
            _SwiGLU(width, config.mlp_ratio)
            if config.use_swiglu_ffn
            else Mlp(width, int(width * config.mlp_ratio), config.hidden_act),
            layer_norm_eps=config.layer_norm_eps,
            layerscale_value=config.layerscale_value,
            drop_path=config.drop_path_rate,
        )


class RfDetrDinov2Backbone(PlainViTBackbone):
    """RF-DETR's windowed DINOv2 feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the embeddings) and ``stage1..stageN`` (the transformer layers), all of stride
    ``patch_size``. A feature map is the stage's tokens through the final ``layernorm`` (if
    ``apply_layernorm``), without the class tokens, with the windows put back together, as ``(batch,
    hidden_size, height // patch_size, width // patch_size)``; if not ``reshape_hidden_states`` it is the
    windowed token sequence ``(batch * num_windows**2, 1 + window tokens, hidden_size)``, exactly as
    transformers' ``RfDetrDinov2Backbone``. ``hidden_states`` are the raw windowed token sequences of every
    stage; ``attentions`` hold each run layer's attention probabilities (per window in windowed layers, per
    image in global ones).

    Prefix tokens: every window carries its own copy of the class token, which evolves separately in windowed
    layers (a global layer lets the copies of one image attend to each other), so an image has
    ``num_prefix_tokens == num_windows**2`` of them (1 without windows). With ``output_prefix_tokens=True``,
    ``prefix_tokens`` hold each requested stage's ``(batch, num_windows**2, hidden_size)`` class-token copies,
    in window order (the windows row by row, as the maps place them; the order of transformers' windowed
    hidden states), through the final ``layernorm`` as the map is.
    """

    config_class: ClassVar[type[RfDetrDinov2Config]] = RfDetrDinov2Config
    lora_target_modules = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "gate_proj", "up_proj", "down_proj")
    config: RfDetrDinov2Config
    # RF-DETR detector checkpoints (the original ones, and transformers' files of RfDetrForObjectDetection)
    # name the projections as DINOv2 did.
    checkpoint_key_renames = (
        (r"attention\.attention\.query\.", "attention.q_proj."),
        (r"attention\.attention\.key\.", "attention.k_proj."),
        (r"attention\.attention\.value\.", "attention.v_proj."),
        (r"attention\.output\.dense\.", "attention.o_proj."),
    )

    def __init__(self, config: RfDetrDinov2Config) -> None:
        super().__init__(config)
        self.embeddings = _Embeddings(
            config.num_channels,
            config.hidden_size,
            config.patch_size,
            config.position_grid,
        )
        # Applied after the windows are cut, so that each window's copy of the class token gets its own mask
        # (as in transformers); the stem's own dropout stays off.
        self.embedding_dropout = config.hidden_dropout_prob
        self.encoder = Dinov2Encoder(_Layer(config, is_global) for is_global in config.global_layers)
        # Only built when the feature maps use it, so that no parameter goes unused.
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.apply_layernorm else None
        self.num_windows = config.num_windows
        # The prefix tokens of an image: each window's copy of the class token.
        self._set_plain_stages(
            config, num_prefix_tokens=config.num_windows**2, reshape_maps=config.reshape_hidden_states
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``RfDetrDinov2PreTrainedModel`` does."""
        init_dinov2_weights_(module, self.config.initializer_range, self.config.layerscale_value)

    def _check_grid(self, pixel_values: Tensor, height: int, width: int) -> None:
        windows = self.num_windows
        if windows > 1 and not torch.compiler.is_compiling() and (height % windows or width % windows):
            patch = self.config.patch_size
            raise InputError(
                f"a {pixel_values.shape[2]}x{pixel_values.shape[3]} input's {height}x{width} grid of patches does not divide into num_windows={windows} windows "
                f"per side; use an image whose height and width are multiples of patch_size * num_windows = "
                f"{patch * windows} pixels (RF-DETR runs at e.g. 560x560), or set num_windows=1"
            )

    def _feature_map(self, tokens: Tensor, position: int, height: int, width: int, with_prefix: bool) -> Any:
        """The stage's feature map; ``with_prefix``: and its prefix tokens ``(batch, num_windows**2, C)``, each
        window's class token with the windows row by row, both through the final layer norm."""
        if self.layernorm is not None:
            tokens = self.layernorm(tokens)
        fmap = tokens
        if self.reshape_maps:
            patches = tokens[:, 1:]
            if self.num_windows > 1:
                grid = _unpartition(patches, height, width, self.num_windows)
            else:
                grid = patches.reshape(tokens.shape[0], height, width, -1)
            fmap = grid.permute(0, 3, 1, 2)
        if not with_prefix:
            return fmap
        # An image's windows are consecutive batch entries, in the order the maps place them row by row.
        return fmap, tokens[:, :1].reshape(-1, self.num_prefix_tokens, tokens.shape[-1])

    def _embed(self, pixel_values: Tensor) -> tuple[Tensor, int, int]:
        """The stem's tokens cut into windows (each with its copy of the class token), with the dropout."""
        tokens, height, width = self.embeddings(pixel_values)
        self._check_grid(pixel_values, height, width)
        if self.num_windows > 1:
            tokens = _partition(tokens, height, width, self.num_windows)
        return F.dropout(tokens, self.embedding_dropout, self.training), height, width
