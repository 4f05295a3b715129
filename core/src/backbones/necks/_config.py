"""Configs of the necks: the neck's own fields plus the wrapped backbone's whole ``config.json`` object.

A neck's stages are the wrapped backbone's stages followed by the pyramid levels. A level is named after
its stride as detectron2 names them, ``p<log2(stride)>`` (``p2`` is stride 4), or ``stride<s>`` for a
stride that is not a power of two (a patch-14 ViT's 7, 14, 28, 56). Strides are the backbone's, which a
config alone does not hold, so they are read from the backbone built once on the meta device (no memory,
no initialisation) and cached by its config.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from .._config import BackboneConfig, check_plausible_sizes
from .._errors import ConfigError

__all__ = ["FeaturePyramidConfig", "PyramidConfig", "SimpleFeaturePyramidConfig", "level_name"]


def level_name(stride: int) -> str:
    """The name of a pyramid level: ``p<log2(stride)>`` for a power of two (detectron2's), else ``stride<s>``."""
    if stride >= 1 and stride & (stride - 1) == 0:
        return f"p{stride.bit_length() - 1}"
    return f"stride{stride}"


@functools.lru_cache(maxsize=64)
def _backbone_metadata(config_json: str) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    """``(stage_names, num_features, reductions)`` of the backbone a ``config.json`` text describes."""
    from .._auto import AutoBackbone, AutoBackboneConfig
    from .._loading import parameters_on_meta

    config = AutoBackboneConfig.from_dict(json.loads(config_json))
    with parameters_on_meta():
        model = AutoBackbone.from_config(config)
    return tuple(model.stage_names), tuple(model.num_features), tuple(model.reductions)


class PyramidConfig(BackboneConfig):
    """What both necks share: the wrapped backbone's config, the pyramid's width and normalisation.

    The default selection (``out_features`` and ``out_indices`` both unset) is every pyramid level, not the
    last stage as for a plain backbone: a neck exists to output its pyramid.
    """

    backbone_config: dict[str, Any]
    """The wrapped backbone's ``config.json`` object (its ``model_type`` names the plugin); a
    :class:`~backbones.BackboneConfig` is accepted and stored as its dict."""
    out_channels: int = Field(256, gt=0)
    """Channels of every pyramid level."""
    norm: Literal["none", "layer_norm"] = "none"
    """Normalisation after each of the neck's convolutions: ``"layer_norm"`` (over channels, as ViTDet) or none."""

    @field_validator("backbone_config", mode="before")
    @classmethod
    def _backbone_config_dict(cls, value: Any) -> Any:
        if isinstance(value, BackboneConfig):
            return value.to_dict()
        if not isinstance(value, dict) or not isinstance(value.get("model_type"), str):
            raise ValueError(
                "must be the wrapped backbone's config (a BackboneConfig, or its config.json dict with a 'model_type')"
            )
        return value

    # -- the wrapped backbone -----------------------------------------------------------------------

    def inner_config(self) -> BackboneConfig:
        """A new config object of the wrapped backbone (as ``backbone_config`` describes it).

        Raises:
            ConfigError: ``backbone_config`` is not a valid config of an installed model type.
        """
        from .._auto import AutoBackboneConfig

        try:
            config = AutoBackboneConfig.from_dict(dict(self.backbone_config))
        except ValueError as error:
            raise ConfigError(f"invalid {type(self).__name__}: backbone_config: {error}") from error
        check_plausible_sizes(config, f"the backbone_config of a {type(self).__name__}")
        return config

    def backbone_metadata(self) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
        """``(stage_names, num_features, reductions)`` of the wrapped backbone."""
        text = json.dumps(self.inner_config().to_dict(), sort_keys=True)
        try:
            return _backbone_metadata(text)
        except ConfigError:
            raise
        except Exception as error:
            raise ConfigError(
                f"invalid {type(self).__name__}: cannot build the backbone its backbone_config describes "
                f"({type(error).__name__}: {error})"
            ) from error

    def level_strides(self) -> list[int]:
        """Stride of each pyramid level, shallowest first."""
        raise NotImplementedError(f"{type(self).__name__} must define level_strides")

    def level_inputs(self) -> list[str]:
        """The wrapped backbone's stages the pyramid is computed from."""
        raise NotImplementedError(f"{type(self).__name__} must define level_inputs")

    @property
    def level_names(self) -> list[str]:
        """Names of the pyramid levels, shallowest first (see :func:`level_name`)."""
        names = [level_name(stride) for stride in self.level_strides()]
        inner = self.backbone_metadata()[0]
        clashing = [name for name in names if name in inner]
        if clashing:
            raise ConfigError(
                f"invalid {type(self).__name__}: pyramid levels {clashing} have the names of stages of the wrapped "
                f"backbone ({list(inner)}); a neck cannot wrap a backbone with such stage names"
            )
        return names

    @property
    def stage_names(self) -> list[str]:
        """The wrapped backbone's stages, then the pyramid levels."""
        return [*self.backbone_metadata()[0], *self.level_names]

    def set_out_features_out_indices(
        self,
        out_features: list[str] | None,
        out_indices: list[int] | tuple[int, ...] | None,
    ) -> None:
        """As :meth:`BackboneConfig.set_out_features_out_indices`, with every level as the default selection."""
        if out_features is None and out_indices is None:
            out_features = self.level_names
        super().set_out_features_out_indices(out_features, out_indices)

    def _input_stage(self, name: str, field: str) -> tuple[int, int]:
        """``(channels, stride)`` of the wrapped backbone's stage ``name``, named by ``field``."""
        names, channels, reductions = self.backbone_metadata()
        if name not in names:
            raise ConfigError(
                f"invalid {type(self).__name__}: {field} names {name!r}, which is not a stage of the wrapped "
                f"{self.backbone_config['model_type']} backbone; its stages are {list(names)}"
            )
        position = names.index(name)
        return channels[position], reductions[position]


class SimpleFeaturePyramidConfig(PyramidConfig):
    """Config of :class:`~backbones.necks.SimpleFeaturePyramid` (ViTDet's neck: one map in, a pyramid out).

    Example:
        >>> SimpleFeaturePyramidConfig(backbone_config=Dinov2Config(patch_size=16)).stage_names[-4:]  # doctest: +SKIP
        ['p2', 'p3', 'p4', 'p5']
    """

    model_type: ClassVar[str] = "simple_feature_pyramid"

    in_feature: str | None = None
    """The wrapped backbone's stage the pyramid is computed from (default: its last stage)."""
    scale_factors: list[float] = Field(default_factory=lambda: [4.0, 2.0, 1.0, 0.5])
    """Resampling factor of each level relative to ``in_feature``'s map, largest first: a power of two (ViTDet's
    default 4, 2, 1, 1/2 turns a stride-16 map into strides 4, 8, 16, 32)."""
    norm: Literal["none", "layer_norm"] = "layer_norm"
    """ViTDet normalises every convolution of the neck with a channel layer norm; ``"none"`` uses biases instead."""

    @field_validator("scale_factors")
    @classmethod
    def _powers_of_two(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("give one factor per pyramid level, e.g. [4.0, 2.0, 1.0, 0.5]")
        bad = [factor for factor in value if not (factor > 0 and math.log2(factor).is_integer())]
        if bad:
            raise ValueError(
                f"{bad} are not powers of two; each level is a power-of-two resampling (4, 2, 1, 0.5, ...)"
            )
        if list(value) != sorted(value, reverse=True) or len(set(value)) != len(value):
            raise ValueError(
                "must be distinct and in decreasing order (shallowest level first), e.g. [4.0, 2.0, 1.0, 0.5]"
            )
        return value

    @property
    def input_stage(self) -> str:
        """``in_feature``, or the wrapped backbone's last stage."""
        return self.in_feature if self.in_feature is not None else self.backbone_metadata()[0][-1]

    def level_inputs(self) -> list[str]:
        return [self.input_stage]

    def level_strides(self) -> list[int]:
        _, stride = self._input_stage(self.input_stage, "in_feature")
        strides = [stride / factor for factor in self.scale_factors]
        fractional = [(factor, value) for factor, value in zip(self.scale_factors, strides) if not value.is_integer()]
        if fractional:
            fitting = [factor for factor in (8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125) if (stride / factor).is_integer()]
            raise ConfigError(
                f"invalid {type(self).__name__}: {self.input_stage!r} has stride {stride}, so scale_factors "
                f"{[factor for factor, _ in fractional]} give strides {[value for _, value in fractional]}, which are "
                f"not whole pixels; choose scale_factors from {fitting}"
            )
        return [int(value) for value in strides]


class FeaturePyramidConfig(PyramidConfig):
    """Config of :class:`~backbones.necks.FeaturePyramid` (FPN: a top-down pathway over several stages).

    Example:
        >>> FeaturePyramidConfig(backbone_config=ResNetConfig(out_indices=[1, 2, 3, 4])).level_names  # doctest: +SKIP
        ['p2', 'p3', 'p4', 'p5']
    """

    model_type: ClassVar[str] = "feature_pyramid"

    in_features: list[str] | None = None
    """The wrapped backbone's stages the pyramid is built on, shallowest first (default: the stages
    ``backbone_config`` selects)."""

    @field_validator("in_features")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("must name one or more distinct stages of the wrapped backbone, shallowest first")
        return value

    def level_inputs(self) -> list[str]:
        if self.in_features is not None:
            return list(self.in_features)
        return self.inner_config().out_features

    def level_strides(self) -> list[int]:
        inputs = self.level_inputs()
        names = self.backbone_metadata()[0]
        positions = [names.index(name) if name in names else -1 for name in inputs]
        strides = [self._input_stage(name, "in_features")[1] for name in inputs]
        if positions != sorted(positions):
            raise ConfigError(
                f"invalid {type(self).__name__}: in_features {inputs} must be in stage order (shallowest first)"
            )
        if len(set(strides)) != len(strides):
            raise ConfigError(
                f"invalid {type(self).__name__}: in_features {inputs} have strides {strides}; each pyramid level "
                "needs its own stride: drop the stages that repeat a stride"
            )
        return strides
