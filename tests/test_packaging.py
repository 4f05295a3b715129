"""Every distribution builds a wheel and an sdist with complete metadata, and the wheels install and work.

``python -m build --no-isolation`` (hatchling comes from the test environment: no network) builds core
and every ``plugins/<name>`` into one folder. The metadata of each wheel is read back as an index would
read it; then core, resnet, convnext and convnextv2 are installed from those wheels into a fresh virtual
environment, where ``backbones list`` must show exactly their model types and a ConvNeXt V2 runs.
"""

from __future__ import annotations

import concurrent.futures
import configparser
import email.parser
import glob
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import venv
import zipfile
from email.message import Message
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

PROJECTS = [ROOT / "core", *sorted(path.parent for path in ROOT.glob("plugins/[!_]*/pyproject.toml"))]
# Distributions that may depend on another of ours besides core (they reuse its modules).
BUILT_ON = {
    "backbones-beit": {"backbones-dinov2"},
    "backbones-convnextv2": {"backbones-convnext"},
    "backbones-dinat": {"backbones-nat"},
    "backbones-dinov2-with-registers": {"backbones-dinov2"},
    "backbones-dinov3-convnext": {"backbones-convnext"},
    "backbones-dinov3-vit": {"backbones-dinov2"},
    "backbones-hiera": {"backbones-dinov2"},
    "backbones-lw-detr-vit": {"backbones-vitdet", "backbones-dinov2"},
    "backbones-maskformer-swin": {"backbones-swin"},
    "backbones-pixio": {"backbones-dinov2"},
    "backbones-pp-lcnet": {"backbones-hgnet-v2"},
    "backbones-rf-detr-dinov2": {"backbones-dinov2"},
    "backbones-rt-detr-resnet": {"backbones-resnet"},
    "backbones-sapiens2": {"backbones-dinov3-vit", "backbones-dinov2"},
    "backbones-swinv2": {"backbones-swin"},
    "backbones-tipsv2": {"backbones-dinov2"},
    "backbones-vitdet": {"backbones-dinov2"},
    "backbones-vitpose-backbone": {"backbones-dinov2"},
}
INSTALLED = ["core", "resnet", "convnext", "convnextv2"]


