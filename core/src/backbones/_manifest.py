"""Plugin manifests: a plugin's registrations declared as data, read without importing the plugin.

An entry point of the group ``backbones`` that names a package (``pvt-v2 = "backbones_pvt_v2"``) whose folder
holds ``backbones.toml`` is a manifest plugin (plugin API 1.2)::

    plugin_api = "1.2"

    [[backbone]]
    model_type = "pvt_v2"
    config = "backbones_pvt_v2._config:PvtV2Config"
    model = "backbones_pvt_v2._model:PvtV2Backbone"
    description = "PVTv2 (...)"
    image_processor = "PvtImageProcessor"
    image_processor_classes = { PvtImageProcessor = "backbones_pvt_v2._processing:PvtImageProcessor" }

Each ``[[backbone]]`` table holds the arguments of one ``register`` call of the ``register_backbones`` hook
(:mod:`backbones.hookspecs`), classes as ``"module:attr"`` strings. Discovery reads the file and imports nothing
of the plugin, not even its package. A plugin that needs code to register (one that computes its model types,
or implements another hook) names a module with hooks instead, as before.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import PluginError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# tomllib is re-exported for core's other TOML reader (the scaffold's family files).
__all__ = ["MANIFEST_NAME", "REGISTRATION_KEYS", "Manifest", "find_manifest", "read_manifest", "tomllib"]

MANIFEST_NAME = "backbones.toml"

# The keys of a [[backbone]] table: the arguments of `register` (model_type, config and model are required).
REGISTRATION_KEYS = (
    "model_type",
    "config",
    "model",
    "aliases",
    "description",
    "image_processor",
    "image_processor_types",
    "image_processor_classes",
)
_REQUIRED = ("model_type", "config", "model")
_TOP_LEVEL_KEYS = ("plugin_api", "backbone")


@dataclass(frozen=True)
class Manifest:
    """A parsed ``backbones.toml``.

    Attributes:
        path: The file.
        plugin_api: The plugin-API version the plugin was built for (``"major.minor"``).
        backbones: One dict of ``register`` arguments per ``[[backbone]]`` table, in the file's order.
    """

    path: Path
    plugin_api: str
    backbones: tuple[dict[str, Any], ...]


def find_manifest(module_name: str) -> Path | None:
    """The manifest of the package ``module_name``, found without importing it.

    Args:
        module_name: The module an entry point names (its ``module`` part).

    Returns:
        The path of ``backbones.toml`` in the package's folder, or None where the module is not a package, is
        not installed, or has no manifest (then it is a module with hooks).
    """
    try:
        spec = importlib.util.find_spec(module_name)  # a dotted name imports its parent packages only
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / MANIFEST_NAME
        if candidate.is_file():
            return candidate
    return None


def read_manifest(path: Path) -> Manifest:
    """Parse and check a manifest's structure (the registry checks each registration's values).

    Args:
        path: The ``backbones.toml`` file.

    Returns:
        The manifest.

    Raises:
        PluginError: The file is not valid TOML, lacks ``plugin_api`` or ``[[backbone]]`` tables, or has a key
            this core does not know; the message names the file and the valid keys.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise PluginError(f"plugin manifest {path} cannot be read: {type(error).__name__}: {error}") from error
    _check_keys(data, _TOP_LEVEL_KEYS, f"plugin manifest {path}")
    plugin_api = data.get("plugin_api")
    if not isinstance(plugin_api, str):
        raise PluginError(
            f'plugin manifest {path} must set plugin_api = "major.minor", the plugin API it was built for '
            f"(got {plugin_api!r})"
        )
    tables = data.get("backbone")
    if not isinstance(tables, list) or not tables or not all(isinstance(table, dict) for table in tables):
        raise PluginError(
            f"plugin manifest {path} must hold one [[backbone]] table per model type (keys: "
            f"{', '.join(REGISTRATION_KEYS)})"
        )
    for index, table in enumerate(tables):
        where = f"[[backbone]] number {index + 1} of plugin manifest {path}"
        _check_keys(table, REGISTRATION_KEYS, where)
        missing = [key for key in _REQUIRED if key not in table]
        if missing:
            raise PluginError(f"{where} lacks {', '.join(missing)}; each table needs {', '.join(_REQUIRED)}")
    return Manifest(path, plugin_api, tuple(dict(table) for table in tables))


def _check_keys(table: dict[str, Any], valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise PluginError(f"{where} has unknown key(s) {', '.join(unknown)}; the valid keys are {', '.join(valid)}")
