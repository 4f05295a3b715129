"""Real installs into a fresh virtual environment: the slim image and the third-party plugin.

One venv gets only backbones-core, backbones-swin and the third-party backbones-toynet (built from
tests/third_party), with a CPU build of torch. In it: transformers, timm and torchvision are absent, a
checkpoint saved by transformers' SwinBackbone (made here, in the test environment) loads with the same
feature maps, and ToyNet is discovered with no change to core.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from backbones.testing import randomize_weights_

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _torch_requirement() -> list[str]:
    """Prefer a local CPU wheel of torch (small, no CUDA); else the same torch as this environment."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = sorted(glob.glob(f"/opt/wheels/torch-*+cpu-{tag}-{tag}-*.whl"))
    return [wheels[-1]] if wheels else [f"torch=={torch.__version__.split('+')[0]}"]


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


@pytest.fixture(scope="module")
def slim_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib_missing("backbones_swin"):
        pytest.fail("backbones-swin must be installed in the test environment (python3 dev.py setup)")
    home = tmp_path_factory.mktemp("slim")
    venv.create(home / "venv", with_pip=True)
    python = home / "venv" / "bin" / "python"
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "install", *_torch_requirement()], check=True)
    projects = [ROOT / "core", ROOT / "plugins" / "swin", ROOT / "tests" / "third_party" / "backbones-toynet"]
    subprocess.run([*pip, "install", *map(str, projects)], check=True)
    return python


def _run(python: Path, code: str, **env: str) -> str:
    result = subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_slim_environment_has_no_oracles(slim_env: Path) -> None:
    out = _run(
        slim_env,
        """
        import importlib.util, importlib.metadata as md
        print(sorted(n for n in ("transformers", "timm", "torchvision") if importlib.util.find_spec(n)))
        print(sorted(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].startswith("backbones")))
    """,
    )
    assert out.splitlines() == ["[]", "['backbones-core', 'backbones-swin', 'backbones-toynet']"]


def test_transformers_swin_checkpoint_loads_with_same_maps(slim_env: Path, tmp_path: Path) -> None:
    from transformers import SwinBackbone, SwinConfig

    torch.manual_seed(0)
    config = SwinConfig(
        embed_dim=16, depths=[1, 2, 1], num_heads=[2, 2, 4], window_size=4, image_size=64, out_indices=[0, 1, 2, 3]
    )
    reference = randomize_weights_(SwinBackbone(config)).eval()
    reference.save_pretrained(tmp_path / "ckpt")
    pixels = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference(pixels).feature_maps
    save_file(
        {"pixels": pixels, **{f"map{i}": fmap.contiguous() for i, fmap in enumerate(expected)}},
        tmp_path / "expected.safetensors",
    )
    out = _run(
        slim_env,
        f"""
        import sys, json
        from safetensors.torch import load_file
        from backbones import AutoBackbone
        data = load_file({str(tmp_path / "expected.safetensors")!r})
        model, report = AutoBackbone.from_pretrained({str(tmp_path / "ckpt")!r}, output_loading_info=True)
        maps = model(data["pixels"]).feature_maps
        diffs = [(m - data[f"map{{i}}"]).abs().max().item() for i, m in enumerate(maps)]
        print(json.dumps({{"type": type(model).__name__, "diffs": diffs, "missing": report.missing_keys,
                          "unused": report.unused_keys, "transformers": "transformers" in sys.modules}}))
    """,
    )
    result = json.loads(out)
    assert result["type"] == "SwinBackbone"
    assert len(result["diffs"]) == 4 and max(result["diffs"]) <= 1e-4, result["diffs"]
    assert result["missing"] == [] and result["transformers"] is False
    assert result["unused"] == ["swin.layernorm.bias", "swin.layernorm.weight"]


def test_third_party_plugin_is_discovered(slim_env: Path) -> None:
    listing = subprocess.run(
        [str(slim_env.parent / "backbones"), "list"], capture_output=True, text=True, check=True
    ).stdout
    rows = {line.split()[0]: line.split() for line in listing.splitlines()[2:] if line.strip()}
    assert rows["toynet"][:4] == ["toynet", "backbones-toynet", "1.2.3", "toy-net"]
    assert rows["swin"][:2] == ["swin", "backbones-swin"]
    out = _run(
        slim_env,
        """
        import torch
        from backbones import AutoBackbone, AutoBackboneConfig
        model = AutoBackbone.from_config(AutoBackboneConfig.for_model("toy-net", widths=[4, 8], out_indices=[1, 2]))
        print([tuple(f.shape) for f in model(torch.zeros(1, 3, 32, 32)).feature_maps], type(model).__module__)
    """,
    )
    assert out.strip() == "[(1, 4, 8, 8), (1, 8, 4, 4)] backbones_toynet.model"
