"""A timm model as a backbone, with the state dict of transformers' ``TimmBackbone`` (keys under ``_backbone.``).

The timm model is built with every stage, so any selection works and a checkpoint that transformers saved
with the last stage selected (its default) loads with no missing key. The forward stops at the deepest
requested stage wherever timm's structure allows it:

* ``FeatureListNet`` / ``FeatureDictNet`` (most CNNs): its modules are run in order up to the one of the
  deepest requested stage;
* ``FeatureGetterNet`` (ViTs and other models with ``forward_intermediates``) and ``features_only=False``:
  ``forward_intermediates(indices=..., stop_early=True)``;
* ``EfficientNetFeatures`` / ``MobileNetV3Features``: the stem, then the blocks up to the deepest
  requested stage;
* any other feature extractor (hook- or fx-based): its own forward, which computes every stage.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch
from timm.models import FeatureDictNet
from timm.models._features import FeatureGetterNet
from timm.models.efficientnet import EfficientNetFeatures
from timm.models.mobilenetv3 import MobileNetV3Features
from torch import Tensor, nn

from backbones import Backbone

from ._config import TimmBackboneConfig
from ._timm import create_timm_model, feature_dicts, freeze_batch_norm_2d

__all__ = ["TimmBackbone"]

_STAGEWISE_BLOCKS = (EfficientNetFeatures, MobileNetV3Features)


def _parameters_created_on_meta() -> bool:
    """Whether new parameters land on the meta device (core is building the model to load a checkpoint)."""
    probe = nn.Module()
    probe.register_parameter("weight", nn.Parameter(torch.empty(0)))
    return bool(probe.weight.is_meta)


def _accepts(method: Any, name: str) -> bool:
    try:
        return name in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


class TimmBackbone(Backbone):
    """A timm model as a backbone, compatible with transformers' ``TimmBackbone`` checkpoints.

    Stage ``i`` is entry ``i`` of the timm model's ``feature_info``: ``stage_names`` are its module names,
    ``num_features`` its channels, ``reductions`` its strides. ``TimmBackbone(config)`` builds timm's
    model (``features_only`` by default) and, if ``config.use_pretrained_backbone``, loads timm's
    pretrained weights, unless the parameters are being created on the meta device (a checkpoint load).

    Args:
        config: The timm model name and arguments, and the output selection.

    Example:
        >>> config = TimmBackboneConfig(backbone="resnet50", out_indices=[1, 2, 3, 4])  # doctest: +SKIP
        >>> TimmBackbone(config).channels                                            # doctest: +SKIP
        [256, 512, 1024, 2048]
    """

    config_class = TimmBackboneConfig
    has_attentions = False
    reference_class_name = "TimmBackbone"
    config: TimmBackboneConfig
    _backbone: Any
    """The timm model (its feature extractor, or the whole model when ``features_only`` is false)."""

    def __init__(self, config: TimmBackboneConfig) -> None:
        super().__init__(config)
        spec = config.feature_spec
        self._timm_initialised = False  # until post_init: timm has initialised its own weights
        self._backbone = create_timm_model(
            config.backbone,
            pretrained=config.use_pretrained_backbone and not _parameters_created_on_meta(),
            features_only=config.features_only,
            num_channels=config.num_channels,
            output_stride=config.output_stride,
            kwargs=config.timm_kwargs,
            num_stages=len(spec.names),
        )
        dicts = feature_dicts(self._backbone) or []
        names = [str(entry["module"]) for entry in dicts]
        if names != list(spec.names):
            raise RuntimeError(
                f"timm built {config.backbone!r} with stages {names}, but its meta-device build had {list(spec.names)}"
            )
        # Kept on the model: the config computes its stage names through a cached lookup that hashes the
        # timm arguments, which torch.compile cannot trace, and the built model's stages never change.
        self._stage_names = names
        self.num_features = [int(entry["num_chs"]) for entry in dicts]
        self.reductions = [int(entry["reduction"]) for entry in dicts]
        if config.freeze_batch_norm_2d:
            freeze_batch_norm_2d(self._backbone)
        self._setup_runner()
        self.post_init()
        self._timm_initialised = True

    @property
    def stage_names(self) -> list[str]:
        """Names of every stage (the module names of timm's ``feature_info``), shallowest first."""
        return self._stage_names

    # -- how stages are computed --------------------------------------------------------------------

    def _setup_runner(self) -> None:
        model = self._backbone
        self._stop_early = True
        if not self.config.features_only:
            self._runner = "intermediates"
            self._stop_early = _accepts(model.forward_intermediates, "stop_early")
        elif isinstance(model, FeatureDictNet):
            self._runner = "modules"
            # With out_indices = (0, ..., n - 1), timm's return id of each tapped module is its stage index.
            self._module_stages = {name: int(index) for name, index in model.return_layers.items()}
        elif isinstance(model, FeatureGetterNet):
            self._runner = "getter"
            self._stop_early = _accepts(model.model.forward_intermediates, "stop_early")
        elif isinstance(model, _STAGEWISE_BLOCKS) and model.feature_hooks is None:
            self._runner = "blocks"
            names = [name for name, _ in model.named_children()]
            self._stem_modules = names[: names.index("blocks")]
            # timm's feature "stage" s is the stem's output for s = 0, else the output of block s - 1.
            self._stem_stage = model._stage_out_idx.get(0)
            self._block_stages = {stage - 1: index for stage, index in model._stage_out_idx.items() if stage > 0}
        else:
            self._runner = "whole"
        # timm's FeatureListNet returns what the tapped modules return: (batch, height, width, channels) for
        # models that compute channels-last (Swin, MambaOut). A backbone returns (batch, channels, ...).
        self._channels_last = self._runner in ("modules", "whole") and getattr(model, "output_fmt", None) == "NHWC"

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        expected = self.config.num_channels
        if pixel_values.shape[1] != expected:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but this timm backbone expects {expected} "
                "(config.num_channels); convert the images or build the backbone with num_channels set"
            )
        wanted = list(range(last_stage + 1)) if output_hidden_states else self.out_positions
        maps: list[Tensor | None] = [None] * len(self.stage_names)
        if self._runner == "modules":
            self._run_modules(pixel_values, maps, last_stage)
        elif self._runner == "getter":
            getter = self._backbone
            options = {"stop_early": True} if self._stop_early else {}
            features = getter.model.forward_intermediates(
                pixel_values,
                indices=wanted,
                norm=getter.norm,
                output_fmt=getter.output_fmt,
                intermediates_only=True,
                **options,
            )
            for position, fmap in zip(wanted, features):
                maps[position] = fmap
        elif self._runner == "intermediates":
            options = {"stop_early": True} if self._stop_early else {}
            features = self._backbone.forward_intermediates(
                pixel_values, indices=wanted, intermediates_only=True, **options
            )
            for position, fmap in zip(wanted, features):
                maps[position] = fmap
        elif self._runner == "blocks":
            self._run_blocks(pixel_values, maps, last_stage)
        else:
            outputs = self._backbone(pixel_values)
            if isinstance(outputs, dict):
                outputs = list(outputs.values())
            for position, fmap in enumerate(outputs):
                maps[position] = fmap
        if self._channels_last:
            # A view: NCHW shape with channels-last strides, which convolutions take as they are.
            maps = [fmap.permute(0, 3, 1, 2) if fmap is not None else None for fmap in maps]
        hidden_states = tuple(maps[: last_stage + 1]) if output_hidden_states else None
        return maps, hidden_states, None  # type: ignore[return-value]  # no None up to last_stage

    def _run_modules(self, hidden: Any, maps: list[Tensor | None], last_stage: int) -> None:
        concat = self._backbone.concat
        for name, module in self._backbone.items():
            hidden = module(hidden)
            stage = self._module_stages.get(name)
            if stage is not None:
                if isinstance(hidden, (tuple, list)):
                    # timm's rule for modules that return several tensors.
                    maps[stage] = torch.cat(hidden, 1) if concat else hidden[0]
                else:
                    maps[stage] = hidden
                if stage >= last_stage:
                    break

    def _run_blocks(self, hidden: Tensor, maps: list[Tensor | None], last_stage: int) -> None:
        model = self._backbone
        for name in self._stem_modules:
            hidden = getattr(model, name)(hidden)
        if self._stem_stage is not None:
            maps[self._stem_stage] = hidden
            if self._stem_stage >= last_stage:
                return
        for position, block in enumerate(model.blocks):
            hidden = block(hidden)
            stage = self._block_stages.get(position)
            if stage is not None:
                maps[stage] = hidden
                if stage >= last_stage:
                    return

    def _prune_stages(self, last_stage: int) -> None:
        model: Any = self._backbone
        if self._runner == "modules":
            names = list(model.keys())
            cut = next(i for i, name in enumerate(names) if self._module_stages.get(name) == last_stage)
            for name in names[cut + 1 :]:
                del model[name]
            self._module_stages = {name: stage for name, stage in self._module_stages.items() if name in model}
            model.return_layers = {name: index for name, index in model.return_layers.items() if name in model}
        elif self._runner == "getter":
            kept = list(range(last_stage + 1))
            model.model.prune_intermediate_layers(kept, prune_norm=not model.norm, prune_head=True)
            model.out_indices = [index for index in model.out_indices if index <= last_stage]
        elif self._runner == "intermediates":
            model.prune_intermediate_layers(list(range(last_stage + 1)), prune_norm=True, prune_head=True)
        elif self._runner == "blocks":
            if self._stem_stage is not None and self._stem_stage >= last_stage:
                del model.blocks[:]
            else:
                last_block = next(block for block, stage in self._block_stages.items() if stage == last_stage)
                del model.blocks[last_block + 1 :]
            self._block_stages = {
                block: stage for block, stage in self._block_stages.items() if block < len(model.blocks)
            }
        else:
            raise NotImplementedError(
                f"pruning stages of timm's {type(model).__name__} feature extractor is not supported; "
                "keep the model whole (its forward computes every stage)"
            )

    # -- weights --------------------------------------------------------------------------------------

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise a module whose weights a checkpoint lacks (timm initialised everything else itself)."""
        if not self._timm_initialised:
            return
        own = dict(module.named_parameters(recurse=False))
        if not own:
            return
        if isinstance(module, nn.modules.batchnorm._NormBase):
            # Not reset_parameters(): it would also reset running statistics loaded from the checkpoint.
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear, nn.LayerNorm, nn.GroupNorm, nn.Embedding)):
            module.reset_parameters()
        else:
            # Tokens, position embeddings, layer scales held directly by timm modules.
            for parameter in own.values():
                if parameter.dim() > 1:
                    nn.init.trunc_normal_(parameter, std=0.02)
                else:
                    nn.init.zeros_(parameter)

    def freeze_batch_norm_2d(self) -> None:
        """Replace every BatchNorm2d by a frozen BatchNorm (sets ``config.freeze_batch_norm_2d``)."""
        freeze_batch_norm_2d(self._backbone)
        self.config.freeze_batch_norm_2d = True

    def unfreeze_batch_norm_2d(self) -> None:
        """Turn frozen BatchNorms back into trainable BatchNorm2d (clears ``config.freeze_batch_norm_2d``)."""
        from timm.layers import unfreeze_batch_norm_2d

        unfreeze_batch_norm_2d(self._backbone)
        self.config.freeze_batch_norm_2d = False

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], **kwargs: Any) -> Any:
        """Load a checkpoint directory or hub id, or a timm model name with timm's pretrained weights.

        ``"resnet50"``, ``"convnext_tiny.fb_in22k"``, ``"hf-hub:timm/..."`` and ``"local-dir:..."`` are timm
        names (see :func:`backbones_timm.load_timm_pretrained`); a local directory or ``"org/name"`` is a
        checkpoint saved by this class or by transformers' ``TimmBackbone``.
        """
        from ._pretrained import is_timm_model_name, load_timm_pretrained

        if is_timm_model_name(name_or_path, strict=False):
            return load_timm_pretrained(os.fspath(name_or_path), **kwargs)
        return super().from_pretrained(name_or_path, **kwargs)

    def extra_repr(self) -> str:
        return f"backbone={self.config.backbone!r}, out_features={self.out_features}"
