"""ConvNeXt backbone. Paper: Liu et al., "A ConvNet for the 2020s" (2022), https://arxiv.org/abs/2201.03545.

Module attribute names are the checkpoint's key names: they reproduce transformers' ``ConvNextBackbone``
state dict (``embeddings.patch_embeddings.weight``, ``encoder.stages.1.downsampling_layer.0.bias``,
``encoder.stages.2.layers.3.pwconv1.weight``, ``hidden_states_norms.stage2.weight``, ...), so its
checkpoints load unchanged and ours load into it.

Layout: a block's pointwise layers run on ``(batch, height, width, channels)`` tensors, which are
``permute`` views of the ``(batch, channels, height, width)`` maps the convolutions see. After the stem's
norm every map is in the channels-last memory format, so these views are free and the depthwise
convolutions run channels-last too; feature maps come back as ``(B, C, H, W)`` views of that memory.

The modules are the public blocks of :mod:`backbones_convnext.blocks`. backbones-convnextv2 reuses this
module: :meth:`ConvNextBackbone._make_block` is the hook that swaps in its block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import Tensor, nn

from backbones import Backbone
from backbones.layers import StemAndStages, drop_path_rates, init_linear_and_norm_, reselect_output_modules

from ._config import ConvNextConfig, ConvNextFamilyConfig
from .blocks import NORM_EPS, ChannelsFirstLayerNorm, ConvNextBlock, ConvNextEmbeddings, ConvNextEncoder, ConvNextStage

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from backbones import ForwardRequest

__all__ = ["ConvNextBackbone"]


class ConvNextBackbone(StemAndStages, Backbone):
    """ConvNeXt feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the normalised patch embedding; stage ``i`` is the output of stage ``i``
    (the first stage keeps the stem's resolution, each later one halves it). Every returned map passes
    through its own channels-first LayerNorm (``hidden_states_norms.<stage>``), built for the selected
    stages as transformers does; ``hidden_states`` are the maps before those norms. A forward runs only up
    to the deepest requested stage (all stages when hidden states are requested).

    With the default configuration (ConvNeXt-T) the four stages are 96, 192, 384 and 768 channels wide.
    """

    config_class: ClassVar[type[ConvNextFamilyConfig]] = ConvNextConfig
    lora_target_modules = ("pwconv1", "pwconv2")
    config: ConvNextFamilyConfig
    base_model_prefix = "convnext"  # prefix of the trunk in ConvNextForImageClassification checkpoints
    has_attentions = False

    def __init__(self, config: ConvNextFamilyConfig) -> None:
        super().__init__(config)
        sizes, depths = config.hidden_sizes, config.depths
        rates = drop_path_rates(config.drop_path_rate, depths)
        plans = config.stage_plans
        stages = []
        for index, (width, stage_rates, plan) in enumerate(zip(sizes, rates, plans)):
            blocks = [self._make_block(width, rate, dilation=plan.dilation) for rate in stage_rates]
            stages.append(
                ConvNextStage(
                    sizes[max(index - 1, 0)],
                    width,
                    blocks,
                    downsample=index > 0,
                    dilated=index > 0 and plan.stride == 1,
                    first_dilation=plan.first_dilation,
                )
            )
        self.embeddings = ConvNextEmbeddings(config.num_channels, sizes[0], config.patch_size)
        self.encoder = ConvNextEncoder(stages)
        self.num_features = [sizes[0], *sizes]
        self.reductions = [config.patch_size] + [plan.reduction for plan in plans]
        self.hidden_states_norms = nn.ModuleDict(
            {name: ChannelsFirstLayerNorm(self.out_feature_channels[name], eps=NORM_EPS) for name in self.out_features}
        )
        self.post_init()

    def _make_block(self, dim: int, drop_path_rate: float, *, dilation: int = 1) -> nn.Module:
        """Build one block of ``dim`` channels whose depthwise convolution has ``dilation``; subclasses
        override it to use another block."""
        return ConvNextBlock(
            dim,
            hidden_act=self.config.hidden_act,
            # Only ConvNextConfig has a layer scale; a family member without one overrides this method.
            layer_scale_init_value=self.config.layer_scale_init_value,  # type: ignore[attr-defined]
            drop_path_rate=drop_path_rate,
            dilation=dilation,
        )

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``ConvNextPreTrainedModel`` does."""
        if init_linear_and_norm_(module, self.config.initializer_range):
            return
        if isinstance(module, ConvNextBlock) and module.layer_scale_parameter is not None:
            # A block has a layer scale only when the config has one (ConvNextConfig, not the whole family).
            nn.init.constant_(module.layer_scale_parameter, self.config.layer_scale_init_value)  # type: ignore[attr-defined]

    def _on_out_features_changed(self) -> None:
        """Give every selected stage an output norm (weight 1, bias 0, as transformers initialises them),
        keep those of stages still selected and drop the rest, so the state matches a fresh model of this
        config (same keys, same order)."""
        reference = self.embeddings.patch_embeddings.weight
        self.hidden_states_norms = reselect_output_modules(
            self.hidden_states_norms,
            self.out_features,
            lambda name: ChannelsFirstLayerNorm(
                self.out_feature_channels[name], eps=NORM_EPS, device=reference.device, dtype=reference.dtype
            ),
        )

    @property
    def minimum_input_size(self) -> int:
        """The deepest stage's stride: each downsampling layer is an unpadded strided convolution."""
        return max(self.reductions)

    def _forward_features(
        self, pixel_values: Tensor, **request: Unpack[ForwardRequest]
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        # The trunk runs as StemAndStages runs it; only the requested maps then go through their output norms
        # (the hidden states stay the maps before them).
        maps, states, attentions = super()._forward_features(pixel_values, **request)
        for position in self.out_positions:
            maps[position] = self.hidden_states_norms[self.stage_names[position]](maps[position])
        return maps, states, attentions

    def _stem_and_stages(self) -> tuple[nn.Module, nn.ModuleList]:
        return self.embeddings, self.encoder.stages
