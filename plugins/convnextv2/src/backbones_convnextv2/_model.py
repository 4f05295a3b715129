"""ConvNeXt V2 backbone. Paper: Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked
Autoencoders" (2023), https://arxiv.org/abs/2301.00808.

ConvNeXt V2 changes only the block: Global Response Normalisation (GRN) follows the activation between
the pointwise layers, and the per-channel layer scale is gone. Everything else (stem, downsampling,
stages, output norms, pruning, initialisation) is backbones-convnext's :class:`ConvNextBackbone`; this
module supplies the block through its ``_make_block`` hook, and GRN through the ``_activate`` hook of the
public :class:`backbones_convnext.blocks.ConvNextBlock`.

Module attribute names reproduce transformers' ``ConvNextV2Backbone`` state dict, which is ConvNeXt's
without ``layer_scale_parameter`` and with ``encoder.stages.S.layers.L.grn.{weight,bias}`` of shape
``(1, 1, 1, 4 * dim)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from backbones_convnext import ConvNextBackbone
from backbones_convnext.blocks import ConvNextBlock

from ._config import ConvNextV2Config

__all__ = ["ConvNextV2Backbone", "ConvNextV2Block", "GlobalResponseNorm"]


class GlobalResponseNorm(nn.Module):
    """Global Response Normalisation of channels-last ``(batch, height, width, channels)`` features.

    Each channel's L2 norm over the whole map, divided by the mean of those norms across channels, says
    how much that channel stands out; the features are boosted by it: ``x + weight * (x * relative) + bias``.
    ``weight`` and ``bias`` start at zero, so a fresh GRN is the identity.

    Args:
        dim: Channels.
        eps: Guards the division for an all-zero map.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        # (1, 1, 1, C): the shape of transformers' checkpoint tensors, and it broadcasts over (B, H, W, C).
        self.weight = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.bias = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        spatial = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        relative = spatial / (spatial.mean(dim=-1, keepdim=True) + self.eps)
        # x * (1 + weight * relative) + bias: the per-sample gain is (B, 1, 1, C), so the full-size map is
        # read once, in one fused pass, instead of three multiply/add passes.
        return torch.addcmul(self.bias, x, (self.weight * relative).add_(1.0))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[-1]}, eps={self.eps}"


class ConvNextV2Block(ConvNextBlock):
    """A ConvNeXt block with GRN after the activation and no layer scale.

    Args:
        dim: Channels in and out.
        hidden_act: Name of the activation between the pointwise layers.
        drop_path_rate: Stochastic-depth rate of the branch (training only).
        dilation: Dilation of the depthwise convolution (a stage past ``output_stride``).
    """

    def __init__(self, dim: int, *, hidden_act: str, drop_path_rate: float = 0.0, dilation: int = 1) -> None:
        super().__init__(
            dim, hidden_act=hidden_act, layer_scale_init_value=0.0, drop_path_rate=drop_path_rate, dilation=dilation
        )
        self.grn = GlobalResponseNorm(4 * dim)

    def _activate(self, expanded: Tensor) -> Tensor:
        return self.grn(self.act(expanded))


class ConvNextV2Backbone(ConvNextBackbone):
    """ConvNeXt V2 feature extractor with transformers-compatible state-dict keys.

    Stages, outputs and options are those of :class:`backbones_convnext.ConvNextBackbone`: stage 0
    (``"stem"``) is the normalised patch embedding, stage ``i`` the output of stage ``i``, each returned
    map passes through its own output LayerNorm (``hidden_states_norms.<stage>``), and a forward runs
    only up to the deepest requested stage.

    With the default configuration the four stages are 96, 192, 384 and 768 channels wide.
    """

    config_class = ConvNextV2Config
    lora_target_modules = ("pwconv1", "pwconv2")
    config: ConvNextV2Config
    base_model_prefix = "convnextv2"  # prefix of the trunk in ConvNextV2ForImageClassification checkpoints

    def _make_block(self, dim: int, drop_path_rate: float, *, dilation: int = 1) -> nn.Module:
        return ConvNextV2Block(dim, hidden_act=self.config.hidden_act, drop_path_rate=drop_path_rate, dilation=dilation)

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module`` as transformers' ``ConvNextV2PreTrainedModel`` does (GRN at zero)."""
        super()._init_weights(module)
        if isinstance(module, GlobalResponseNorm):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
