"""ConvNeXt backbone. Paper: Liu et al., "A ConvNet for the 2020s" (2022), https://arxiv.org/abs/2201.03545.

Module attribute names are the checkpoint's key names: they reproduce transformers' ``ConvNextBackbone``
state dict (``embeddings.patch_embeddings.weight``, ``encoder.stages.1.downsampling_layer.0.bias``,
``encoder.stages.2.layers.3.pwconv1.weight``, ``hidden_states_norms.stage2.weight``, ...), so its
checkpoints load unchanged and ours load into it.

Layout: a block's pointwise layers run on ``(batch, height, width, channels)`` tensors, which are
``permute`` views of the ``(batch, channels, height, width)`` maps the convolutions see. After the stem's
norm every map is in the channels-last memory format, so these views are free and the depthwise
convolutions run channels-last too; feature maps come back as ``(B, C, H, W)`` views of that memory.

backbones-convnextv2 reuses this module: :meth:`ConvNextBackbone._make_block` is the hook that swaps in
its block, and :meth:`ConvNextBlock._activate` the hook that adds Global Response Normalisation.
"""

from __future__ import annotations

from itertools import islice

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import Backbone
from backbones.activations import make_activation as build_activation
from backbones.layers import CheckpointableLayer

from ._config import ConvNextConfig, ConvNextFamilyConfig

__all__ = ["ChannelsFirstLayerNorm", "ConvNextBackbone", "ConvNextBlock", "drop_path", "make_activation"]

# Every norm of the trunk and the output norms use this epsilon in transformers, whatever the config says.
_NORM_EPS = 1e-6


def make_activation(name: str) -> nn.Module:
    """The activation module of ``hidden_act`` ``name`` (a key of :data:`ACTIVATIONS`)."""
    return build_activation(name)


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: zero the whole residual branch of random samples, rescaling the kept ones.

    See Huang et al., "Deep Networks with Stochastic Depth", https://arxiv.org/abs/1603.09382.
    The identity when ``rate`` is 0 or outside training.
    """
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of ``(batch, channels, height, width)`` maps.

    For a channels-last map the permuted view is contiguous, so the norm reads and writes it in place
    of a transposed copy; its output is channels-last whatever the input was.
    """

    def forward(self, x: Tensor) -> Tensor:
        normed = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return normed.permute(0, 3, 1, 2)


