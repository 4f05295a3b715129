"""The necks: a backbone wrapped with a feature pyramid is itself a :class:`~backbones.Backbone`.

Its stages are the wrapped backbone's (``backbone.`` in the state dict) followed by the pyramid levels
(``levels.<name>.``). Selecting a stage of the wrapped backbone returns its map unchanged; selecting a level
runs the pyramid. Freezing the first stages freezes the wrapped backbone's (as torchvision's
``trainable_layers``); hidden states are the wrapped backbone's, then every level's map.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from torch import Tensor, nn
from torch.nn import functional

from .._backbone import Backbone
from .._config import BackboneConfig
from ..layers import convert_batch_norm_to_frozen
from ._config import FeaturePyramidConfig, PyramidConfig, SimpleFeaturePyramidConfig

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .._forward_inputs import ForwardRequest

__all__ = ["FeaturePyramid", "LayerNorm2d", "PyramidBackbone", "SimpleFeaturePyramid"]

_Neck = TypeVar("_Neck", bound="PyramidBackbone")


class LayerNorm2d(nn.LayerNorm):
    """Layer norm over the channels of a ``(batch, channels, height, width)`` map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _conv_norm(in_channels: int, out_channels: int, kernel_size: int, norm: str) -> nn.Sequential:
    """A convolution (biased only without a norm) followed by the norm."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm == "none")
    return nn.Sequential(conv, LayerNorm2d(out_channels)) if norm == "layer_norm" else nn.Sequential(conv)


class PyramidBackbone(Backbone):
    """A backbone with a pyramid after it (the base of both necks); subclasses build and run the levels."""

    config_class: ClassVar[type[BackboneConfig]] = PyramidConfig
    config: PyramidConfig
    levels: nn.ModuleDict

    def __init__(self, config: PyramidConfig, backbone: Backbone | None = None) -> None:
        super().__init__(config)
        from .._auto import AutoBackbone

        if backbone is None:
            backbone = AutoBackbone.from_config(config.inner_config())
        elif backbone.num_kept_stages < len(backbone.stage_names):
            raise ValueError(
                f"cannot wrap a pruned {type(backbone).__name__} (it keeps {backbone.stage_names[: backbone.num_kept_stages]}); "
                "wrap it before prune_unused_stages(), then prune the neck"
            )
        self.backbone = backbone
        self._num_inner = len(backbone.stage_names)
        inner_names, _, _ = config.backbone_metadata()
        if list(inner_names) != backbone.stage_names:
            raise ValueError(
                f"the backbone has stages {backbone.stage_names}, but the config's backbone_config describes "
                f"{list(inner_names)}; build the config from this backbone's config"
            )
        # An instance attribute: whether attentions exist depends on the wrapped backbone.
        self.__dict__["has_attentions"] = backbone.has_attentions
        strides = config.level_strides()
        self.levels = self._build_levels(config, backbone)
        self.num_features = [*backbone.num_features, *[config.out_channels] * len(strides)]
        self.reductions = [*backbone.reductions, *strides]
        # The config derives these from the wrapped backbone's; the forward reads the model's copies.
        self._level_names = config.level_names
        self._level_inputs = config.level_inputs()
        self._stage_names = [*backbone.stage_names, *self._level_names]
        self._on_out_features_changed()
        # The wrapped backbone initialised itself (or came with its weights): post_init initialises the levels.
        self._init_wrapped = False
        self.post_init()
        self._init_wrapped = True

    @classmethod
    def from_backbone(cls: type[_Neck], backbone: Backbone, **fields: Any) -> _Neck:
        """Wrap an existing backbone (its weights kept) with a new, randomly initialised pyramid.

        The neck owns the backbone from then on: it sets the backbone's selection to the stages it needs.
        Stages the backbone has frozen stay frozen.

        Args:
            backbone: Any backbone, e.g. one from :meth:`backbones.AutoBackbone.from_pretrained`.
            **fields: Fields of the neck's config (``out_channels``, ``out_indices``, ...).
        """
        if not isinstance(backbone, Backbone):
            raise TypeError(f"backbone must be a backbones.Backbone, got {type(backbone).__name__}")
        config_class: type[PyramidConfig] = cls.config_class  # type: ignore[assignment]
        config = config_class(backbone_config=backbone.config.to_dict(), **fields)
        frozen = len(backbone.frozen_stages)
        if frozen:
            backbone.freeze_stages(0)  # the neck keeps the record of what is frozen
        neck = cls(config, backbone)
        dtype = next((p.dtype for p in backbone.parameters() if p.is_floating_point()), None)
        neck.levels.to(device=backbone.device, dtype=dtype)
        neck.train(backbone.training)
        if frozen:
            neck.freeze_stages(frozen)
        return neck

    # -- levels, per neck --------------------------------------------------------------------------

    def _build_levels(self, config: Any, backbone: Backbone) -> nn.ModuleDict:
        raise NotImplementedError

    def _compute_levels(self, inputs: dict[str, Tensor], wanted: list[int]) -> dict[int, Tensor]:
        """The maps of the levels at positions ``wanted`` (into the levels), from the wrapped backbone's maps."""
        raise NotImplementedError

    def _drop_levels(self, first: int) -> None:
        """Delete the modules only levels ``first`` and deeper use (pruning)."""
        for name in self._level_names[first:]:
            if name in self.levels:
                del self.levels[name]

    def _level_module_list(self, level: int) -> list[nn.Module]:
        name = self._level_names[level]
        return [self.levels[name]] if name in self.levels else []

    # -- the Backbone contract ---------------------------------------------------------------------

    @property
    def stage_names(self) -> list[str]:
        """The wrapped backbone's stages, then the pyramid levels."""
        return list(self._stage_names)

    @property
    def _levels_kept(self) -> bool:
        return self.num_kept_stages > self._num_inner

    def _on_out_features_changed(self) -> None:
        inner = self.backbone.stage_names
        needed = {self.stage_names[position] for position in self.out_positions if position < self._num_inner}
        if self._levels_kept:
            needed.update(self._level_inputs)
        self.backbone.out_features = [name for name in inner if name in needed]

    def _forward_features(
        self, pixel_values: Tensor, **request: Unpack[ForwardRequest]
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        count = self._num_inner
        # The wrapped backbone runs as far as its own selection needs (or every stage, for hidden states).
        output_hidden_states, output_attentions = request["output_hidden_states"], request["output_attentions"]
        output = self.backbone(
            pixel_values,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        inputs = dict(zip(self.backbone.out_features, output.feature_maps))
        maps: list[Tensor | None] = [None] * len(self.stage_names)
        positions = self.out_positions
        for position in positions:
            if position < count:
                maps[position] = inputs[self.stage_names[position]]
        kept_levels = self.num_kept_stages - count
        if output_hidden_states:
            wanted = list(range(kept_levels))
        else:
            wanted = [position - count for position in positions if position >= count]
        levels = self._compute_levels(inputs, wanted) if wanted else {}
        for level, fmap in levels.items():
            maps[count + level] = fmap
        hidden_states = None
        if output_hidden_states:
            hidden_states = (*output.hidden_states, *(levels[level] for level in range(kept_levels)))
        return maps, hidden_states, output.attentions if output_attentions else None

    def _stage_modules(self, position: int) -> list[nn.Module]:
        if position < self._num_inner:
            return self.backbone._stage_modules(position)
        return self._level_module_list(position - self._num_inner)

    def _prune_stages(self, last_stage: int) -> None:
        if last_stage < self._num_inner:
            self._drop_levels(0)
            selected = {self.stage_names[position] for position in self.out_positions}
            self.backbone.out_features = [name for name in self.backbone.stage_names if name in selected]
            self.backbone.prune_unused_stages()
        else:
            self._drop_levels(last_stage - self._num_inner + 1)

    def freeze_stages(self, num_stages: int) -> list[str]:
        """Freeze the first stages (the wrapped backbone's first, then levels); see :meth:`Backbone.freeze_stages`."""
        frozen = super().freeze_stages(num_stages)
        self.backbone.freeze_stages(min(num_stages, self.backbone.num_kept_stages))
        return frozen

    def _freeze_batch_norm(self) -> int:
        return self.backbone.freeze_batch_norm() + convert_batch_norm_to_frozen(self.levels)

    def _apply_config_freezing(self) -> None:
        # A load builds on the meta device, where the wrapped backbone's post_init skipped its config's freezing.
        self.backbone._apply_config_freezing()
        if self.backbone.frozen_stages:
            super().freeze_stages(len(self.backbone.frozen_stages))
        super()._apply_config_freezing()

    def _init_weights(self, module: nn.Module) -> None:
        if any(module is own for own in self.levels.modules()):
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                # detectron2's and torchvision's FPN initialisation (c2_xavier_fill).
                nn.init.kaiming_uniform_(module.weight, a=1)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        elif self._init_wrapped and module is not self:
            self.backbone._init_weights(module)

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}, levels={self._level_names}"


class _ScaleLevel(nn.Module):
    """One level of the simple pyramid: resample by a power of two, then a 1x1 and a 3x3 convolution."""

    def __init__(self, channels: int, factor: float, out_channels: int, norm: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        steps = round(math.log2(factor))
        for step in range(steps):  # upsampling: ViTDet's transposed convolutions, halving the channels
            if step:
                layers += [LayerNorm2d(channels), nn.GELU()]
            layers.append(nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2))
            channels //= 2
        if steps < 0:
            # ceil_mode: a map of size ceil(s / r) pools to ceil(s / (r * k)), the stride's own rounding.
            size = 2**-steps
            layers.append(nn.MaxPool2d(kernel_size=size, stride=size, ceil_mode=True))
        self.scale = nn.Sequential(*layers)
        self.lateral = _conv_norm(channels, out_channels, 1, norm)
        self.output = _conv_norm(out_channels, out_channels, 3, norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.lateral(self.scale(x)))


class SimpleFeaturePyramid(PyramidBackbone):
    """ViTDet's simple feature pyramid (Li et al., 2022, "Exploring Plain Vision Transformer Backbones for
    Object Detection", https://arxiv.org/abs/2203.16527) over any backbone.

    From one map (``in_feature``, by default the last stage) each level is resampled by its scale factor
    (transposed convolutions up, max-pooling down), then projected to ``out_channels`` by a 1x1 and a 3x3
    convolution. A plain ViT's single stride-16 map becomes strides 4, 8, 16 and 32.

    Example:
        >>> from backbones import AutoBackbone
        >>> from backbones.necks import SimpleFeaturePyramid
        >>> vit = AutoBackbone.from_pretrained("path/to/dinov2")          # doctest: +SKIP
        >>> neck = SimpleFeaturePyramid.from_backbone(vit, out_channels=256, scale_factors=[2.0, 1.0, 0.5, 0.25])  # doctest: +SKIP
        >>> neck.output_shape()                                           # doctest: +SKIP
        {'stride7': (256, 7), 'p3': (256, 14), ...}
    """

    config_class: ClassVar[type[BackboneConfig]] = SimpleFeaturePyramidConfig
    config: SimpleFeaturePyramidConfig

    def _build_levels(self, config: SimpleFeaturePyramidConfig, backbone: Backbone) -> nn.ModuleDict:
        channels, _ = config._input_stage(config.input_stage, "in_feature")
        largest = max(config.scale_factors)
        if largest > 1 and channels % round(largest) != 0:
            raise ValueError(
                f"scale factor {largest} halves the {channels} channels of {config.input_stage!r} "
                f"{round(math.log2(largest))} times, which does not divide them; use smaller scale factors"
            )
        return nn.ModuleDict(
            {
                name: _ScaleLevel(channels, factor, config.out_channels, config.norm)
                for name, factor in zip(config.level_names, config.scale_factors)
            }
        )

    def _compute_levels(self, inputs: dict[str, Tensor], wanted: list[int]) -> dict[int, Tensor]:
        source = inputs[self._level_inputs[0]]
        return {level: self.levels[self._level_names[level]](source) for level in wanted}


class _FPNLevel(nn.Module):
    """One level of the FPN: a 1x1 lateral convolution of its input stage and a 3x3 output convolution."""

    def __init__(self, channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.lateral = _conv_norm(channels, out_channels, 1, norm)
        self.output = _conv_norm(out_channels, out_channels, 3, norm)


class FeaturePyramid(PyramidBackbone):
    """A feature pyramid network (Lin et al., 2017, "Feature Pyramid Networks for Object Detection",
    https://arxiv.org/abs/1612.03144) over a multi-scale backbone.

    Each input stage (``in_features``) is projected to ``out_channels`` by a 1x1 convolution and added to
    the nearest-neighbour upsampled sum from the deeper stages (the top-down pathway); a 3x3 convolution of
    that sum is the level. Levels keep the strides of their input stages.

    Example:
        >>> resnet = AutoBackbone.from_pretrained("path/to/resnet", out_indices=[1, 2, 3, 4])  # doctest: +SKIP
        >>> fpn = FeaturePyramid.from_backbone(resnet, out_channels=256)                        # doctest: +SKIP
        >>> [tuple(fmap.shape) for fmap in fpn(images).feature_maps]                             # doctest: +SKIP
    """

    config_class: ClassVar[type[BackboneConfig]] = FeaturePyramidConfig
    config: FeaturePyramidConfig

    def _build_levels(self, config: FeaturePyramidConfig, backbone: Backbone) -> nn.ModuleDict:
        channels = [config._input_stage(name, "in_features")[0] for name in config.level_inputs()]
        return nn.ModuleDict(
            {
                name: _FPNLevel(width, config.out_channels, config.norm)
                for name, width in zip(config.level_names, channels)
            }
        )

    def _drop_levels(self, first: int) -> None:
        # Shallower levels still need the deeper laterals (the top-down pathway): only outputs go.
        for name in self._level_names[first:]:
            level = self.levels[name]
            if hasattr(level, "output"):
                del level.output

    def _level_module_list(self, level: int) -> list[nn.Module]:
        return [self.levels[self._level_names[level]]]

    def _compute_levels(self, inputs: dict[str, Tensor], wanted: list[int]) -> dict[int, Tensor]:
        names = self._level_inputs
        results: dict[int, Tensor] = {}
        merged: Tensor | None = None
        for level in range(len(names) - 1, min(wanted) - 1, -1):
            module = cast(_FPNLevel, self.levels[self._level_names[level]])
            lateral = module.lateral(inputs[names[level]])
            if merged is not None:
                lateral = lateral + functional.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            merged = lateral
            if level in wanted:
                results[level] = module.output(merged)
        return results
