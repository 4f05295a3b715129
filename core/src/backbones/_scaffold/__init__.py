"""``backbones new-plugin``: write a working plugin distribution from the templates shipped here.

The templates (``templates/<family>/`` and ``templates/common/``, package data of backbones-core) are
filled with :class:`string.Template` (``${name}`` placeholders), so the Python in them keeps its braces.
A generated plugin passes its own tests at once: the conformance kit on a tiny config, and a parity
skeleton that is skipped, saying why, until its author points it at a reference implementation.
"""

from __future__ import annotations

import keyword
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .._errors import BackboneError

__all__ = ["FAMILIES", "new_plugin", "validate_name"]


@dataclass(frozen=True)
class _Family:
    description: str
    processor: str
    rounding: str
    tiny_config: str
    default_stage_names: str
    config_fields: tuple[tuple[str, object, str], ...]  # (field, default, meaning) after num_channels
    stages_text: str


def _config_rows(fields: tuple[tuple[str, object, str], ...]) -> str:
    """The README's config table rows: ``num_channels`` (every family's first field), then ``fields``."""
    rows = [("num_channels", 3, "input channels"), *fields]
    return "\n".join(f"| `{name}` | {default} | {meaning} |" for name, default, meaning in rows)


def _pyramid_table(stem_channels: int, stem_stride: int, widths: tuple[int, ...]) -> str:
    """The README's stage table of a four-stage pyramid: the stem, then stage ``i`` at stride ``2 ** (i + 1)``."""
    rows = [("stem", stem_channels, stem_stride)]
    rows += [(f"stage{index}", width, 2 ** (index + 1)) for index, width in enumerate(widths, start=1)]
    lines = ["| stage | channels | stride |", "| --- | --- | --- |"]
    return "\n".join(lines + [f"| {name} | {channels} | {stride} |" for name, channels, stride in rows])


FAMILIES: dict[str, _Family] = {
    "cnn": _Family(
        description="convolutional backbone with residual stages",
        processor="ConvNextImageProcessor",
        rounding="ceil",
        tiny_config='{"embedding_size": 8, "hidden_sizes": [8, 16, 16], "depths": [1, 1, 1]}',
        default_stage_names='["stem", "stage1", "stage2", "stage3", "stage4"]',
        config_fields=(
            ("embedding_size", 32, "channels of the stem (3x3 stride-2 convolution)"),
            ("hidden_sizes", [64, 128, 256, 512], "channels of each stage"),
            ("depths", [2, 2, 2, 2], "residual blocks in each stage"),
            ("batch_norm_eps", 1e-05, "epsilon of every BatchNorm"),
        ),
        stages_text=_pyramid_table(32, 2, (64, 128, 256, 512)),
    ),
    "vit": _Family(
        description="plain vision transformer read out at several depths",
        processor="ViTImageProcessor",
        rounding="floor",
        tiny_config='{"patch_size": 8, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2}',
        default_stage_names='["stem"] + [f"stage{index}" for index in range(1, 13)]',
        config_fields=(
            ("patch_size", 16, "side of the square patches, the stride of every map"),
            ("hidden_size", 192, "width of the tokens"),
            ("num_hidden_layers", 12, "transformer blocks, one stage each"),
            ("num_attention_heads", 3, "heads of every attention layer"),
            ("mlp_ratio", 4.0, "MLP width relative to `hidden_size`"),
            ("layer_norm_eps", 1e-06, "epsilon of every LayerNorm"),
        ),
        stages_text=(
            "`stem` (the patch embedding) and `stage1` to `stage12` (after each block): 192 channels, "
            "stride 16 each. A single scale: detection necks build the other scales from it."
        ),
    ),
    "hierarchical": _Family(
        description="hierarchical vision transformer with patch-merging stages",
        processor="ViTImageProcessor",
        rounding="ceil",
        tiny_config='{"patch_size": 4, "embed_dim": 8, "depths": [1, 1, 1], "num_heads": [1, 2, 2], "mlp_ratio": 2.0}',
        default_stage_names='["stem", "stage1", "stage2", "stage3", "stage4"]',
        config_fields=(
            ("patch_size", 4, "side of the square patches of the embedding"),
            ("embed_dim", 96, "width of the first stage (stage i is `embed_dim * 2**i` wide)"),
            ("depths", [2, 2, 6, 2], "attention blocks in each stage"),
            ("num_heads", [3, 6, 12, 24], "attention heads in each stage"),
            ("mlp_ratio", 4.0, "MLP width relative to the stage's width"),
            ("layer_norm_eps", 1e-05, "epsilon of every LayerNorm"),
        ),
        stages_text=_pyramid_table(96, 4, (96, 192, 384, 768)),
    ),
}

# Where each template goes; ``{package}`` and ``{module}`` are filled in. Family templates first.
_FAMILY_FILES = {"_config.py.tmpl": "src/{package}/_config.py", "_model.py.tmpl": "src/{package}/_model.py"}
_COMMON_FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "__init__.py.tmpl": "src/{package}/__init__.py",
    "__init__.pyi.tmpl": "src/{package}/__init__.pyi",
    "_plugin.py.tmpl": "src/{package}/_plugin.py",
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
        "config_rows": _config_rows(spec.config_fields),
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
    rendered[f"src/{values['package']}/py.typed"] = ""
    for relative, text in rendered.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return [Path(relative) for relative in rendered]