class ConvNextBlock(CheckpointableLayer):
    """One ConvNeXt block: ``x + scale * pwconv2(act(pwconv1(norm(dwconv(x)))))``; the unit of gradient
    checkpointing.

    ``dwconv`` is a 7x7 depthwise convolution; the norm and the two pointwise layers (4x expansion,
    ``nn.Linear`` as in transformers' keys) act on channels-last views.

    Args:
        dim: Channels in and out.
        hidden_act: Name of the activation between the pointwise layers.
        layer_scale_init_value: Initial per-channel scale of the branch; ``<= 0`` means no scale (and no
            ``layer_scale_parameter`` key).
        drop_path_rate: Stochastic-depth rate of the branch (training only).
    """

    def __init__(
        self, dim: int, *, hidden_act: str, layer_scale_init_value: float = 0.0, drop_path_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.layernorm = nn.LayerNorm(dim, eps=_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = make_activation(hidden_act)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale_parameter = (
            nn.Parameter(torch.full((dim,), layer_scale_init_value)) if layer_scale_init_value > 0 else None
        )
        self.drop_path_rate = drop_path_rate

    def _activate(self, expanded: Tensor) -> Tensor:
        """The expanded ``(B, H, W, 4 * dim)`` features between the pointwise layers; a hook for variants."""
        return self.act(expanded)

    def forward(self, x: Tensor) -> Tensor:
        branch = self.layernorm(self.dwconv(x).permute(0, 2, 3, 1))
        branch = self.pwconv2(self._activate(self.pwconv1(branch)))
        scale = self.layer_scale_parameter
        if self.drop_path_rate and self.training:
            if scale is not None:
                branch = branch * scale
            return x + drop_path(branch.permute(0, 3, 1, 2), self.drop_path_rate, True)
        if scale is None:
            # In place: ``branch`` is the fresh output of pwconv2, which no backward pass reads.
            return branch.permute(0, 3, 1, 2).add_(x)
        # One fused pass for scale and residual instead of a multiply and an add. It runs on the
        # (B, H, W, C) views, where the scale broadcasts along the last axis: a (C, 1, 1) scale against the
        # (B, C, H, W) view makes the output-layout logic compare its strides with symbolic ones, a guard
        # that torch.export with dynamic height and width cannot prove.
        return torch.addcmul(x.permute(0, 2, 3, 1), branch, scale).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"drop_path_rate={self.drop_path_rate}" if self.drop_path_rate else ""


class _Embeddings(nn.Module):
    """Stem (keys ``embeddings.*``): non-overlapping ``patch_size`` patches projected, then normalised."""

    def __init__(self, config: ConvNextFamilyConfig) -> None:
        super().__init__()
        width, patch = config.hidden_sizes[0], config.patch_size
        self.patch_embeddings = nn.Conv2d(config.num_channels, width, kernel_size=patch, stride=patch)
        self.layernorm = ChannelsFirstLayerNorm(width, eps=_NORM_EPS)

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.layernorm(self.patch_embeddings(pixel_values))


class _Stage(nn.Module):
    """Optional downsampling (norm, then a 2x2 stride-2 convolution), then a run of blocks."""

    def __init__(self, in_channels: int, out_channels: int, blocks: list[nn.Module], downsample: bool) -> None:
        super().__init__()
        # transformers keeps an empty list in the first stage; None gives the same (absent) keys.
        self.downsampling_layer = (
            nn.Sequential(
                ChannelsFirstLayerNorm(in_channels, eps=_NORM_EPS),
                nn.Conv2d(in_channels, out_channels, kernel_size=2, stride=2),
            )
            if downsample
            else None
        )
        self.layers = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        if self.downsampling_layer is not None:
            x = self.downsampling_layer(x)
        return self.layers(x)


class _Encoder(nn.Module):
    """Holds the stages under the checkpoint's ``encoder.stages`` keys; the backbone runs them."""

    def __init__(self, stages: list[_Stage]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)


class ConvNextBackbone(Backbone):
    """ConvNeXt feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the normalised patch embedding; stage ``i`` is the output of stage ``i``
    (the first stage keeps the stem's resolution, each later one halves it). Every returned map passes
    through its own channels-first LayerNorm (``hidden_states_norms.<stage>``), built for the selected
    stages as transformers does; ``hidden_states`` are the maps before those norms. A forward runs only up
    to the deepest requested stage (all stages when hidden states are requested).

    Args:
        config: The architecture and the output selection.

    Example:
        >>> model = ConvNextBackbone(ConvNextConfig(out_indices=[1, 2, 3, 4])).eval()  # doctest: +SKIP
        >>> [fmap.shape[1] for fmap in model(torch.randn(1, 3, 224, 224)).feature_maps]  # doctest: +SKIP
        [96, 192, 384, 768]
    """

    config_class = ConvNextConfig
    base_model_prefix = "convnext"  # prefix of the trunk in ConvNextForImageClassification checkpoints
    has_attentions = False
    reference_class_name = "ConvNextBackbone"

    def __init__(self, config: ConvNextFamilyConfig) -> None:
        super().__init__(config)
        sizes, depths = config.hidden_sizes, config.depths
        total = sum(depths)
        rates = [config.drop_path_rate * block / max(total - 1, 1) for block in range(total)]
        stages = []
        for index, (width, depth) in enumerate(zip(sizes, depths)):
            first = sum(depths[:index])
            blocks = [self._make_block(width, rate) for rate in rates[first : first + depth]]
            stages.append(_Stage(sizes[max(index - 1, 0)], width, blocks, downsample=index > 0))
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(stages)
        self.num_features = [sizes[0], *sizes]
        self.reductions = [config.patch_size] + [config.patch_size * 2**index for index in range(len(depths))]
        self.hidden_states_norms = nn.ModuleDict(
            {name: ChannelsFirstLayerNorm(self.out_feature_channels[name], eps=_NORM_EPS) for name in self.out_features}
        )
        self.post_init()

    def _make_block(self, dim: int, drop_path_rate: float) -> nn.Module:
        """Build one block of ``dim`` channels; subclasses override it to use another block."""
        return ConvNextBlock(
            dim,
            hidden_act=self.config.hidden_act,
            layer_scale_init_value=self.config.layer_scale_init_value,
            drop_path_rate=drop_path_rate,
        )

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``ConvNextPreTrainedModel`` does."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ConvNextBlock) and module.layer_scale_parameter is not None:
            nn.init.constant_(module.layer_scale_parameter, self.config.layer_scale_init_value)

    def _on_out_features_changed(self) -> None:
        """Give every selected stage an output norm (weight 1, bias 0, as transformers initialises them),
        keep those of stages still selected and drop the rest, so the state matches a fresh model of this
        config (same keys, same order)."""
        reference = self.embeddings.patch_embeddings.weight
        kept = self.hidden_states_norms
        self.hidden_states_norms = nn.ModuleDict(
            {
                name: kept[name]
                if name in kept
                else ChannelsFirstLayerNorm(
                    self.out_feature_channels[name], eps=_NORM_EPS, device=reference.device, dtype=reference.dtype
                )
                for name in self.out_features
            }
        )

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        expected = self.config.num_channels
        if pixel_values.shape[1] != expected:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but this model expects {expected} "
                "(config.num_channels); convert the images or load a model built for that many channels"
            )
        names = self.stage_names
        wanted = set(self.out_positions)
        norms = self.hidden_states_norms
        maps: list[Tensor | None] = [None] * len(names)
        x = self.embeddings(pixel_values)
        states = [x]
        if 0 in wanted:
            maps[0] = norms[names[0]](x)
        # islice, not a slice: slicing a ModuleList builds a new module on every call.
        for position, stage in enumerate(islice(self.encoder.stages, last_stage), start=1):
            x = stage(x)
            states.append(x)
            if position in wanted:
                maps[position] = norms[names[position]](x)
        return maps, tuple(states) if output_hidden_states else None, None

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """The patch embedding and its norm (``embeddings``) for position 0, else stage ``position``
        (``encoder.stages[position - 1]``: its downsampling layer and blocks). The output norms
        (``hidden_states_norms``) belong to no stage: they stay trainable."""
        return [self.embeddings] if position == 0 else [self.encoder.stages[position - 1]]

    def _prune_stages(self, last_stage: int) -> None:
        # Stage i >= 1 lives at encoder.stages[i - 1]; the stem is always kept.
        del self.encoder.stages[last_stage:]
