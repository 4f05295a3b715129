"""The documentation site builds with no warning, its generated pages match the code, and every hook is
documented and tested.

``mkdocs build --strict`` runs once per session in a subprocess (about 10 s); docs/_hooks.py generates a
page per backbone whose stage table is read from the model, and the tests compare it with a model built
here.
"""

from __future__ import annotations

import doctest
import html
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import backbones
from backbones import AutoBackbone, AutoBackboneConfig, hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert "WARNING" not in result.stderr, result.stderr
    return site_dir


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def _generated_stage_rows(site: Path, model_type: str) -> list[tuple[int, str, int, int]]:
    page = (site / "backbones" / model_type / "index.html").read_text(encoding="utf-8")
    heading = page.index('id="stage-table-generated"')
    table = page[page.index("<tbody>", heading) : page.index("</tbody>", heading)]
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", table, re.DOTALL):
        index, stage, channels, stride = (_text(cell) for cell in re.findall(r"<td>(.*?)</td>", row, re.DOTALL))
        rows.append((int(index), stage, int(channels), int(stride)))
    return rows


def _plugin_model_types() -> list[str]:
    """Model types registered by this repository's plugins (not by a third-party plugin installed here)."""
    names = {
        match.group(1)
        for pyproject in ROOT.glob("plugins/[!_]*/pyproject.toml")
        if (match := re.search(r'^name\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE))
    }
    return [entry.model_type for entry in backbones.get_registry().registrations() if entry.distribution in names]


@pytest.mark.parametrize("model_type", ["resnet", "swin", "dinov2", "focalnet"])
def test_generated_stage_table_matches_the_model(site: Path, model_type: str) -> None:
    model = AutoBackbone.from_config(AutoBackboneConfig.for_model(model_type))
    expected = [
        (index, name, channels, stride)
        for index, (name, channels, stride) in enumerate(zip(model.stage_names, model.num_features, model.reductions))
    ]
    assert _generated_stage_rows(site, model_type) == expected


def test_every_backbone_has_a_page_in_the_nav(site: Path) -> None:
    model_types = _plugin_model_types()
    assert len(model_types) >= 14
    index = (site / "backbones" / "index.html").read_text(encoding="utf-8")
    home = (site / "index.html").read_text(encoding="utf-8")
    for model_type in model_types:
        page = site / "backbones" / model_type / "index.html"
        assert page.is_file(), f"no generated page for {model_type}"
        assert 'id="stage-table-generated"' in page.read_text(encoding="utf-8")
        assert f'href="{model_type}/"' in index, f"backbones/index.md does not link {model_type}"
        assert f'href="backbones/{model_type}/"' in home, f"the nav has no entry for {model_type}"
    # A README link to another plugin's README becomes a link to that plugin's page.
    assert 'href="../nat/#config-fields"' in (site / "backbones" / "dinat" / "index.html").read_text()


def test_site_has_every_page_and_the_api_reference(site: Path) -> None:
    for page in ["getting-started", "concepts", "plugins", "cli", "benchmarks", "security", "preprocessing", "loading"]:
        assert (site / page / "index.html").is_file(), page
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ["AutoBackbone", "AutoBackboneConfig", "Backbone", "BackboneConfig", "BackboneOutput", "load_backbone"]:
        assert f'id="backbones.{name}"' in api, name
    for name in ["testing.BackboneConformance", "activations", "validation", "hookspecs"]:
        assert f'id="backbones.{name}' in api, name
    assert not (site / "_hooks.py").exists()


def test_backbone_constructor_example_runs() -> None:
    """The example on :class:`backbones.Backbone`, the one place the constructor is documented for every
    plugin's class, runs as written and prints what it shows."""
    (test,) = doctest.DocTestFinder(recurse=False).find(backbones.Backbone, "backbones.Backbone", globs={})
    runner = doctest.DocTestRunner(verbose=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda text: pytest.fail(text))
    assert runner.summarize(verbose=False) == doctest.TestResults(failed=0, attempted=9)


# -- hooks: documented with their signature, and exercised by a test ------------------------------------------


def _hookspecs() -> list[tuple[str, str]]:
    """``(name, "name(arg, ...)")`` of every function marked with ``@hookspec`` in backbones.hookspecs."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    specs = [
        (name, f"{name}({', '.join(inspect.signature(function).parameters)})")
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(function, marker)
    ]
    assert {name for name, _ in specs} >= {"register_backbones", "load_backbone_from_name"}
    return specs


@pytest.mark.parametrize("name, signature", _hookspecs())
def test_hook_is_documented_with_its_signature(name: str, signature: str, site: Path) -> None:
    guide = (DOCS / "plugins.md").read_text(encoding="utf-8")
    assert signature in guide, f"docs/plugins.md does not document the hook {signature}"
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert f'id="backbones.hookspecs.{name}"' in api, f"the API reference does not render the hookspec {name}"


@pytest.mark.parametrize("name, signature", _hookspecs())
def test_hook_is_exercised_by_a_test(name: str, signature: str) -> None:
    """Some test module or test fixture plugin implements the hook (``def name(``) and so runs it."""
    files = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("plugins/[!_]*/tests/**/*.py")]
    implemented = re.compile(rf"^\s*def {re.escape(name)}\(", re.MULTILINE)
    users = [path for path in files if implemented.search(path.read_text(encoding="utf-8"))]
    assert users, f"no test under tests/ or plugins/*/tests implements the hook {name}"
