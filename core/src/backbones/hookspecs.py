"""Hook specifications of the ``backbones`` plugin system (pluggy project name ``"backbones"``).

Most plugins need no hook: their entry point names their package, whose ``backbones.toml`` manifest holds
the arguments of each ``register`` call as data (plugin API 1.2; see :mod:`backbones._manifest`). A plugin
that needs code is a module named by an entry point in the group ``backbones``::

    [project.entry-points.backbones]
    timm = "backbones_timm._plugin"

and that module implements hooks marked with :data:`hookimpl`. Hooks are always called with keyword
arguments, so a spec can gain arguments without breaking existing plugins. The plugin module must stay
light: it is imported by ``backbones list``, which never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._options import LoadOptions
    from ._registry import Register as Register  # re-exported: plugins annotate their hook's argument with it

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
            ``register(model_type, *, config, model, aliases=(), description="", image_processor=None,
            image_processor_types=(), image_processor_classes=None)``:

            * ``model_type`` (str): the ``model_type`` of the architecture's ``config.json``.
            * ``config``: a :class:`backbones.BackboneConfig` subclass, or ``"module:attr"`` naming one.
            * ``model``: a :class:`backbones.Backbone` subclass, or ``"module:attr"`` naming one.
            * ``aliases``: other ``model_type`` values that map to the same classes.
            * ``description``: one line shown by ``backbones list``.
            * ``image_processor`` (plugin API 1.1): the ``image_processor_type`` of this type's checkpoints,
              used by :class:`backbones.AutoImageProcessor` when a ``preprocessor_config.json`` names none.
            * ``image_processor_types`` (1.1): other ``image_processor_type`` names its checkpoints write.
            * ``image_processor_classes`` (1.1): processors the plugin implements, ``{name: class}``, each a
              frozen-dataclass subclass of :class:`backbones.ImageProcessor` or ``"module:attr"`` naming one.

            Every declared processor name must be one of core's families (``ViTImageProcessor``,
            ``ConvNextImageProcessor``, ``BitImageProcessor``, ``BeitImageProcessor``) or a key of
            ``image_processor_classes``; a plugin passing a 1.1 argument declares
            ``BACKBONES_PLUGIN_API = "1.1"``.

            Its type is ``backbones.hookspecs.Register``, for annotations only: import it under
            ``if TYPE_CHECKING:`` and write ``def register_backbones(register: Register) -> None``.

    Example:
        .. code-block:: python

            from backbones import hookimpl

            @hookimpl
            def register_backbones(register):
                register("swin", config="backbones_swin._config:SwinConfig",
                         model="backbones_swin._model:SwinBackbone")
    """


@hookspec(firstresult=True)
def load_backbone_from_name(
    name: str, load_options: LoadOptions, config_overrides: Mapping[str, Any], options: dict[str, Any]
) -> Any:
    """Load a backbone from a name that is not a checkpoint (no ``config.json`` was found for it).

    ``AutoBackbone.from_pretrained(name)`` calls it when ``name`` is neither a local directory nor a hub
    repository with a ``config.json`` (and at once when ``use_timm_backbone=True`` is passed); the first
    plugin that returns something wins. ``backbones-timm`` loads timm model names (``"resnet50"``).

    Changed in plugin API 1.1: the options arrive as one :class:`backbones.LoadOptions`
    (``load_options``) and the config overrides as a separate read-only mapping (``config_overrides``),
    so no load option ever reaches the plugin's config as an override. A plugin built for 1.0 that takes
    ``options`` keeps working: it still gets one dict of both.

    Args:
        name: The name passed to ``from_pretrained``.
        load_options: Its load options (``out_indices``, ``dtype``, ``device``, ``output_loading_info``,
            the hub options, ...), to honour or to reject with an error naming the option.
        config_overrides: Its other keyword arguments: fields (or extras) of the plugin's config.
            Keywords that look like misspelt load options were refused before the hook is called.
        options: Plugin API 1.0 only (new plugins take ``load_options`` and ``config_overrides``): the
            load options and the config overrides in one dict.

    Returns:
        The backbone (or ``(backbone, LoadReport)`` when ``load_options.output_loading_info``), or None
        when the name is not this plugin's. Import heavy modules inside the hook, not at plugin import.
    """
