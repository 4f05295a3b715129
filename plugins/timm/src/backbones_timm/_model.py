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
from torch.utils.checkpoint import checkpoint

from backbones import Backbone, BackboneType
from backbones.layers import check_pixel_channels

from ._config import TimmBackboneConfig
from ._timm import TimmModelRequest, create_timm_model, feature_dicts, freeze_batch_norm_2d

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
    lora_target_modules = ("qkv", "proj", "fc1", "fc2", "conv2", "conv3", "conv_pw", "conv_pwl")
    has_attentions = False
    backbone_type = BackboneType.TIMM
    config: TimmBackboneConfig
    _backbone: Any
    """The timm model (its feature extractor, or the whole model when ``features_only`` is false)."""

    def __init__(self, config: TimmBackboneConfig) -> None:
        super().__init__(config)
        spec = config.feature_spec  # raises ConfigError if backbone is not set
        assert config.backbone is not None
        self._timm_initialised = False  # until post_init: timm has initialised its own weights
        request = TimmModelRequest(
            config.backbone,
            features_only=config.features_only,
            num_channels=config.num_channels,
            output_stride=config.output_stride,
            kwargs=config.timm_kwargs,
            num_stages=len(spec.names),
        )
        pretrained = config.use_pretrained_backbone and not _parameters_created_on_meta()
        self._backbone = create_timm_model(request, pretrained=pretrained)
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
        check_pixel_channels(pixel_values, self.config.num_channels, "timm backbone")
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
        recompute = self._recomputing()
        last = len(self._backbone) - 1
        for index, (name, module) in enumerate(self._backbone.items()):
            # As timm's FeatureDictNet, but only the stages after the stem (tapped modules of stage >= 1) run
            # under checkpointing: the stem's layers may be in-place activations (ResNet's act1), which
            # would modify the input a checkpoint saved.
            if recompute and index < last and self._module_stages.get(name, 0) > 0:
                hidden = checkpoint(module, hidden, use_reentrant=False)
            else:
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
        recompute = self._recomputing()
        for position, block in enumerate(model.blocks):
            hidden = checkpoint(block, hidden, use_reentrant=False) if recompute else block(hidden)
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

    # -- training switches ----------------------------------------------------------------------------

    def _timm_model(self) -> Any:
        """The timm module whose ``set_grad_checkpointing`` and ``grad_checkpointing`` rule its blocks."""
        model = self._backbone
        return model.model if isinstance(model, FeatureGetterNet) else model

    def _recomputing(self) -> bool:
        """Whether the stage loops run here (modules, blocks) must checkpoint, as timm's own forwards do."""
        return bool(getattr(self._backbone, "grad_checkpointing", False)) and self.training and torch.is_grad_enabled()

    def gradient_checkpointing_enable(self) -> None:
        """Recompute activations during backward, through timm's ``set_grad_checkpointing``.

        timm's blocks are not :class:`~backbones.layers.CheckpointableLayer`: timm checkpoints them itself
        (its ``forward_intermediates``), and the stage loops of this class follow timm's flag.

        Raises:
            NotImplementedError: The timm model has no ``set_grad_checkpointing``.
        """
        model = self._timm_model()
        if not hasattr(model, "set_grad_checkpointing"):
            raise NotImplementedError(f"timm's {type(model).__name__} has no set_grad_checkpointing")
        model.set_grad_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        """Store activations again (the default)."""
        model = self._timm_model()
        if hasattr(model, "set_grad_checkpointing"):
            model.set_grad_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether timm's gradient checkpointing is switched on."""
        return bool(getattr(self._timm_model(), "grad_checkpointing", False))

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """The timm modules (in execution order) from after stage ``position - 1``'s tapped module to stage
        ``position``'s (feature_info's module names); modules after the deepest stage (a final norm) belong
        to none. Parameters held directly by the model (ViT's ``cls_token``, ``pos_embed``) belong to the
        first stage."""
        return self._stage_groups()[position]

    def _stage_groups(self) -> list[list[nn.Module]]:
        groups: list[list[nn.Module]] = [[] for _ in self.stage_names]
        pending: list[nn.Module] = []

        def close(stage: int, module: nn.Module | None = None) -> None:
            groups[stage].extend([*pending, *([module] if module is not None else [])])
            pending.clear()

        model: Any = self._backbone
        if self._runner == "modules":
            for name, module in model.items():
                pending.append(module)
                if name in self._module_stages:
                    close(self._module_stages[name])
        elif self._runner == "blocks":
            pending.extend(getattr(model, name) for name in self._stem_modules)
            if self._stem_stage is not None:
                close(self._stem_stage)
            for index, block in enumerate(model.blocks):
                pending.append(block)
                if index in self._block_stages:
                    close(self._block_stages[index])
        else:
            root = self._timm_model()
            tapped = {name: stage for stage, name in enumerate(self.stage_names)}
            own = [name for name, _ in root.named_parameters(recurse=False)]
            if own:
                pending.append(_parameter_group(root, own))

            def walk(module: nn.Module, prefix: str) -> None:
                for name, child in module.named_children():
                    path = f"{prefix}{name}"
                    if path in tapped:
                        close(tapped[path], child)
                    elif any(stage.startswith(path + ".") for stage in tapped):
                        own = [n for n, _ in child.named_parameters(recurse=False)]
                        if own:
                            pending.append(_parameter_group(child, own))
                        walk(child, path + ".")
                    else:
                        pending.append(child)

            walk(root, "")
        return groups

    def _freeze_batch_norm(self) -> int:
        """timm's conversion: BatchNorm2d to FrozenBatchNorm2d, BatchNormAct2d (a BatchNorm2d subclass with a
        fused activation, which core's generic converter refuses) to FrozenBatchNormAct2d."""
        count = sum(isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)) for m in self._backbone.modules())
        self.freeze_batch_norm_2d()
        return count

    # -- inference folding ----------------------------------------------------------------------------

    def reparameterize(self) -> int:
        """Fold the timm model for inference with timm's own ``reparameterize_model``, in place.

        timm's helper replaces every module with a ``fuse()`` by its result and calls ``reparameterize()``
        or ``switch_to_deploy()`` on the others (RepVGG, MobileOne, RepGhost, FastViT, ... branches and
        their BatchNorms). Models with none of them (ResNet, ConvNeXt) are left as they are. As for every
        backbone, the model is put in evaluation mode first and cannot train or be saved afterwards.

        Returns:
            How many timm modules were folded (0 when the model is already folded).
        """
        from timm.utils import reparameterize_model

        if self._reparameterized:
            return 0
        self.eval()
        count = sum(_folds(module) for module in self._backbone.modules())
        reparameterize_model(self._backbone, inplace=True)
        self._reparameterized = True
        return count

    @property
    def supports_reparameterize(self) -> bool:
        """Whether timm's ``reparameterize_model`` has anything to fold in this model."""
        return any(_folds(module) for module in self._backbone.modules())

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


class _ParameterGroup(nn.Module):
    """Parameters a timm module holds directly (ViT's ``cls_token``), as a module :meth:`freeze_stages` can
    act on. It is not registered in the model, so the state dict is unchanged."""

    def __init__(self, owner: nn.Module, names: list[str]) -> None:
        super().__init__()
        for name in names:
            self.register_parameter(name, owner._parameters[name])


def _parameter_group(owner: nn.Module, names: list[str]) -> _ParameterGroup:
    """The :class:`_ParameterGroup` of ``owner``, cached on it (outside its modules) so its training flag persists."""
    group = owner.__dict__.get("_backbones_parameter_group")
    if group is None:
        group = _ParameterGroup(owner, names)
        owner.__dict__["_backbones_parameter_group"] = group
    return group


def _folds(module: nn.Module) -> bool:
    """Whether timm's ``reparameterize_model`` acts on ``module`` (the methods it looks for)."""
    return any(callable(getattr(module, name, None)) for name in ("fuse", "reparameterize", "switch_to_deploy"))
