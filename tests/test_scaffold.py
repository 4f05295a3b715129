"""``backbones new-plugin``: the name and folder checks, the files written, and, for each family, a generated
plugin that passes its own tests in a fresh environment next to core.

The fresh environment is cheap: a virtual environment whose only packages of this project are backbones-core
(built and installed from core/, so the templates come from core's wheel, not from the source tree) and the
generated plugin; every third-party package (torch, pytest, onnx, ...) is seen through a ``.pth`` file
pointing at a folder of links to the test environment's site-packages, minus this project's distributions.
Nothing is downloaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import backbones
from backbones import BackboneError
from backbones._cli import main
from backbones._manifest import read_manifest
from backbones._scaffold import FAMILIES, new_plugin
from backbones.testing import BackboneConformance

ROOT = Path(__file__).resolve().parent.parent

EXPECTED_FILES = [
    "README.md",
    "pyproject.toml",
    "src/backbones_foo_net/__init__.py",
    "src/backbones_foo_net/__init__.pyi",
    "src/backbones_foo_net/_config.py",
    "src/backbones_foo_net/_model.py",
    "src/backbones_foo_net/backbones.toml",
    "src/backbones_foo_net/py.typed",
    "tests/test_foo_net.py",
    "tests/test_foo_net_parity.py",
]
NAME_RULE = (
    "it becomes the model type, the distribution backbones-<name> and the package backbones_<name>, so use "
    "lowercase letters and digits, starting with a letter, in parts joined by single '-' or '_' (e.g. 'foonet' or "
    "'foo-net'), at most 64 characters"
)


def _files(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_command_writes_a_complete_plugin(tmp_path: Path, family: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "backbones-foo-net"
    assert main(["new-plugin", "foo-net", "--family", family, "--dir", str(target)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote a {family} plugin, backbones-foo-net, to {target}:\n")
    assert _files(target) == EXPECTED_FILES
    texts = {name: (target / name).read_text() for name in EXPECTED_FILES}
    assert not [name for name, text in texts.items() if "${" in text], "a template placeholder was left unfilled"
    pyproject = texts["pyproject.toml"]
    assert 'name = "backbones-foo-net"' in pyproject
    assert '[project.entry-points.backbones]\nfoo-net = "backbones_foo_net"' in pyproject
    assert '"backbones-core>=0.1,<0.2"' in pyproject and 'packages = ["src/backbones_foo_net"]' in pyproject
    manifest = read_manifest(target / "src/backbones_foo_net/backbones.toml")
    assert manifest.plugin_api == backbones.PLUGIN_API_VERSION
    assert manifest.backbones == (
        {
            "model_type": "foo-net",
            "config": "backbones_foo_net._config:FooNetConfig",
            "model": "backbones_foo_net._model:FooNetBackbone",
            "description": f"foo-net ({FAMILIES[family].description}; describe the paper here)",
            "image_processor": FAMILIES[family].processor,
        },
    )
    assert 'model_type: ClassVar[str] = "foo-net"' in texts["src/backbones_foo_net/_config.py"]
    assert "class FooNetBackbone(Backbone):" in texts["src/backbones_foo_net/_model.py"]
    assert "class TestFooNetConformance(BackboneConformance):" in texts["tests/test_foo_net.py"]
    parity = texts["tests/test_foo_net_parity.py"]
    assert "A SKELETON TO FILL IN, NOT A CHECK YET" in parity and "REFERENCE_READY = False" in parity
    assert texts["README.md"].startswith("# backbones-foo-net\n")
    for name, text in texts.items():
        if name.endswith(".py"):
            compile(text, name, "exec")
    # The house lint holds for what the command writes.
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(ROOT / "pyproject.toml"), "--no-cache", str(target)],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = [sys.executable, "-m", "ruff", "format", "--check", "--config", str(ROOT / "pyproject.toml")]
    formatting = subprocess.run([*fmt, "--no-cache", str(target)], capture_output=True, text=True)
    assert formatting.returncode == 0, formatting.stdout + formatting.stderr


def test_the_default_folder_and_the_metadata_of_this_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert new_plugin("bar_v2") == [Path(name.replace("foo_net", "bar_v2")) for name in _order()]
    outside = (tmp_path / "backbones-bar-v2" / "pyproject.toml").read_text()
    assert 'Source = "https://example.org/backbones-bar-v2/source"' in outside
    assert 'bar_v2 = "backbones_bar_v2"' in outside
    # In plugins/<name> of a backbones checkout, the plugin gets this project's metadata.
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "pyproject.toml").write_text('[project]\nname = "backbones-core"\n')
    new_plugin("baz", tmp_path / "plugins" / "baz", family="vit")
    inside = (tmp_path / "plugins" / "baz" / "pyproject.toml").read_text()
    assert 'Source = "https://github.com/backbones-dev/backbones/tree/main/plugins/baz"' in inside
    assert 'authors = [{ name = "backbones developers" }]' in inside


def _order() -> list[str]:
    """The files in the order new_plugin reports them: the family's, then the common ones, then py.typed."""
    return [
        "src/backbones_foo_net/_config.py",
        "src/backbones_foo_net/_model.py",
        "pyproject.toml",
        "README.md",
        "src/backbones_foo_net/__init__.py",
        "src/backbones_foo_net/__init__.pyi",
        "src/backbones_foo_net/backbones.toml",
        "tests/test_foo_net.py",
        "tests/test_foo_net_parity.py",
        "src/backbones_foo_net/py.typed",
    ]


