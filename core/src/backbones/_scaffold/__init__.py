"""``backbones new-plugin``: write a working plugin distribution from the templates shipped here.

The templates (``templates/<family>/`` and ``templates/common/``, package data of backbones-core) are
filled with :class:`string.Template` (``${name}`` placeholders), so the Python in them keeps its braces.
A generated plugin passes its own tests at once: the conformance kit on a tiny config, and a parity
skeleton that is skipped, saying why, until its author points it at a reference implementation.
"""

from __future__ import annotations

import ast
import keyword
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .._errors import BackboneError
from .._manifest import tomllib

__all__ = ["FAMILIES", "new_plugin", "validate_name"]


@dataclass(frozen=True)
class _Family:
    """What a family's templates are filled with besides the plugin's names (its ``family.toml``)."""

    description: str
    processor: str
    rounding: str
    tiny_config: str
    default_stage_names: str
    stages_text: str


def _config_rows(config_source: str) -> str:
    """The README's config table rows, read from the generated config class: each field, in order, with its
    default and the meaning its docstring's ``Args:`` gives, so that the table says what the code does."""
    config_class = next(node for node in ast.parse(config_source).body if isinstance(node, ast.ClassDef))
    meanings = dict(re.findall(r"^    (\w+): (.+)$", ast.get_docstring(config_class) or "", re.MULTILINE))
    fields = [
        (node.target.id, ast.literal_eval(node.value))
        for node in config_class.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None
        if not ast.unparse(node.annotation).startswith("ClassVar")
    ]
    return "\n".join(f"| `{name}` | {default} | {meanings[name]} |" for name, default in fields)


def _load_families() -> dict[str, _Family]:
    """Each family's values, from ``templates/<family>/family.toml`` (the folder of its templates)."""
    templates = resources.files(__name__) / "templates"
    return {
        name: _Family(**tomllib.loads((templates / name / "family.toml").read_text(encoding="utf-8")))
        for name in ("cnn", "vit", "hierarchical")
    }


FAMILIES: dict[str, _Family] = _load_families()

# Where each template goes; ``{package}`` and ``{module}`` are filled in. Family templates first.
_FAMILY_FILES = {"_config.py.tmpl": "src/{package}/_config.py", "_model.py.tmpl": "src/{package}/_model.py"}
_COMMON_FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "__init__.py.tmpl": "src/{package}/__init__.py",
    "__init__.pyi.tmpl": "src/{package}/__init__.pyi",
    "backbones.toml.tmpl": "src/{package}/backbones.toml",
    "test_conformance.py.tmpl": "tests/test_{module}.py",
    "test_parity.py.tmpl": "tests/test_{module}_parity.py",
}

_NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
_RESERVED = {"core", "workspace"}  # backbones-core, and this repository's workspace project
_REPOSITORY = "https://github.com/backbones-dev/backbones"
_DOCS = "https://backbones-dev.github.io/backbones"


