"""The backbones command: list, info, extract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from backbones._cli import main
from backbones.testing import randomize_weights_
from backbones_toynet.model import ToyNetBackbone, ToyNetConfig

pytestmark = pytest.mark.usefixtures("registry")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    pixels = np.random.default_rng(0).integers(0, 255, size=(40, 50, 3), dtype=np.uint8)
    path = tmp_path / "cat.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    model = randomize_weights_(ToyNetBackbone(ToyNetConfig(widths=[4, 8, 16], out_indices=[1, 2, 3])))
    return model.save_pretrained(tmp_path / "toy")


def test_list_shows_types_distributions_and_failures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["model", "type", "distribution", "version", "aliases", "description"]
    assert any(line.split()[:4] == ["toynet", "<runtime>", "-", "toy-net"] for line in lines)


def test_info_of_type_and_checkpoint(capsys: pytest.CaptureFixture[str], checkpoint: Path) -> None:
    assert main(["info", "toynet"]) == 0
    out = capsys.readouterr().out
    # widths [8, 16, 32]: stem 3*8*9+8, then conv (no bias) + BatchNorm per stage: 224 + 592 + 1184 + 4672.
    assert out.splitlines()[0] == "toynet: ToyNetBackbone, 6,672 parameters (0.01 M)"
    assert "stage3  32        16      yes" in out
    assert main(["info", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[3:]]
    assert rows == [
        ["stem", "4", "2"],
        ["stage1", "4", "4", "yes"],
        ["stage2", "8", "8", "yes"],
        ["stage3", "16", "16", "yes"],
    ]


def test_extract_prints_saves_and_plots(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, image: Path, tmp_path: Path
) -> None:
    saved, plot = tmp_path / "maps.safetensors", tmp_path / "maps.png"
    code = main(
        [
            "extract",
            str(image),
            "--model",
            str(checkpoint),
            "--out-indices",
            "2",
            "3",
            "--size",
            "64",
            "--save",
            str(saved),
            "--plot",
            str(plot),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "preprocessing: RGB, resize to 64x64 (bilinear)" in out
    assert "stage2  8x8x8                      8" in out and "stage3  16x4x4                     16" in out
    maps = load_file(saved)
    assert {name: tuple(t.shape) for name, t in maps.items()} == {"stage2": (8, 8, 8), "stage3": (16, 4, 4)}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["extract", str(image), "--model", "toynet", "--size", "0"]) == 0
    out = capsys.readouterr().out
    assert "weights are random" in out and "stage3  32x3x4" in out


def test_errors_exit_2_with_a_message(capsys: pytest.CaptureFixture[str], checkpoint: Path, tmp_path: Path) -> None:
    assert main(["info", "nope"]) == 2
    assert "backbones info: error: unknown model_type 'nope'" in capsys.readouterr().err
    assert main(["extract", str(tmp_path / "missing.png"), "--model", str(checkpoint)]) == 2
    assert f"image {tmp_path / 'missing.png'} does not exist" in capsys.readouterr().err
    assert main(["extract", str(checkpoint / "config.json"), "--model", str(checkpoint)]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_extract_maps_match_the_model(checkpoint: Path, image: Path, tmp_path: Path) -> None:
    from backbones import AutoBackbone, ImageProcessor
    from backbones._cli import _read_image

    saved = tmp_path / "maps.safetensors"
    assert main(["extract", str(image), "--model", str(checkpoint), "--save", str(saved)]) == 0
    model = AutoBackbone.from_pretrained(checkpoint)
    with torch.no_grad():
        # ImageProcessor() is the documented default: RGB, 224x224 bilinear, ImageNet mean and std.
        expected = model(_read_image(image, ImageProcessor())).feature_maps
    for name, fmap in zip(model.out_features, expected):
        assert torch.equal(load_file(saved)[name], fmap[0])


def test_extract_uses_the_checkpoints_preprocessor_config(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, image: Path, tmp_path: Path
) -> None:
    from backbones import AutoBackbone, AutoImageProcessor

    config = {"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 36}, "crop_size": 32}
    (checkpoint / "preprocessor_config.json").write_text(json.dumps(config))
    saved = tmp_path / "maps.safetensors"
    assert main(["extract", str(image), "--model", str(checkpoint), "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    assert (
        "preprocessing: RGB, resize the shortest edge to 36 (bicubic), centre-crop 32x32, scale to [0, 1], "
        "normalise with mean (0.48145466, 0.4578275, 0.40821073) and std (0.26862954, 0.26130258, 0.27577711) "
        "(the checkpoint's preprocessor_config.json (BitImageProcessor))"
    ) in out
    with Image.open(image) as opened:
        inputs = AutoImageProcessor.from_pretrained(checkpoint)(opened, return_tensors="pt")
    with torch.no_grad():
        expected = AutoBackbone.from_pretrained(checkpoint)(**inputs).feature_maps
    for name, fmap in zip(["stage1", "stage2", "stage3"], expected):
        assert torch.equal(load_file(saved)[name], fmap[0])
    assert main(["extract", str(image), "--model", str(checkpoint), "--size", "48"]) == 0
    assert (
        "preprocessing: RGB, resize to 48x48 (bicubic), scale to [0, 1], normalise with mean (0.4814"
        in capsys.readouterr().out
    )
    (checkpoint / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "DeiTImageProcessor"}))
    assert main(["extract", str(image), "--model", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert (
        "preprocessing: RGB, resize to 224x224 (bilinear), scale to [0, 1], normalise with mean (0.485, 0.456, 0.406)"
        in out
    )
    assert "(backbones' defaults: the checkpoint's preprocessor_config.json is unusable: " in out
    assert "image_processor_type 'DeiTImageProcessor' is not supported" in out
