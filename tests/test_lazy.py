"""backbones.lazy: the lazy ``__getattr__`` of plugin packages."""

from __future__ import annotations

import sys
import types

import pytest

from backbones.lazy import lazy_getattr


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
