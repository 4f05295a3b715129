"""The plugin registry: entry points of the group ``backbones``, discovered once, on first use.

Discovery reads each plugin's manifest or imports its plugin module (never its model code), skips and
records a plugin that fails, and runs each plugin's registrations separately so every registration and every
failure is attributed to its distribution. A model type claimed by two distributions is recorded as a conflict
and raises, naming both, only when that type is requested.

An entry point names either a package holding a manifest, ``backbones.toml`` (plugin API 1.2: the
registrations as data, read without importing anything of the plugin; see :mod:`backbones._manifest`), or a
module implementing hooks. A manifest declares the plugin-API version it was built for as ``plugin_api``, a
module as ``BACKBONES_PLUGIN_API = "1.1"``. The plugin is loaded only if that fits
:data:`backbones.PLUGIN_API_VERSION`: the same major version and a minor version no newer than core's.
Others are recorded as failures (``backbones list`` shows them).

Since plugin API 1.1 a registration also says how the model type's images are prepared: the processor
its checkpoints use (a family core implements, or one the plugin implements itself, given lazily).
Core holds no table from model types to processors; :mod:`backbones._image` asks the registry.

Environment variables:
    BACKBONES_DISABLE_PLUGIN_AUTOLOAD: when set to a true value, no entry point is loaded.
    BACKBONES_DISABLE_PLUGINS: comma-separated entry-point or distribution names to skip.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, TypeVar

import pluggy

from . import PLUGIN_API_VERSION, hookspecs
from ._errors import PluginError, UnknownModelTypeError
from ._manifest import find_manifest, read_manifest
from ._processor_families import FAMILY_NAMES, family_names_text

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11; a dependency of torch, so installed

__all__ = [
    "KNOWN_DISTRIBUTIONS",
    "PluginFailure",
    "ProcessorRegistration",
    "Register",
    "Registration",
    "RegistrationOptions",
    "get_registry",
    "register",
]

logger = logging.getLogger("backbones")

ENTRY_POINT_GROUP = "backbones"
RUNTIME = "<runtime>"

# Architectures this project publishes, so a missing plugin gets an exact install command.
KNOWN_DISTRIBUTIONS: dict[str, str] = {
    "beit": "backbones-beit",
    "bit": "backbones-bit",
    "convnext": "backbones-convnext",
    "convnextv2": "backbones-convnextv2",
    "dinat": "backbones-dinat",
    "dinov2": "backbones-dinov2",
    "dinov2_with_registers": "backbones-dinov2-with-registers",
    "dinov3_convnext": "backbones-dinov3-convnext",
    "dinov3_vit": "backbones-dinov3-vit",
    "focalnet": "backbones-focalnet",
    "hgnet_v2": "backbones-hgnet-v2",
    "hiera": "backbones-hiera",
    "lw_detr_vit": "backbones-lw-detr-vit",
    "maskformer-swin": "backbones-maskformer-swin",
    "nat": "backbones-nat",
    "pixio": "backbones-pixio",
    "pp_lcnet": "backbones-pp-lcnet",
    "pp_lcnet_v3": "backbones-pp-lcnet",
    "pp_lcnet_v4": "backbones-pp-lcnet",
    "pvt_v2": "backbones-pvt-v2",
    "resnet": "backbones-resnet",
    "rf_detr_dinov2": "backbones-rf-detr-dinov2",
    "rt_detr_resnet": "backbones-rt-detr-resnet",
    "sapiens2": "backbones-sapiens2",
    "swin": "backbones-swin",
    "swinv2": "backbones-swinv2",
    "textnet": "backbones-textnet",
    "timm_backbone": "backbones-timm",
    "tipsv2": "backbones-tipsv2",
    "tipsv2_vision_model": "backbones-tipsv2",
    "uvdoc_backbone": "backbones-uvdoc-backbone",
    "vitdet": "backbones-vitdet",
    "vitpose_backbone": "backbones-vitpose-backbone",
}


class RegistrationOptions(TypedDict, total=False):
    """The optional keyword arguments of a registration, each as :func:`backbones.hookspecs.register_backbones`
    describes it; the defaults (``()``, ``""``, ``None``, ``()``, ``None``) are filled in by the registry.

    Declared once for the ``register`` callable a plugin's hook receives (:class:`Register`),
    :meth:`Registry.register` and :func:`backbones.register`.
    """

    aliases: tuple[str, ...] | list[str]
    description: str
    image_processor: str | None
    image_processor_types: Sequence[str]
    image_processor_classes: Mapping[str, type | str] | None


class Register(Protocol):
    """The callable a plugin's ``register_backbones`` hook receives."""

    def __call__(
        self, model_type: str, *, config: type | str, model: type | str, **options: Unpack[RegistrationOptions]
    ) -> None: ...


