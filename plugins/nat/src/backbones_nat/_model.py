"""Neighborhood Attention Transformer (NAT) backbone, and the layers DiNAT reuses.

Paper: Hassani et al., "Neighborhood Attention Transformer" (2022), https://arxiv.org/abs/2204.07143.
DiNAT (``backbones-dinat``) is this model with a dilation per layer; everything here takes one.

Module attribute names are the checkpoint's key names, in the format transformers writes
(``encoder.levels.N.layers.M.attention.self.rpb``, ``embeddings.patch_embeddings.projection.0``,
``encoder.levels.N.downsample.reduction``, ``hidden_states_norms.stageN``), so checkpoints of
transformers' ``NatBackbone`` / ``DinatBackbone`` and the trunks of their ``...ForImageClassification``
checkpoints load unchanged. Attention is :func:`backbones_nat.attention.neighborhood_attention_2d`:
plain PyTorch, no natten.

Layout: hidden states stay channels-last ``(batch, height, width, channels)`` throughout, as in the
reference; feature maps are ``(batch, channels, height, width)`` views of them.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import Backbone
from backbones.activations import make_activation
from backbones.layers import CheckpointableLayer, drop_path

from ._config import NatConfig
from .attention import neighborhood_attention_2d, padded_neighborhood_attention_2d

__all__ = ["NatBackbone"]


class _Holder(nn.Module):
    """Holds one module under the checkpoint's name for it (``output.dense``) and calls it."""

    def __init__(self, name: str, module: nn.Module) -> None:
        super().__init__()
        self.add_module(name, module)
        self._held = name

    def forward(self, x: Tensor) -> Tensor:
        return self._modules[self._held](x)  # type: ignore[misc]


class _PatchEmbeddings(nn.Module):
    """Keys ``embeddings.patch_embeddings.projection.{0,1}``: two 3x3 stride-2 convolutions."""

    def __init__(self, config: NatConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.projection = nn.Sequential(
            nn.Conv2d(config.num_channels, dim // 2, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1),
        )

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.projection(pixel_values).permute(0, 2, 3, 1)


class _Embeddings(nn.Module):
    """Stem (keys ``embeddings.*``): overlapping convolutional patch embedding, then a LayerNorm."""

    def __init__(self, config: NatConfig) -> None:
        super().__init__()
        self.patch_embeddings = _PatchEmbeddings(config)
        self.norm = nn.LayerNorm(config.embed_dim)  # the reference leaves this one at the default eps
        self.dropout = config.hidden_dropout_prob

    def forward(self, pixel_values: Tensor) -> Tensor:
        return F.dropout(self.norm(self.patch_embeddings(pixel_values)), self.dropout, self.training)


class _NeighborhoodSelfAttention(nn.Module):
    """Keys ``attention.self.*``: query/key/value projections and the relative position bias ``rpb``."""

    def __init__(self, config: NatConfig, dim: int, num_heads: int, dilation: int) -> None:
        super().__init__()
        kernel = config.kernel_size
        self.num_heads = num_heads
        self.kernel_size = kernel
        self.dilation = dilation
        self.dropout = config.attention_probs_dropout_prob
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel - 1, 2 * kernel - 1))
        self.query = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.key = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.value = nn.Linear(dim, dim, bias=config.qkv_bias)

    def forward(self, x: Tensor, need_weights: bool, pad_virtually: bool = False) -> tuple[Tensor, Tensor | None]:
        """``(B, H, W, C)`` -> context of the same shape, and the ``(B, heads, H, W, K*K)`` weights if asked.

        With ``pad_virtually`` the map may be smaller than the dilated window: it is attended over as if
        zero-padded to it (see :func:`padded_neighborhood_attention_2d`), and only real positions return.
        """
        heads = (*x.shape[:3], self.num_heads, x.shape[-1] // self.num_heads)
        query, key, value = self.query(x).view(heads), self.key(x).view(heads), self.value(x).view(heads)
        options = {"dropout_p": self.dropout if self.training else 0.0, "return_weights": need_weights}
        if pad_virtually:
            # What the projections make of a zero-padded position: their biases.
            paddings = [
                (layer.bias if layer.bias is not None else x.new_zeros(x.shape[-1])).view(heads[3:])
                for layer in (self.key, self.value)
            ]
            context, weights = padded_neighborhood_attention_2d(
                query, key, value, *paddings, self.rpb, self.kernel_size, self.dilation, **options
            )
        else:
            context, weights = neighborhood_attention_2d(
                query, key, value, self.rpb, self.kernel_size, self.dilation, **options
            )
        return context.view(x.shape), weights


class _NeighborhoodAttention(nn.Module):
    """Keys ``attention.*``: self-attention (``self``) and its output projection (``output.dense``)."""

    def __init__(self, config: NatConfig, dim: int, num_heads: int, dilation: int) -> None:
        super().__init__()
        self.self = _NeighborhoodSelfAttention(config, dim, num_heads, dilation)  # the checkpoint's name
        self.output = _Holder("dense", nn.Linear(dim, dim))
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, x: Tensor, need_weights: bool, pad_virtually: bool = False) -> tuple[Tensor, Tensor | None]:
        context, weights = self.self(x, need_weights, pad_virtually)
        return F.dropout(self.output(context), self.dropout, self.training), weights


