"""backbones.lazy: the lazy ``__getattr__`` of plugin packages."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from backbones.lazy import lazy_getattr, stub_exports


def test_lazy_getattr_imports_a_name_on_first_access(monkeypatch: pytest.MonkeyPatch) -> None:
    package = types.ModuleType("lazy_pkg")
    package.__path__ = []  # a package, so that relative names resolve against it
    target = types.ModuleType("lazy_pkg._impl")
    target.Thing = 42  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lazy_pkg", package)
    getattr_ = lazy_getattr("lazy_pkg", {"Thing": "._impl", "Missing": "._absent"})
    monkeypatch.setitem(sys.modules, "lazy_pkg._impl", target)
    assert getattr_("Thing") == 42
    with pytest.raises(AttributeError, match=r"^module 'lazy_pkg' has no attribute 'Other'$"):
        getattr_("Other")
    with pytest.raises(ModuleNotFoundError, match=r"lazy_pkg\._absent"):
        getattr_("Missing")


def test_a_plugin_package_resolves_its_names_lazily() -> None:
    import backbones_hgnet_v2

    assert backbones_hgnet_v2.HGNetV2Config.model_type == "hgnet_v2"
    assert backbones_hgnet_v2.VARIANTS["B0"]["stage_in_channels"] == [16, 64, 256, 512]
    with pytest.raises(AttributeError, match=r"^module 'backbones_hgnet_v2' has no attribute 'Nope'$"):
        backbones_hgnet_v2.Nope  # noqa: B018


def test_attach_stub_reads_the_public_names_from_the_stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package_dir = tmp_path / "stub_pkg"
    package_dir.mkdir()
    (package_dir / "__init__.py").write_text(
        "from backbones.lazy import attach_stub\n\n__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)\n"
    )
    (package_dir / "__init__.pyi").write_text(
        '"""Stub."""\n\nfrom typing import Any\n\nfrom ._impl import Thing as Thing\nfrom ._impl import helper\n'
        "from ._other import Other as Other\n"
    )
    (package_dir / "_impl.py").write_text("Thing = 42\nhelper = 1\n")
    (package_dir / "_other.py").write_text("Other = 'o'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "stub_pkg", raising=False)
    import stub_pkg  # type: ignore[import-not-found]

    assert stub_pkg.__all__ == ["Other", "Thing"]  # only the explicit re-exports ("X as X")
    assert "stub_pkg._impl" not in sys.modules
    assert "Thing" in dir(stub_pkg) and "attach_stub" in dir(stub_pkg)
    assert stub_pkg.Thing == 42 and stub_pkg.Other == "o"
    with pytest.raises(AttributeError, match=r"^module 'stub_pkg' has no attribute 'helper'$"):
        stub_pkg.helper  # noqa: B018
    for name in ("stub_pkg", "stub_pkg._impl", "stub_pkg._other"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_stub_errors_say_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"__init__\.pyi not found: .* 'from \._model import MyBackbone as MyBackbone'"
    ):
        stub_exports(tmp_path / "__init__.pyi")
    (tmp_path / "empty.pyi").write_text("from ._model import Backbone\n")
    with pytest.raises(ValueError, match=r"empty\.pyi re-exports no name: write each public name as"):
        stub_exports(tmp_path / "empty.pyi")
    (tmp_path / "twice.pyi").write_text("from ._a import X as X\nfrom ._b import X as X\n")
    with pytest.raises(ValueError, match=r"twice\.pyi: 'X' is re-exported from both \._a and \._b"):
        stub_exports(tmp_path / "twice.pyi")


def test_every_plugin_declares_its_names_in_a_stub() -> None:
    """Each plugin's stub and ``__all__`` agree, and every name it declares resolves."""
    import importlib
    from importlib.metadata import entry_points

    packages = sorted({entry.value.split(".")[0] for entry in entry_points(group="backbones")} - {"backbones"})
    assert len(packages) >= 30
    for package_name in packages:
        package = importlib.import_module(package_name)
        exports = stub_exports(Path(package.__file__).with_suffix(".pyi"))  # type: ignore[arg-type]
        assert set(exports) <= set(package.__all__), package_name
        for name in package.__all__:
            assert getattr(package, name) is not None, (package_name, name)