# A plugin's registrations: called once with the `register` callable (its hooks, or its manifest's tables).
_Declare = Callable[[Callable[..., None]], None]

# Plugin manifests (backbones.toml, read without importing the plugin) came with plugin API 1.2.
MANIFEST_API = (1, 2)

# The registration arguments each plugin-API minor version added: a plugin that passes one declares that version.
_ADDED_IN: dict[str, tuple[int, int]] = {
    "image_processor": (1, 1),
    "image_processor_types": (1, 1),
    "image_processor_classes": (1, 1),
}


def _parse_api_version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def check_plugin_api(
    declared: object, plugin_name: str, dist_name: str, *, setting: str, place: str
) -> tuple[int, int]:
    """Raise :class:`PluginError` unless ``declared`` is a plugin-API version this core implements.

    A plugin built for ``M.m`` fits a core implementing ``M.n`` with ``m <= n``: minor versions only add.

    Args:
        declared: The version the plugin declares (None where it declares none).
        plugin_name: The entry point's name.
        dist_name: The plugin's distribution.
        setting: The name it is declared under (``BACKBONES_PLUGIN_API`` in a module, ``plugin_api`` in a manifest).
        place: Where it is declared, for the messages (``"its module 'backbones_foo._plugin'"``).

    Returns:
        The declared ``(major, minor)``.
    """
    core_major, core_minor = _parse_api_version(PLUGIN_API_VERSION)
    fits = f'"{core_major}.0" to "{core_major}.{core_minor}"'
    if declared is None:
        raise PluginError(
            f"plugin {plugin_name!r} ({dist_name}) does not declare the plugin API it was built for, so it is not "
            f"loaded; {place} must set {setting} (this backbones-core fits {fits})"
        )
    try:
        major, minor = _parse_api_version(declared if isinstance(declared, str) else "")
    except ValueError:
        raise PluginError(
            f"plugin {plugin_name!r} ({dist_name}) declares {setting} = {declared!r}, which is not a "
            f'"major.minor" string; this backbones-core fits {fits}'
        ) from None
    if major != core_major or minor > core_minor:
        advice = "upgrade backbones-core" if (major, minor) > (core_major, core_minor) else f"upgrade {dist_name}"
        raise PluginError(
            f"plugin {plugin_name!r} ({dist_name}) was built for plugin API {declared}, but this backbones-core "
            f"implements {PLUGIN_API_VERSION} and fits plugins built for {fits}; it is not loaded ({advice}, or "
            f"install a release of {dist_name} built for a fitting version)"
        )
    return major, minor


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _import_object(target: type | str, what: str, model_type: str) -> Any:
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise PluginError(f"the {what} of model type {model_type!r}, {target!r}, does not exist") from None


@dataclass
class Registration:
    """One registered model type.

    Attributes:
        image_processor: The ``image_processor_type`` used for this type's checkpoints whose
            ``preprocessor_config.json`` names none (transformers' ``model_type`` fallback), or None.
        image_processor_types: Every ``image_processor_type`` its checkpoints write (the fallback first).
        image_processor_classes: Processors the plugin implements itself, by ``image_processor_type``.
    """

    model_type: str
    config: type | str
    model: type | str
    distribution: str
    version: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    image_processor: str | None = None
    image_processor_types: tuple[str, ...] = ()
    image_processor_classes: dict[str, type | str] = field(default_factory=dict)

    def load_config_class(self) -> type:
        """Import (if lazy) and return the config class."""
        return _import_object(self.config, "config class", self.model_type)

    def load_model_class(self) -> type:
        """Import (if lazy) and return the backbone class."""
        return _import_object(self.model, "model class", self.model_type)