def validate_name(name: str) -> None:
    """Raise :class:`BackboneError` unless ``name`` can be a model type, ``backbones-<name>`` and ``backbones_<name>``.

    A name is lowercase letters and digits, starting with a letter, in parts joined by single ``-`` or
    ``_`` (``foo``, ``foo-net``, ``foo_v2``).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 64:
        raise BackboneError(
            f"plugin name {name!r} is not usable: it becomes the model type, the distribution backbones-<name> and "
            "the package backbones_<name>, so use lowercase letters and digits, starting with a letter, in parts "
            "joined by single '-' or '_' (e.g. 'foonet' or 'foo-net'), at most 64 characters"
        )
    if name in _RESERVED:
        raise BackboneError(f"plugin name {name!r} is taken: backbones-{name} is this project's own distribution")


def _class_prefix(name: str) -> str:
    prefix = "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", name))
    return prefix + "_" if keyword.iskeyword(prefix) else prefix


def _in_this_repository(directory: Path) -> bool:
    """Whether ``directory`` is ``plugins/<name>`` of a backbones checkout (this project's metadata applies)."""
    core = directory.parent.parent / "core" / "pyproject.toml"
    return directory.parent.name == "plugins" and core.is_file() and 'name = "backbones-core"' in core.read_text()


def _core_requirement() -> str:
    from .. import __version__

    major, minor = (int(part) for part in __version__.split(".")[:2])
    return f"backbones-core>={major}.{minor},<{major}.{minor + 1}"


def _values(name: str, family: str, directory: Path) -> dict[str, str]:
    from .. import PLUGIN_API_VERSION

    spec = FAMILIES[family]
    dist = "backbones-" + name.replace("_", "-")
    if _in_this_repository(directory):
        folder = f"plugins/{directory.name}"
        urls = (
            f'Homepage = "{_REPOSITORY}"\nDocumentation = "{_DOCS}/backbones/{name}/"\n'
            f'Source = "{_REPOSITORY}/tree/main/{folder}"\nIssues = "{_REPOSITORY}/issues"'
        )
        authors, license_ = "backbones developers", "Apache-2.0"
    else:
        urls = (
            "# Your project's pages: replace these before publishing.\n"
            f'Homepage = "https://example.org/{dist}"\nDocumentation = "https://example.org/{dist}/docs"\n'
            f'Source = "https://example.org/{dist}/source"\nIssues = "https://example.org/{dist}/issues"'
        )
        authors, license_ = f"{dist} authors", "Apache-2.0"
    return {
        "model_type": name,
        "entry_point": name,
        "dist": dist,
        "package": "backbones_" + name.replace("-", "_"),
        "module": name.replace("-", "_"),
        "cls": _class_prefix(name),
        "title": name,
        "family": family,
        "family_text": spec.description,
        "processor": spec.processor,
        "rounding": spec.rounding,
        "tiny_config": spec.tiny_config,
        "default_stage_names": spec.default_stage_names,
        "stages_text": spec.stages_text,
        "api": PLUGIN_API_VERSION,
        "core_requirement": _core_requirement(),
        "urls": urls,
        "authors": authors,
        "license": license_,
    }


def new_plugin(name: str, directory: str | Path | None = None, family: str = "cnn") -> list[Path]:
    """Write the plugin distribution ``backbones-<name>`` to ``directory`` (default ``./backbones-<name>``).

    Args:
        name: The model type, e.g. ``"foonet"``; also names the distribution and the package.
        directory: The folder to create; it must not exist.
        family: ``"cnn"`` (residual convolutional stages), ``"vit"`` (patch embedding and transformer
            blocks, one scale read at several depths) or ``"hierarchical"`` (patch-merging stages of
            attention blocks).

    Returns:
        The files written, relative to ``directory``.

    Raises:
        BackboneError: The name or family is not usable, or ``directory`` exists.
    """
    validate_name(name)
    if family not in FAMILIES:
        raise BackboneError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    target = Path(directory) if directory is not None else Path("backbones-" + name.replace("_", "-"))
    if target.exists():
        raise BackboneError(
            f"{target} already exists; new-plugin never overwrites a folder: choose another --dir or remove it"
        )
    values = _values(name, family, target.resolve())
    templates = resources.files(__name__) / "templates"
    planned = [(templates / family / source, destination) for source, destination in _FAMILY_FILES.items()]
    planned += [(templates / "common" / source, destination) for source, destination in _COMMON_FILES.items()]
    rendered: dict[str, str] = {}
    for source, destination in planned:
        text = string.Template(source.read_text(encoding="utf-8")).substitute(values)
        rendered[destination.format(package=values["package"], module=values["module"])] = text
        if source.name == "_config.py.tmpl":  # rendered first: the README's table is read from it
            values["config_rows"] = _config_rows(text)
    rendered[f"src/{values['package']}/py.typed"] = ""
    for relative, text in rendered.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return [Path(relative) for relative in rendered]
