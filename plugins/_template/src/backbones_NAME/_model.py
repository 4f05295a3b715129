"""NAME backbone. Paper: <title>, <link>. Module attribute names are the checkpoint's key names."""

from __future__ import annotations

from torch import Tensor, nn

from backbones import Backbone
from backbones.layers import CheckpointableLayer

from ._config import NAMEConfig


class NAMELayer(CheckpointableLayer):
    """One repeated block. Deriving from CheckpointableLayer is all gradient checkpointing needs;
    make the innermost repeated blocks checkpointable, not the modules that contain them."""


class NAMEBackbone(Backbone):
    """NAME feature extractor with transformers-compatible state-dict keys."""

    config_class = NAMEConfig
    base_model_prefix = "NAME"  # prefix of the trunk in NAMEForImageClassification checkpoints
    has_attentions = False
    reference_class_name = "NAMEBackbone"

    def __init__(self, config: NAMEConfig) -> None:
        super().__init__(config)
        # build modules here
        self.num_features = [config.hidden_sizes[0], *config.hidden_sizes]
        self.reductions = [4, 4, 8, 16, 32]
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module`` as the reference implementation does."""

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        raise NotImplementedError

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """The modules computing stage ``position`` (0: the stem/embeddings), for ``freeze_stages``."""
        raise NotImplementedError

    def _prune_stages(self, last_stage: int) -> None:
        raise NotImplementedError