@pytest.mark.parametrize("name", ["Foo", "foo net", "2net", "foo--net", "foo-", "_foo", "foo.net", "", "a" * 65])
def test_a_bad_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(BackboneError) as caught:
        new_plugin(name, tmp_path / "out")
    assert str(caught.value) == f"plugin name {name!r} is not usable: {NAME_RULE}"
    assert not (tmp_path / "out").exists()


def test_the_project_names_and_unknown_families_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match=r"^plugin name 'core' is taken: backbones-core is this project's own"):
        new_plugin("core", tmp_path / "core")
    with pytest.raises(BackboneError, match=r"^unknown family 'rnn'; choose one of cnn, vit, hierarchical$"):
        new_plugin("foo", tmp_path / "foo", family="rnn")
    with pytest.raises(SystemExit) as caught:
        main(["new-plugin", "foo", "--family", "rnn"])
    assert caught.value.code == 2


def test_an_existing_folder_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert main(["new-plugin", "foo", "--dir", str(target)]) == 2
    assert capsys.readouterr().err == (
        f"backbones new-plugin: error: {target} already exists; new-plugin never overwrites a folder: choose another "
        "--dir or remove it\n"
    )
    assert _files(target) == ["keep.txt"]


# -- the generated plugin passes its own tests, installed next to core in a fresh environment -----------------


def _third_party_packages(home: Path) -> Path:
    """A folder of links to the test environment's site-packages, without this project's distributions."""
    view = home / "site"
    view.mkdir()
    ours = re.compile(r"^(backbones|_backbones|__editable__|_editable_impl_backbones)|\.pth$")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not ours.search(entry.name):
            (view / entry.name).symlink_to(entry)
    return view


@pytest.fixture
def fresh_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment holding backbones-core (built from core/) and no plugin."""
    home = tmp_path_factory.mktemp("scaffold-env")
    venv.create(home / "venv", with_pip=False)
    python = home / "venv" / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "third_party.pth").write_text(str(_third_party_packages(home)) + "\n")
    _pip_install(python, ROOT / "core")
    return python


def _pip_install(python: Path, project: Path) -> None:
    command = [str(python), "-m", "pip", "--disable-pip-version-check", "--quiet", "install"]
    command += ["--no-deps", "--no-build-isolation", "--no-index", str(project)]
    subprocess.run(command, check=True, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_generated_plugin_passes_its_own_tests(fresh_env: Path, tmp_path: Path, family: str) -> None:
    bin_dir = fresh_env.parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    for name in ("BACKBONES_DISABLE_PLUGIN_AUTOLOAD", "BACKBONES_DISABLE_PLUGINS", "PYTHONPATH"):
        env.pop(name, None)
    target = tmp_path / f"backbones-new-{family}"
    # The installed core's command writes it: the templates ship in core's wheel.
    subprocess.run(
        [str(bin_dir / "backbones"), "new-plugin", f"new-{family}", "--family", family, "--dir", str(target)],
        check=True,
        env=env,
        capture_output=True,
    )
    _pip_install(fresh_env, target)
    listing = subprocess.run([str(bin_dir / "backbones"), "list"], capture_output=True, text=True, env=env, check=True)
    # Core's own model types (its necks) are listed too; the generated plugin is the only other distribution.
    rows = [line.split()[:2] for line in listing.stdout.splitlines()[2:]]
    assert [row for row in rows if row[1] != "backbones-core"] == [[f"new-{family}", f"backbones-new-{family}"]], (
        listing.stdout
    )
    assert sorted(row[0] for row in rows if row[1] == "backbones-core") == ["feature_pyramid", "simple_feature_pyramid"]
    result = subprocess.run(
        [str(fresh_env), "-m", "pytest", "tests", "-q", "-rs", "-p", "no:randomly", "-p", "no:cacheprovider"],
        cwd=target,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    summary = result.stdout.strip().splitlines()[-1]

    class Undeclared(BackboneConformance):
        """Declares nothing optional, as the generated test class: the kit drops the checks needing a declaration."""

    kit = len([name for name in dir(Undeclared) if name.startswith("test_") and callable(getattr(Undeclared, name))])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    # Every check of the kit and the two of the module pass, except LoRA's (the template declares no
    # lora_target_modules: its names are the author's choice); the parity skeleton's two are skipped, saying why.
    assert re.fullmatch(rf"{kit + 1} passed, 3 skipped in .*", summary), summary
    assert f"New{family.capitalize()}Backbone declares no lora_target_modules" in result.stdout
    assert (
        "parity skeleton: not pointed at a reference implementation yet (fill in reference_feature_maps and set "
        f"REFERENCE_READY in tests/test_new_{family}_parity.py)"
    ) in result.stdout
    mypy = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental"]
    typed = subprocess.run(
        [*mypy, str(target / "src" / f"backbones_new_{family}"), str(target / "tests")],
        capture_output=True,
        text=True,
        env={**env, "MYPYPATH": str(target / "src")},
    )
    assert typed.returncode == 0, typed.stdout
