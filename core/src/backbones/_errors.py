"""Exceptions raised by backbones. Each message names the problem and the fix."""

from __future__ import annotations

__all__ = [
    "BackboneError",
    "CheckpointError",
    "ConfigError",
    "InputError",
    "PluginError",
    "ReparameterizedError",
    "UnknownModelTypeError",
    "WeightsMismatchError",
]


class BackboneError(Exception):
    """Base class of every error raised by backbones."""


class ConfigError(BackboneError, ValueError):
    """A configuration is missing, malformed or names the wrong architecture."""


class InputError(BackboneError, ValueError):
    """An input (pixel values, an image, a forward argument) cannot be processed; the message names it and
    what is expected. A ``ValueError``, as transformers raises for the same inputs."""


class CheckpointError(BackboneError, OSError):
    """A checkpoint cannot be found, read or trusted."""


class WeightsMismatchError(BackboneError, ValueError):
    """Checkpoint tensors do not fit the model (shapes, or strict loading found differences)."""


class PluginError(BackboneError, RuntimeError):
    """A plugin failed to load, registered something invalid, or conflicts with another plugin."""


class ReparameterizedError(BackboneError, RuntimeError):
    """A model folded for inference (``Backbone.reparameterize``) was asked to train, to be saved, or to
    fold in training mode."""


class UnknownModelTypeError(BackboneError, KeyError):
    """No installed plugin provides the requested ``model_type``."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""