def _torch_requirement() -> list[str]:
    """A local CPU wheel of torch when there is one (as tests/test_isolated_install.py); else this torch."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = sorted(glob.glob(f"/opt/wheels/torch-*+cpu-{tag}-{tag}-*.whl"))
    if wheels:
        return [wheels[-1]]
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}"]


def _project_name(project: Path) -> str:
    match = re.search(r'^name\s*=\s*"([^"]+)"', (project / "pyproject.toml").read_text(), re.MULTILINE)
    assert match, project
    return match.group(1)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")

    def build(project: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(out)]
        return subprocess.run([*command, str(project)], capture_output=True, text=True)

    # Each build is mostly interpreter start-ups: two at a time roughly halves the wall time.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for project, result in zip(PROJECTS, pool.map(build, PROJECTS)):
            assert result.returncode == 0, f"building {project} failed:\n{result.stdout}\n{result.stderr}"
    return out


def _wheel(dist_dir: Path, name: str) -> Path:
    wheels = sorted(dist_dir.glob(f"{_normalized(name)}-*-py3-none-any.whl"))
    assert len(wheels) == 1, f"expected one wheel of {name}, found {wheels}"
    return wheels[0]


def _read_dist_info(wheel: Path, filename: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (path,) = [item for item in archive.namelist() if item.endswith(f".dist-info/{filename}")]
        return archive.read(path).decode()


def _metadata(wheel: Path) -> Message:
    return email.parser.Parser().parsestr(_read_dist_info(wheel, "METADATA"))


@pytest.mark.parametrize("project", PROJECTS, ids=lambda path: path.name)
def test_wheel_metadata_is_complete(dist_dir: Path, project: Path) -> None:
    name = _project_name(project)
    wheel = _wheel(dist_dir, name)
    meta = _metadata(wheel)
    assert meta["Name"] == name
    assert Version(meta["Version"]) >= Version("0.1")
    assert meta["Summary"] and len(meta["Summary"]) > 20
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().lstrip().startswith(f"# {name}"), "the long description is not the README"
    classifiers = meta.get_all("Classifier") or []
    for expected in ["Development Status :: 3 - Alpha", "Programming Language :: Python :: 3", "Typing :: Typed"]:
        assert expected in classifiers
    # PEP 639: with a License-Expression, license classifiers are deprecated (and refused by PyPI).
    assert not [classifier for classifier in classifiers if classifier.startswith("License ::")]
    urls = dict(value.split(", ", 1) for value in meta.get_all("Project-URL") or [])
    assert sorted(urls) == ["Documentation", "Homepage", "Issues", "Source"]
    assert all(url.startswith("https://") for url in urls.values())
    assert urls["Source"].endswith(str(project.relative_to(ROOT)))

    requirements = [Requirement(value) for value in meta.get_all("Requires-Dist") or []]
    runtime = {_normalized(req.name): req for req in requirements if req.marker is None}
    assert "transformers" not in runtime and "torchvision" not in runtime
    assert ("timm" in runtime) == (name == "backbones-timm")
    assert "torch" in runtime
    if name == "backbones-core":
        assert not [key for key in runtime if key.startswith("backbones")]
    else:
        core = runtime["backbones_core"].specifier
        assert core.contains("0.1.0") and core.contains("0.1.9"), core
        assert not core.contains("0.2.0") and not core.contains("0.0.9"), core
        ours = {req.name for req in requirements if req.name.startswith("backbones") and req.name != "backbones-core"}
        assert ours <= BUILT_ON.get(name, set()), f"{name} depends on {ours}"
        for req in requirements:
            if req.name in ours:
                assert not req.specifier.contains("0.2.0") and req.specifier.contains("0.1.0"), req


@pytest.mark.parametrize("project", PROJECTS, ids=lambda path: path.name)
def test_wheel_contents_and_entry_points(dist_dir: Path, project: Path) -> None:
    name = _project_name(project)
    wheel = _wheel(dist_dir, name)
    package = "backbones" if name == "backbones-core" else _normalized(name)
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
    assert f"{package}/__init__.py" in files and f"{package}/py.typed" in files
    assert not [path for path in files if "/tests/" in path or path.startswith("tests/") or "__pycache__" in path]

    entry_points = configparser.ConfigParser(delimiters=("=",))
    entry_points.optionxform = str
    entry_points.read_string(_read_dist_info(wheel, "entry_points.txt"))
    if name == "backbones-core":
        assert sorted(entry_points.sections()) == ["backbones", "console_scripts"]
        assert dict(entry_points["console_scripts"]) == {"backbones": "backbones._cli:main"}
        # Core registers its necks (feature pyramids) the way a plugin registers a backbone.
        assert dict(entry_points["backbones"]) == {"necks": "backbones.necks"}
        assert "backbones/necks/backbones.toml" in files
        return
    assert entry_points.sections() == ["backbones"]
    ((entry_name, module),) = entry_points["backbones"].items()
    assert entry_name == project.name
    if name == "backbones-timm":  # a module with hooks: it also implements load_backbone_from_name
        assert module == f"{package}._plugin" and f"{package}/_plugin.py" in files
    else:  # a package with its manifest, which core reads without importing the package
        assert module == package and f"{package}/backbones.toml" in files


@pytest.mark.parametrize("project", PROJECTS, ids=lambda path: path.name)
def test_sdist_contains_the_sources(dist_dir: Path, project: Path) -> None:
    name = _project_name(project)
    sdists = sorted(dist_dir.glob(f"{_normalized(name)}-*.tar.gz"))
    assert len(sdists) == 1, sdists
    with tarfile.open(sdists[0]) as archive:
        members = archive.getnames()
    top = sdists[0].name.removesuffix(".tar.gz")
    package = "backbones" if name == "backbones-core" else _normalized(name)
    for expected in ["pyproject.toml", "README.md", "PKG-INFO", f"src/{package}/__init__.py"]:
        assert f"{top}/{expected}" in members, f"{sdists[0].name} lacks {expected}"
    sources = {path.relative_to(project).as_posix() for path in (project / "src").rglob("*.py")}
    assert sources <= {member.removeprefix(f"{top}/") for member in members}


# -- installing the built wheels ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel_env(dist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("wheels-venv")
    # No pip inside: this environment's pip installs into it (--python), which skips ensurepip.
    venv.create(home / "venv", with_pip=False)
    python = home / "venv" / "bin" / "python"
    # Our wheels by file name (never a same-named release from an index), torch as the isolated-install
    # test gets it, the other requirements (pydantic, pluggy, ...) from the package index. --no-compile:
    # byte-compiling torch's thousands of modules would take most of the time.
    wheels = [str(_wheel(dist_dir, "backbones-core" if name == "core" else f"backbones-{name}")) for name in INSTALLED]
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "install", "--no-compile", "--find-links", str(dist_dir), *_torch_requirement(), *wheels], check=True
    )
    return python


def _run(python: Path, *args: str) -> str:
    result = subprocess.run(
        [str(python), *args],
        capture_output=True,
        text=True,
        cwd=python.parent,
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_installed_wheels_list_exactly_their_model_types(wheel_env: Path) -> None:
    listing = subprocess.run(
        [str(wheel_env.parent / "backbones"), "list"], capture_output=True, text=True, check=True
    ).stdout
    assert "failed to load" not in listing and "conflict" not in listing, listing
    rows = [line.split()[:3] for line in listing.splitlines()[2:] if line.strip()]
    # Core's own model types (its necks) come with backbones-core.
    assert rows == [
        ["convnext", "backbones-convnext", "0.1.0"],
        ["convnextv2", "backbones-convnextv2", "0.1.0"],
        ["feature_pyramid", "backbones-core", "0.1.0"],
        ["resnet", "backbones-resnet", "0.1.0"],
        ["simple_feature_pyramid", "backbones-core", "0.1.0"],
    ]


def test_installed_wheels_run_a_convnextv2(wheel_env: Path) -> None:
    code = """
        import sys, torch, importlib.util
        import backbones_convnextv2
        from backbones import AutoBackbone, AutoBackboneConfig
        config = AutoBackboneConfig.for_model("convnextv2", hidden_sizes=[8, 16, 24], depths=[1, 1, 2], out_indices=[1, 2, 3])
        model = AutoBackbone.from_config(config).eval()
        with torch.no_grad():
            maps = model(torch.randn(2, 3, 64, 64)).feature_maps
        print(type(model).__name__, [tuple(fmap.shape) for fmap in maps], model.out_reductions)
        print(sorted(n for n in ("transformers", "timm", "torchvision") if importlib.util.find_spec(n)))
        print("site-packages" in backbones_convnextv2.__file__)
    """
    out = _run(wheel_env, "-c", textwrap.dedent(code)).splitlines()
    assert out == [
        "ConvNextV2Backbone [(2, 8, 16, 16), (2, 16, 8, 8), (2, 24, 4, 4)] [4, 8, 16]",
        "[]",
        "True",
    ]