@dataclass
class ProcessorRegistration:
    """An image processor a plugin implements, under the ``image_processor_type`` its checkpoints write."""

    name: str
    target: type | str
    distribution: str
    version: str

    def load_class(self) -> type:
        """Import (if lazy) and return the processor class.

        Raises:
            PluginError: The module cannot be imported or lacks the attribute; the message names the
                distribution that declared it.
        """
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attribute = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as error:
            raise PluginError(
                f"the image processor {self.name!r} of {self.distribution}, {self.target!r}, cannot be imported: "
                f"{type(error).__name__}: {error}"
            ) from error
        try:
            return getattr(module, attribute)
        except AttributeError:
            raise PluginError(
                f"the image processor {self.name!r} of {self.distribution}, {self.target!r}, does not exist: "
                f"module {module_name!r} has no attribute {attribute!r}"
            ) from None


@dataclass
class PluginFailure:
    """A plugin that could not be loaded or registered."""

    name: str
    distribution: str
    version: str
    error: BaseException
    details: str = field(default="", repr=False)

    @property
    def summary(self) -> str:
        """``"ExceptionType: message"`` of the original error."""
        return f"{type(self.error).__name__}: {self.error}"


def _check_declared_processors(registrations: Sequence[Registration], implemented: set[str]) -> None:
    """Every processor a registration declares is one of core's families or in ``implemented``."""
    for registration in registrations:
        for name in registration.image_processor_types:
            if name not in FAMILY_NAMES and name not in implemented:
                raise PluginError(
                    f"model type {registration.model_type!r} declares the image processor {name!r}, which is neither "
                    f"a family backbones-core implements ({family_names_text()}) nor one its plugin implements; "
                    f"give its class in image_processor_classes={{{name!r}: 'module:Class'}}"
                )


def _validate_class(value: object, what: str) -> None:
    if isinstance(value, str):
        module_name, sep, attribute = value.partition(":")
        if not sep or not module_name or not attribute:
            raise PluginError(f"{what} must be a class or a 'module:attr' string, got {value!r}")
    elif not isinstance(value, type):
        raise PluginError(f"{what} must be a class or a 'module:attr' string, got {type(value).__name__}")


_Claimed = TypeVar("_Claimed", Registration, ProcessorRegistration)


def _record_conflict(
    table: dict[str, _Claimed], conflicts: dict[str, list[str]], name: str, distribution: str, what: str
) -> None:
    """``distribution`` claims ``name``, which another holds or several claim: from now on ``name`` belongs to none
    of them (it leaves ``table``), ``conflicts`` lists every claimant, and a lookup of it raises naming them."""
    holder = table.pop(name, None)
    claimants = conflicts.setdefault(name, [holder.distribution] if holder else [])
    claimants.append(distribution)
    logger.warning(
        "%s %r is provided by %s; it is unusable until all but one are uninstalled", what, name, " and ".join(claimants)
    )


