"""Hook specifications of the ``backbones`` plugin system (pluggy project name ``"backbones"``).

A plugin is a module named by an entry point in the group ``backbones``::

    [project.entry-points.backbones]
    swin = "backbones_swin._plugin"

and that module implements hooks marked with :data:`hookimpl`. Hooks are always called with keyword
arguments, so a spec can gain arguments without breaking existing plugins. The plugin module must stay
light: it is imported by ``backbones list``, which never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from ._registry import Register

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec", "load_backbone_from_name", "register_backbones"]

PROJECT_NAME = "backbones"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_backbones(register: Register) -> None:
    """Register the backbone architectures this plugin provides.

    Call ``register`` once per ``model_type``. Classes may be given lazily as ``"module:attr"`` strings,
    which are imported only when that model type is used; prefer them, so listing plugins stays cheap.

    Args:
        register: Callable with the signature
            ``register(model_type, *, config, model, aliases=(), description="")``:

            * ``model_type`` (str): the ``model_type`` of the architecture's ``config.json``.
            * ``config``: a :class:`backbones.BackboneConfig` subclass, or ``"module:attr"`` naming one.
            * ``model``: a :class:`backbones.Backbone` subclass, or ``"module:attr"`` naming one.
            * ``aliases``: other ``model_type`` values that map to the same classes.
            * ``description``: one line shown by ``backbones list``.

    Example:
        .. code-block:: python

            from backbones import hookimpl

            @hookimpl
            def register_backbones(register):
                register("swin", config="backbones_swin._config:SwinConfig",
                         model="backbones_swin._model:SwinBackbone")
    """


@hookspec(firstresult=True)
def load_backbone_from_name(name: str, options: dict[str, Any]) -> Any:
    """Load a backbone from a name that is not a checkpoint (no ``config.json`` was found for it).

    ``AutoBackbone.from_pretrained(name)`` calls it when ``name`` is neither a local directory nor a hub
    repository with a ``config.json`` (and at once when ``use_timm_backbone=True`` is passed); the first
    plugin that returns something wins. ``backbones-timm`` loads timm model names (``"resnet50"``).

    Args:
        name: The name passed to ``from_pretrained``.
        options: Its other keyword arguments (``out_indices``, ``dtype``, ``device``,
            ``output_loading_info``, the hub options, config overrides), to honour or to reject.

    Returns:
        The backbone (or ``(backbone, LoadReport)`` when ``options["output_loading_info"]``), or None
        when the name is not this plugin's. Import heavy modules inside the hook, not at plugin import.
    """
