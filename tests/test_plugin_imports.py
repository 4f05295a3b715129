"""Plugins reuse each other and core only through public names.

Every Python file of every plugin distribution (``plugins/*``, and the third-party test plugins under
``tests/third_party/*``), sources and tests, is parsed with :mod:`ast`. A plugin may import anything of its own
distribution; from ANOTHER ``backbones_*`` distribution it may import no ``_``-prefixed module or name (those
change without notice; a plugin that builds on another one uses its public ``blocks`` module), and its sources
may import no ``_``-prefixed module or name of core (``backbones._x``, ``from backbones import _y``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = sorted(
    path
    for pattern in ("plugins/*", "tests/third_party/*")
    for path in ROOT.glob(pattern)
    if (path / "pyproject.toml").is_file() and (path / "src").is_dir()
)
CORE = "backbones"


@dataclass(frozen=True)
class Distribution:
    """A plugin distribution: its folder and the import packages its ``src`` holds."""

    root: Path
    packages: frozenset[str]

    @classmethod
    def at(cls, root: Path) -> Distribution:
        src = root / "src"
        packages = {path.name for path in src.iterdir() if (path / "__init__.py").is_file()}
        packages |= {path.stem for path in src.glob("*.py")}
        return cls(root, frozenset(packages))

    def files(self) -> Iterator[tuple[Path, bool]]:
        """Every Python file of the distribution, with whether it is source (under ``src``)."""
        for path in sorted(self.root.rglob("*.py")):
            parts = path.relative_to(self.root).parts
            if any(part.startswith(".") or part in {"build", "__pycache__"} for part in parts):
                continue
            yield path, parts[0] == "src"


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _imports(tree: ast.AST) -> Iterator[tuple[int, str, list[str]]]:
    """``(line, module, imported names)`` of every absolute import, and of ``importlib.import_module("...")``
    calls with a literal name. ``import a.b`` gives ``("a.b", [])``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [alias.name for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            yield node.lineno, node.args[0].value, []


def private_imports(source: str, filename: str, own: frozenset[str], is_source: bool) -> list[str]:
    """The offending imports of one file, as ``"file:line: message"``.

    Args:
        source: The file's text.
        filename: How to name the file in messages.
        own: The import packages of the file's own distribution (anything of theirs may be imported).
        is_source: Whether the file is plugin source (then core's private names are off limits too).
    """
    problems = []
    for line, module, names in _imports(ast.parse(source, filename)):
        parts = module.split(".")
        top = parts[0]
        if top in own:
            continue
        if top.startswith("backbones_"):
            kind = f"another distribution's ({top})"
        elif top == CORE and is_source:
            kind = "core's"
        else:
            continue
        private = [part for part in parts[1:] if _private(part)] + [name for name in names if _private(name)]
        if private:
            problems.append(
                f"{filename}:{line}: imports {kind} private {', '.join(private)} (from {module}); "
                "use its public API instead (a plugin's public blocks module, or core's public modules)"
            )
    return problems


@pytest.mark.parametrize("root", DISTRIBUTIONS, ids=lambda root: str(root.relative_to(ROOT)))
def test_plugins_import_only_public_names_of_others(root: Path) -> None:
    distribution = Distribution.at(root)
    assert distribution.packages, f"{root} has no import package under src/"
    problems = [
        problem
        for path, is_source in distribution.files()
        for problem in private_imports(
            path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)), distribution.packages, is_source
        )
    ]
    assert problems == []


def test_every_plugin_distribution_is_walked() -> None:
    names = {root.name for root in DISTRIBUTIONS}
    assert {"swin", "swinv2", "maskformer-swin", "convnext", "convnextv2", "nat", "dinat", "backbones-toynet"} <= names


@pytest.mark.parametrize(
    ("source", "is_source", "expected"),
    [
        (
            "from backbones_swin._model import _SwinBlock\n",
            False,
            "demo.py:1: imports another distribution's "
            "(backbones_swin) private _model, _SwinBlock (from backbones_swin._model)",
        ),
        (
            "import torch\n\nimport backbones_swin._model\n",
            True,
            "demo.py:3: imports another distribution's (backbones_swin) private _model (from backbones_swin._model)",
        ),
        (
            "from backbones_swin.blocks import SwinBlock, _Holder\n",
            True,
            "demo.py:1: imports another distribution's (backbones_swin) private _Holder (from backbones_swin.blocks)",
        ),
        (
            "from backbones_swin import _model\n",
            True,
            "demo.py:1: imports another distribution's (backbones_swin) private _model (from backbones_swin)",
        ),
        (
            "import importlib\nimportlib.import_module('backbones_swin._model')\n",
            True,
            "demo.py:2: imports another distribution's (backbones_swin) private _model (from backbones_swin._model)",
        ),
        (
            "from backbones._loading import load\n",
            True,
            "demo.py:1: imports core's private _loading (from backbones._loading)",
        ),
        (
            "from backbones import Backbone, _registry\n",
            True,
            "demo.py:1: imports core's private _registry (from backbones)",
        ),
        (
            "import backbones.testing._parity\n",
            True,
            "demo.py:1: imports core's private _parity (from backbones.testing._parity)",
        ),
    ],
)
def test_private_imports_are_found(source: str, is_source: bool, expected: str) -> None:
    (problem,) = private_imports(source, "demo.py", frozenset({"backbones_demo"}), is_source)
    assert problem.startswith(expected + "; use its public API")


@pytest.mark.parametrize(
    "source",
    [
        "from backbones._loading import load\n",  # tests may use core internals (is_source=False below)
        "from backbones_demo._model import DemoBackbone\nimport backbones_demo._config\n",  # its own distribution
        "from backbones_swin.blocks import SwinBlock\nfrom backbones_swin import __version__\n",
        "from backbones.layers import drop_path\nfrom ._model import _Layer\nfrom torch import _C\n",
    ],
)
def test_public_and_own_imports_pass(source: str) -> None:
    assert private_imports(source, "demo.py", frozenset({"backbones_demo"}), is_source=False) == []