class Registry:
    """Model types and the plugins that provide them. Use :func:`get_registry`."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._discovered = False
        self._names: dict[str, Registration] = {}  # model types and aliases
        self._conflicts: dict[str, list[str]] = {}
        self._processors: dict[str, ProcessorRegistration] = {}  # image processors plugins implement
        self._processor_conflicts: dict[str, list[str]] = {}
        self._failures: list[PluginFailure] = []
        self._plugin_names: set[str] = set()  # entry points loaded (a manifest plugin has no pluggy plugin)
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.plugin_manager.add_hookspecs(hookspecs)

    # -- discovery --------------------------------------------------------------------------------

    def discover(self) -> None:
        """Load the entry points once (thread-safe). Later calls return at once."""
        if self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            if not _truthy(os.environ.get("BACKBONES_DISABLE_PLUGIN_AUTOLOAD")):
                self._load_entry_points()
            self._discovered = True

    def _load_entry_points(self) -> None:
        disabled = {name.strip() for name in os.environ.get("BACKBONES_DISABLE_PLUGINS", "").split(",") if name.strip()}
        for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
            dist = entry_point.dist
            dist_name = dist.metadata["Name"] if dist is not None else entry_point.value
            version = dist.version if dist is not None else ""
            if entry_point.name in disabled or dist_name in disabled:
                logger.debug("plugin %s (%s) disabled by BACKBONES_DISABLE_PLUGINS", entry_point.name, dist_name)
                continue
            if entry_point.name in self._plugin_names:
                continue  # the same distribution visible twice on sys.path
            self._plugin_names.add(entry_point.name)
            try:
                manifest = None if entry_point.attr else find_manifest(entry_point.module)
                if manifest is not None:
                    api, declare = self._read_manifest(manifest, entry_point.name, dist_name)
                else:
                    api, declare = self._load_module(entry_point, dist_name)
            except (Exception, SystemExit) as error:  # a broken plugin must not take the registry down
                self._fail(entry_point.name, dist_name, version, error)
                continue
            self._stage_and_add(entry_point.name, dist_name, version, api, declare)

    @staticmethod
    def _read_manifest(path: Path, plugin_name: str, dist_name: str) -> tuple[tuple[int, int], _Declare]:
        """A manifest plugin's declared API and its registrations, read from ``path`` (nothing is imported)."""
        manifest = read_manifest(path)
        place = f"its manifest {path}"
        api = check_plugin_api(manifest.plugin_api, plugin_name, dist_name, setting="plugin_api", place=place)
        if api < MANIFEST_API:
            raise PluginError(
                f"plugin {plugin_name!r} ({dist_name}) declares plugin_api = {manifest.plugin_api!r} in {place}, but "
                f'manifests came with plugin API {MANIFEST_API[0]}.{MANIFEST_API[1]}; declare "{MANIFEST_API[0]}.'
                f'{MANIFEST_API[1]}" (and depend on a backbones-core that implements it)'
            )

        def declare(register: Callable[..., None]) -> None:
            for arguments in manifest.backbones:
                register(**arguments)

        return api, declare

    def _load_module(self, entry_point: metadata.EntryPoint, dist_name: str) -> tuple[tuple[int, int], _Declare]:
        """Import a hook plugin's module, check its API and hooks, and return its ``register_backbones`` calls."""
        module = entry_point.load()
        api = check_plugin_api(
            getattr(module, "BACKBONES_PLUGIN_API", None),
            entry_point.name,
            dist_name,
            setting="BACKBONES_PLUGIN_API",
            place=f"its module {module.__name__!r}",
        )
        self.plugin_manager.register(module, name=entry_point.name)
        try:
            self.plugin_manager.check_pending()
        except pluggy.PluginValidationError as error:
            self.plugin_manager.unregister(module)
            raise PluginError(f"plugin {entry_point.name!r} implements an unknown hook: {error}") from error
        impls = [impl for impl in self.plugin_manager.hook.register_backbones.get_hookimpls() if impl.plugin is module]
        if not impls:
            raise PluginError(f"plugin {entry_point.name!r} implements no register_backbones hook")

        def declare(register: Callable[..., None]) -> None:
            for impl in impls:
                impl.function(register=register)

        return api, declare

    def _stage_and_add(
        self, plugin_name: str, dist_name: str, version: str, declared_api: tuple[int, int], declare: _Declare
    ) -> None:
        """Run a plugin's registrations; add them all, or (on any error) none and record the failure.

        An argument newer than ``declared_api`` can only come from a module: a manifest declares 1.2 or later.
        """
        staged: list[Registration] = []

        def register_from_plugin(model_type: str, **kwargs: Any) -> None:
            for argument, added in _ADDED_IN.items():
                if argument in kwargs and declared_api < added:
                    raise PluginError(
                        f"model type {model_type!r} passes {argument}, which plugin API {added[0]}.{added[1]} added, "
                        f"but plugin {plugin_name!r} declares BACKBONES_PLUGIN_API = "
                        f"'{declared_api[0]}.{declared_api[1]}'; declare \"{added[0]}.{added[1]}\" (and depend on a "
                        "backbones-core that implements it)"
                    )
            staged.append(self._make_registration(model_type, distribution=dist_name, version=version, **kwargs))

        try:
            declare(register_from_plugin)
            _check_declared_processors(staged, {name for entry in staged for name in entry.image_processor_classes})
        except (Exception, SystemExit) as error:
            # Nothing of a plugin whose registration failed is kept: a half-registered plugin is worse than none.
            self._fail(plugin_name, dist_name, version, error)
            return
        for registration in staged:
            self._add(registration)

    def _fail(self, name: str, dist_name: str, version: str, error: BaseException) -> None:
        details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self._failures.append(PluginFailure(name, dist_name, version, error, details))
        logger.warning(
            "backbones plugin %r (%s) failed and was skipped: %s: %s", name, dist_name, type(error).__name__, error
        )

    # -- registration -----------------------------------------------------------------------------

    @staticmethod
    def _make_registration(
        model_type: str,
        *,
        config: type | str,
        model: type | str,
        distribution: str,
        version: str,
        aliases: tuple[str, ...] | list[str] = (),
        description: str = "",
        image_processor: str | None = None,
        image_processor_types: Sequence[str] = (),
        image_processor_classes: Mapping[str, type | str] | None = None,
    ) -> Registration:
        if not isinstance(model_type, str) or not model_type:
            raise PluginError(f"model_type must be a non-empty string, got {model_type!r}")
        _validate_class(config, f"config of {model_type!r}")
        _validate_class(model, f"model of {model_type!r}")
        if isinstance(aliases, str) or not all(isinstance(alias, str) and alias for alias in aliases):
            raise PluginError(f"aliases of {model_type!r} must be a list of non-empty strings, got {aliases!r}")
        if image_processor is not None and (not isinstance(image_processor, str) or not image_processor):
            raise PluginError(
                f"image_processor of {model_type!r} must be an image_processor_type name (a non-empty string) or "
                f"None, got {image_processor!r}"
            )
        if not isinstance(image_processor_types, (list, tuple)) or not all(
            isinstance(name, str) and name for name in image_processor_types
        ):
            raise PluginError(
                f"image_processor_types of {model_type!r} must be a list of non-empty strings, got "
                f"{image_processor_types!r}"
            )
        classes = {} if image_processor_classes is None else image_processor_classes
        if not isinstance(classes, Mapping):
            raise PluginError(
                f"image_processor_classes of {model_type!r} must be a dict from image_processor_type names to "
                f"classes or 'module:attr' strings, got {type(classes).__name__}"
            )
        for name, target in classes.items():
            if not isinstance(name, str) or not name:
                raise PluginError(
                    f"image_processor_classes of {model_type!r} has a key {name!r}; keys must be non-empty strings"
                )
            if name in FAMILY_NAMES:
                raise PluginError(
                    f"image_processor_classes of {model_type!r} gives a class for {name!r}, a processor family "
                    f"backbones-core implements; name your own processor differently, or drop it from "
                    f"image_processor_classes to use core's"
                )
            _validate_class(target, f"image processor {name!r} of {model_type!r}")
        declared = tuple(dict.fromkeys([*([image_processor] if image_processor else []), *image_processor_types]))
        return Registration(
            model_type,
            config,
            model,
            distribution,
            version,
            tuple(aliases),
            description,
            image_processor,
            declared,
            dict(classes),
        )

    def _add(self, registration: Registration, *, replace: bool = False) -> None:
        for name in (registration.model_type, *registration.aliases):
            owner = self._names.get(name)
            if not replace and (owner is not None or name in self._conflicts):
                _record_conflict(self._names, self._conflicts, name, registration.distribution, "model type")
                continue
            self._conflicts.pop(name, None)
            self._names[name] = registration
        for name, target in registration.image_processor_classes.items():
            processor = ProcessorRegistration(name, target, registration.distribution, registration.version)
            current = self._processors.get(name)
            if replace or (current is None and name not in self._processor_conflicts):
                self._processor_conflicts.pop(name, None)
                self._processors[name] = processor
            elif current is not None and (current.distribution, current.target) == (processor.distribution, target):
                continue  # two model types of one plugin sharing its processor
            else:
                _record_conflict(
                    self._processors, self._processor_conflicts, name, registration.distribution, "image processor"
                )

    def register(
        self,
        model_type: str,
        *,
        config: type | str,
        model: type | str,
        replace: bool = False,
        **options: Unpack[RegistrationOptions],
    ) -> None:
        """Register classes at runtime (e.g. a model defined in a notebook).

        The arguments are those of the ``register`` callable of the ``register_backbones`` hook
        (:class:`RegistrationOptions`), and ``replace``; a declared image processor must be a core family,
        one of ``image_processor_classes``, or one an installed plugin implements.

        Raises:
            PluginError: When ``model_type`` is already registered and ``replace`` is false, or an
                argument is invalid.
        """
        self.discover()
        registration = self._make_registration(
            model_type, config=config, model=model, distribution=RUNTIME, version="", **options
        )
        _check_declared_processors([registration], {*registration.image_processor_classes, *self._processors})
        with self._lock:
            for name in (model_type, *registration.aliases):
                if not replace and (name in self._names or name in self._conflicts):
                    existing = self._names.get(name)
                    by = existing.distribution if existing else " and ".join(self._conflicts[name])
                    raise PluginError(
                        f"model type {name!r} is already registered by {by}; pass replace=True to override it"
                    )
            self._add(registration, replace=replace)

    # -- lookup -----------------------------------------------------------------------------------

    def registrations(self) -> list[Registration]:
        """Every registration, sorted by model type."""
        self.discover()
        unique = {id(entry): entry for entry in self._names.values()}
        return sorted(unique.values(), key=lambda entry: entry.model_type)

    @property
    def failures(self) -> list[PluginFailure]:
        """Plugins that could not be loaded or registered, with their errors."""
        self.discover()
        return list(self._failures)

    @property
    def conflicts(self) -> dict[str, list[str]]:
        """Model types claimed by several distributions, with those distributions."""
        self.discover()
        return {name: list(dists) for name, dists in self._conflicts.items()}

    def model_types(self) -> list[str]:
        """Registered model types and aliases."""
        self.discover()
        return sorted(self._names)

    def image_processors(self) -> dict[str, ProcessorRegistration]:
        """The image processors plugins implement, by ``image_processor_type`` (core's families excluded)."""
        self.discover()
        return dict(sorted(self._processors.items()))

    def image_processor(self, name: str) -> ProcessorRegistration | None:
        """The plugin processor registered as ``name``, or None when no plugin implements one by that name.

        Raises:
            PluginError: Several distributions implement a processor of that name.
        """
        self.discover()
        if name in self._processor_conflicts:
            raise PluginError(
                f"image processor {name!r} is provided by several distributions: "
                f"{' and '.join(self._processor_conflicts[name])}; uninstall all but one"
            )
        return self._processors.get(name)

    def get(self, model_type: str) -> Registration:
        """Return the registration of ``model_type`` (or of an alias).

        Raises:
            PluginError: The type is claimed by two distributions, or its plugin failed to load
                (the original error is chained).
            UnknownModelTypeError: No plugin provides it; the message lists installed types and, for
                an architecture this project publishes, the install command.
        """
        self.discover()
        if not isinstance(model_type, str):
            raise UnknownModelTypeError(f"model_type must be a string, got {type(model_type).__name__} {model_type!r}")
        if model_type in self._names:
            return self._names[model_type]
        if model_type in self._conflicts:
            raise PluginError(
                f"model type {model_type!r} is provided by several distributions: "
                f"{' and '.join(self._conflicts[model_type])}; uninstall all but one"
            )
        known_dist = KNOWN_DISTRIBUTIONS.get(model_type)
        for failure in self._failures:
            if failure.name == model_type or (known_dist is not None and failure.distribution == known_dist):
                raise PluginError(
                    f"model type {model_type!r} comes from plugin {failure.distribution}, which failed to load: "
                    f"{failure.summary}"
                ) from failure.error
        installed = ", ".join(self.model_types()) or "none"
        message = f"unknown model_type {model_type!r}; installed model types: {installed}."
        if known_dist is not None:
            message += f" Install its plugin with: pip install {known_dist}"
        elif self.failures:
            failed = ", ".join(f"{failure.distribution} ({failure.summary})" for failure in self.failures)
            message += f" Plugins that failed to load: {failed}"
        else:
            message += " Is the plugin that provides it installed?"
        raise UnknownModelTypeError(message)


_registry: Registry | None = None
_registry_lock = threading.Lock()


def get_registry() -> Registry:
    """Return the process-wide registry (created on first use; discovery happens on first lookup)."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = Registry()
    return _registry


def reset_registry() -> None:
    """Forget the registry so the next use discovers plugins again (for tests and notebooks)."""
    global _registry
    with _registry_lock:
        _registry = None


def register(
    model_type: str,
    *,
    config: type | str,
    model: type | str,
    replace: bool = False,
    **options: Unpack[RegistrationOptions],
) -> None:
    """Register a backbone at runtime; see :meth:`Registry.register`."""
    get_registry().register(model_type, config=config, model=model, replace=replace, **options)