class _Layer(CheckpointableLayer):
    """One transformer layer: neighbourhood attention then an MLP, each a pre-norm residual branch.

    Keys ``encoder.levels.N.layers.M.*``; ``layer_scale_parameters`` (``(2, dim)``: attention branch,
    MLP branch) exists only when ``layer_scale_init_value > 0``.
    """

    def __init__(self, config: NatConfig, dim: int, num_heads: int, dilation: int, drop_path: float) -> None:
        super().__init__()
        self.layernorm_before = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = _NeighborhoodAttention(config, dim, num_heads, dilation)
        self.layernorm_after = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.intermediate = _Holder("dense", nn.Linear(dim, int(config.mlp_ratio * dim)))
        self.output = _Holder("dense", nn.Linear(int(config.mlp_ratio * dim), dim))
        self.activation = make_activation(config.hidden_act)
        self.layer_scale_parameters = (
            nn.Parameter(torch.full((2, dim), config.layer_scale_init_value))
            if config.layer_scale_init_value > 0
            else None
        )
        self.layer_scale_init_value = config.layer_scale_init_value
        # Maps smaller than the dilated window are padded up to it (bottom and right), as the reference does.
        self.window = config.kernel_size * dilation
        self.dropout = config.hidden_dropout_prob
        self.drop_path = drop_path

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        _, height, width, _ = x.shape
        branch = self.layernorm_before(x)
        if not (isinstance(height, int) and isinstance(width, int)):
            # Symbolic sizes (torch.export with dynamic height and width): the padding is virtual, so one
            # guard-free program serves maps both smaller and larger than the window.
            branch, weights = self.attention(branch, need_weights, pad_virtually=True)
        else:
            pad_bottom, pad_right = max(0, self.window - height), max(0, self.window - width)
            if pad_bottom or pad_right:
                branch = F.pad(branch, (0, 0, 0, pad_right, 0, pad_bottom))
            branch, weights = self.attention(branch, need_weights)
            if pad_bottom or pad_right:
                branch = branch[:, :height, :width]
        scales = self.layer_scale_parameters
        if scales is not None:
            branch = scales[0] * branch
        x = x + drop_path(branch, self.drop_path, self.training)
        branch = self.output(self.activation(self.intermediate(self.layernorm_after(x))))
        branch = F.dropout(branch, self.dropout, self.training)
        if scales is not None:
            branch = scales[1] * branch
        return x + drop_path(branch, self.drop_path, self.training), weights


class _Downsampler(nn.Module):
    """Keys ``downsample.*``: a 3x3 stride-2 convolution doubling the channels, then a LayerNorm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class _Level(nn.Module):
    """Keys ``encoder.levels.N.*``: the layers of one stage; ``downsample`` feeds the next stage."""

    def __init__(
        self, config: NatConfig, index: int, dilations: list[int], drop_paths: list[float], last: bool
    ) -> None:
        super().__init__()
        dim = config.embed_dim * 2**index
        heads = config.num_heads[index]
        self.layers = nn.ModuleList(
            _Layer(config, dim, heads, dilation, rate) for dilation, rate in zip(dilations, drop_paths)
        )
        self.downsample: _Downsampler | None = None if last else _Downsampler(dim)

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Returns the stage output (before downsampling) and, if asked, its last layer's weights."""
        weights = None
        for depth, layer in enumerate(self.layers):
            x, weights = layer(x, need_weights and depth == len(self.layers) - 1)
        return x, weights


