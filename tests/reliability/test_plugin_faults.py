"""Broken plugins installed beside working ones: the CLI names them, the working types still load.

tests/test_registry.py covers attribution of each fault to its distribution; this adds what a user sees.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_support import assert_state_equal, save_tiny_resnet

import backbones
from backbones import AutoBackbone, PluginError
from backbones._cli import main
from backbones._registry import get_registry, reset_registry

PLUGIN_API_VERSION = getattr(backbones, "PLUGIN_API_VERSION", "")

BROKEN = {
    "backbones-fakeimport": ("fake_import", "raise ImportError('needs libfoo.so')\n"),
    "backbones-fakehook": (
        "fake_hook",
        "from backbones import hookimpl\n\n@hookimpl\ndef register_backbones(register):\n    raise RuntimeError('hook exploded')\n",
    ),
    "backbones-fakespec": (
        "fake_spec",
        "from backbones import hookimpl\n\n@hookimpl\ndef register_backbones(register):\n    register('fakespec', config=42, model='a:B')\n",
    ),
    "backbones-fakedupe": (
        "fake_dupe",
        "from backbones import hookimpl\n\n@hookimpl\ndef register_backbones(register):\n"
        "    register('resnet', config='a:B', model='a:C')\n",
    ),
}


@pytest.fixture
def broken_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    site.mkdir()
    for dist, (module, source) in BROKEN.items():
        # Each declares the plugin API it was built for (if this core asks for one), so only its own fault shows.
        declared = f"BACKBONES_PLUGIN_API = {PLUGIN_API_VERSION!r}\n" if PLUGIN_API_VERSION else ""
        (site / f"{module}.py").write_text(declared + textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[backbones]\n{module} = {module}\n")
    monkeypatch.syspath_prepend(str(site))
    for name in ("BACKBONES_DISABLE_PLUGIN_AUTOLOAD", "BACKBONES_DISABLE_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    reset_registry()
    yield site
    reset_registry()
    for name in [name for name in sys.modules if name.startswith("fake_")]:
        del sys.modules[name]


def test_cli_list_names_each_failing_distribution(broken_site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "plugins that failed to load:" in out
    assert "  fake_import (backbones-fakeimport 0.1): ImportError: needs libfoo.so" in out
    assert "  fake_hook (backbones-fakehook 0.1): RuntimeError: hook exploded" in out
    assert "  fake_spec (backbones-fakespec 0.1): PluginError: config of 'fakespec' must be a class" in out
    assert (
        "conflict: model type 'resnet' is provided by backbones-fakedupe and backbones-resnet; uninstall all but one"
        in out
    )
    assert "\nswin " in out and "backbones-swin" in out, "working plugins are still listed"


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Saved before the broken plugins are installed (afterwards 'resnet' is claimed twice)."""
    directory = tmp_path_factory.mktemp("resnet")
    save_tiny_resnet(directory, seed=5)
    return directory


def test_working_types_load_while_others_are_broken(resnet_checkpoint: Path, broken_site: Path, tmp_path: Path) -> None:
    registry = get_registry()
    assert {failure.distribution for failure in registry.failures} >= {
        "backbones-fakeimport",
        "backbones-fakehook",
        "backbones-fakespec",
    }
    # The duplicated type is unusable until one is uninstalled, and says so by name ...
    with pytest.raises(
        PluginError,
        match=r"model type 'resnet' is provided by several distributions: backbones-fakedupe and backbones-resnet",
    ):
        AutoBackbone.from_pretrained(resnet_checkpoint)
    # ... while every other type loads as usual.
    from backbones import AutoBackboneConfig

    config = AutoBackboneConfig.for_model("convnext", hidden_sizes=[4, 8], depths=[1, 1])
    model = AutoBackbone.from_config(config)
    model.save_pretrained(tmp_path / "convnext")
    assert_state_equal(AutoBackbone.from_pretrained(tmp_path / "convnext"), model.state_dict())