class _Encoder(nn.Module):
    """Keys ``encoder.levels.N``: the stages (pruning shortens the list)."""

    def __init__(self, config: NatConfig) -> None:
        super().__init__()
        depths, dilations = config.depths, config.layer_dilations
        # The reference's schedule: torch.linspace in float32, so the rates match it bit for bit.
        rates = torch.linspace(0, config.drop_path_rate, sum(depths), device="cpu").tolist()
        starts = [sum(depths[:index]) for index in range(len(depths))]
        self.levels = nn.ModuleList(
            _Level(config, index, dilations[index], rates[start : start + depth], last=index == len(depths) - 1)
            for index, (start, depth) in enumerate(zip(starts, depths))
        )

    def stages(self) -> list[_Level]:
        return cast("list[_Level]", list(self.levels))


class NatBackbone(Backbone):
    """NAT feature extractor with transformers-compatible checkpoints (``NatBackbone`` in transformers 4.x).

    Stages are ``stem`` (the convolutional patch embedding) and ``stage1..stageK``; a stage's feature map
    is its output before downsampling, passed through its own LayerNorm (``hidden_states_norms.<stage>``),
    as in the reference. ``hidden_states`` are the stem and stage outputs before those norms, channels-last
    ``(B, H, W, C)`` as transformers returns them; ``attentions`` hold each stage's last layer's attention
    weights, ``(B, heads, H, W, kernel_size**2)`` on the (padded) map attended over.

    Args:
        config: The architecture and the output selection.
    """

    config_class = NatConfig
    base_model_prefix = "nat"  # trunk prefix in NatForImageClassification checkpoints
    has_attentions = True
    reference_class_name = "NatBackbone"

    config: NatConfig

    def __init__(self, config: NatConfig) -> None:
        super().__init__(config)
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        widths = [config.embed_dim * 2**index for index in range(len(config.depths))]
        self.num_features = [config.embed_dim, *widths]
        self.reductions = [config.patch_size] + [config.patch_size * 2**index for index in range(len(widths))]
        self.hidden_states_norms = nn.ModuleDict(
            {name: nn.LayerNorm(self.out_feature_channels[name]) for name in self.out_features}
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``NatPreTrainedModel`` does."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, _NeighborhoodSelfAttention):
            nn.init.zeros_(module.rpb)
        elif isinstance(module, _Layer) and module.layer_scale_parameters is not None:
            nn.init.constant_(module.layer_scale_parameters, module.layer_scale_init_value)

    def _on_out_features_changed(self) -> None:
        """Keep one output norm per selected stage, as a model built for the new selection would have.

        New norms start at weight 1, bias 0 (the reference's initialisation); norms of deselected stages
        are dropped, so the state dict stays that of a fresh model of this config.
        """
        reference = self.embeddings.norm.weight
        norms = self.hidden_states_norms
        for name in [name for name in norms if name not in self.out_features]:
            del norms[name]
        for name in self.out_features:
            if name not in norms:
                norms[name] = nn.LayerNorm(
                    self.out_feature_channels[name], device=reference.device, dtype=reference.dtype
                )

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        if output_attentions:
            # The reference returns the attentions of every stage; core only runs to the deepest selected one.
            last_stage = self.num_kept_stages - 1
        norms = self.hidden_states_norms
        names = self.stage_names
        wanted = set(self.out_positions)
        stages = self.encoder.stages()
        maps: list[Tensor | None] = [None] * len(names)
        hidden_states: list[Tensor] = []
        attentions: list[Tensor] = []
        x = self.embeddings(pixel_values)
        for position in range(last_stage + 1):
            if position:
                if position > 1:
                    downsample = stages[position - 2].downsample
                    assert downsample is not None
                    x = downsample(x)
                x, weights = stages[position - 1](x, output_attentions)
                if weights is not None:
                    attentions.append(weights)
            if position in wanted:
                maps[position] = norms[names[position]](x).permute(0, 3, 1, 2)
            if output_hidden_states:
                hidden_states.append(x)
        return (
            maps,
            tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
        )

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """Stage 0 is the stem (``embeddings``); stage ``i`` is the layers of ``encoder.levels[i - 1]`` and,
        for ``i >= 2``, the downsampler before them (``encoder.levels[i - 2].downsample``). The output norms
        (``hidden_states_norms``) belong to no stage."""
        if position == 0:
            return [self.embeddings]
        levels = self.encoder.stages()
        modules: list[nn.Module] = [levels[position - 1].layers]
        if position > 1:
            downsample = levels[position - 2].downsample
            assert downsample is not None
            modules.insert(0, downsample)
        return modules

    def _prune_stages(self, last_stage: int) -> None:
        del self.encoder.levels[last_stage:]
        if last_stage:
            self.encoder.stages()[-1].downsample = None  # it only fed the first pruned stage
