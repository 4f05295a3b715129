"""Tests of backbones-dinat: the conformance kit, parity with transformers 4.53.3's DiNAT, a default-size check.

The oracle harness (transformers 4.53.3 in ``.venvs/`` with brute-force natten kernels) belongs to
backbones-nat's tests, which this distribution's code depends on too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from backbones import AutoBackbone
from backbones.testing import ConfigErrors, assert_close_maps, assert_parity, randomize_weights_
from backbones_dinat import DinatBackbone, DinatConfig
from backbones_nat import NatBackbone, NatConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "nat" / "tests"))

from nat_oracle import (
    CLASSIFIER_LAYOUT,
    TESTS,
    NatFamilyConformance,
    NatFamilyRecordedParity,
    fake_natten,
    subprocess_environment,
)

# Two stages; at 32 px the second stage's 4 x 4 map is far smaller than its 3 x 5 dilated window.
TINY: dict[str, Any] = {
    "embed_dim": 16,
    "depths": [2, 2],
    "num_heads": [2, 4],
    "kernel_size": 3,
    "dilations": [[1, 2], [5, 1]],
    "drop_path_rate": 0.0,
}
# Three stages for the oracle. At 64 px the maps are 16, 8 and 4 wide: stage 1 fits dilation 4
# (window 12); stage 2 pads for dilation 16 (window 48, dilation twice the map); stage 3 pads for 3.
SMALL: dict[str, Any] = {**TINY, "depths": [2, 2, 1], "num_heads": [2, 2, 4], "dilations": [[1, 4], [2, 16], [3]]}
# Kernel 5; dilations 2 then 3: at 64 px stage 1 (16 wide) fits window 10, stage 2 (8 wide) pads to 15.
KERNEL5: dict[str, Any] = {**TINY, "depths": [1, 2], "kernel_size": 5, "dilations": [[2], [1, 3]]}
CLASSIFIER: dict[str, Any] = {**SMALL, **CLASSIFIER_LAYOUT, "dilations": [[1, 3], [2], [1]], "num_labels": 4}


class TestDinatConformance(NatFamilyConformance):
    config_class = DinatConfig
    config = TINY


# -- parity with transformers 4.53.3 --------------------------------------------------------------


class TestDinatRecordedParity(NatFamilyRecordedParity):
    backbone_class = DinatBackbone
    small = SMALL
    classifier = CLASSIFIER
    saved_out_indices = (1, 3)
    extra_cases = (
        {
            "name": "kernel5",
            "class": "DinatBackbone",
            "config": {**KERNEL5, "out_indices": [0, 1, 2]},
            "seed": 6,
            "inputs": [[2, 64, 64, 4], [1, 72, 44, 5]],
        },
    )
    classifier_fields = {"dilations": CLASSIFIER["dilations"], "layer_scale_init_value": 0.5}
    # The last layer of each stage: dilation 4 on 16 x 16, dilation 16 on 8 x 8 padded to 48 x 48,
    # dilation 3 on 4 x 4 padded to 9 x 9.
    attention_shapes = ((2, 2, 16, 16, 9), (2, 2, 48, 48, 9), (2, 4, 9, 9, 9))
    task_out_indices = (0, 1, 3)

    def test_dilations_are_read_and_written(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        recording = self.recording(tmp_path_factory)
        assert AutoBackbone.from_pretrained(recording / "backbone").config.dilations == SMALL["dilations"]
        assert json.loads((recording / "ours" / "config.json").read_text())["dilations"] == SMALL["dilations"]

    def test_kernel5_checkpoint_parity(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        ours, report = AutoBackbone.from_pretrained(
            self.recording(tmp_path_factory) / "kernel5", output_loading_info=True
        )
        assert report.clean, str(report)
        assert ours.out_indices == [0, 1, 2]
        expected = self.expected(tmp_path_factory, "kernel5")
        for index in range(2):
            with torch.no_grad():
                maps = ours(expected[f"pixels.{index}"]).feature_maps
            assert_parity(maps, self.maps(expected, index))


@pytest.mark.oracle
def test_transformers_5_checkpoints_load_both_ways(tmp_path: Path) -> None:
    """transformers 5.x keeps DiNAT's on-disk format (its attention is not usable as an oracle: it needs
    natten's removed kernels). Checked with this environment's transformers and the fake natten: its
    backbone and task checkpoints load here with the expected reports, and ours load there cleanly."""
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("needs transformers 5 in the test environment")
    ours = randomize_weights_(DinatBackbone(DinatConfig(out_indices=[0, 2], **CLASSIFIER)), seed=13)
    ours.save_pretrained(tmp_path / "ours")
    code = f"""
        import json, torch
        from transformers import DinatBackbone, DinatConfig, DinatForImageClassification
        config = dict({CLASSIFIER!r})
        DinatBackbone(DinatConfig(**config, out_indices=[1, 3])).save_pretrained({str(tmp_path / "backbone")!r})
        DinatForImageClassification(DinatConfig(**config)).save_pretrained({str(tmp_path / "classifier")!r})
        model, info = DinatBackbone.from_pretrained({str(tmp_path / "ours")!r}, output_loading_info=True)
        print(json.dumps({{key: sorted(map(str, value)) for key, value in info.items()}}))
    """
    environment = subprocess_environment(fake_natten(tmp_path / "natten"), TESTS)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    backbone, report = AutoBackbone.from_pretrained(tmp_path / "backbone", output_loading_info=True)
    assert report.clean, str(report)
    assert backbone.out_features == ["stage1", "stage3"] and backbone.config.dilations == CLASSIFIER["dilations"]
    saved = load_file(tmp_path / "backbone" / "model.safetensors")
    state = backbone.state_dict()
    assert sorted(saved) == sorted(state) and all(torch.equal(saved[key], state[key]) for key in saved)
    _, report = AutoBackbone.from_pretrained(tmp_path / "classifier", output_loading_info=True)
    assert report.prefix == "'dinat.' removed"
    assert report.missing_keys == ["hidden_states_norms.stage3.bias", "hidden_states_norms.stage3.weight"]
    # The classifier's head and final norm, which the recorded parity declares for every NAT-family task checkpoint.
    assert report.unused_keys == sorted(TestDinatRecordedParity.task_unused_keys)


# -- model behaviour ------------------------------------------------------------------------------


def test_dinat_reuses_nat_layers_with_its_dilations() -> None:
    model = DinatBackbone(DinatConfig(**SMALL))
    assert isinstance(model, NatBackbone)
    dilations = [[layer.attention.self.dilation for layer in level.layers] for level in model.encoder.levels]
    assert dilations == SMALL["dilations"]
    windows = [[layer.window for layer in level.layers] for level in model.encoder.levels]
    assert windows == [[3, 12], [6, 48], [9]]


def test_all_ones_dilations_equal_nat(tmp_path: Path) -> None:
    # With dilation 1 everywhere DiNAT is NAT: the same checkpoint gives the same maps.
    config = {key: value for key, value in SMALL.items() if key != "dilations"}
    dinat = randomize_weights_(DinatBackbone(DinatConfig(**config, dilations=[[1, 1], [1, 1], [1]]))).eval()
    nat = NatBackbone(NatConfig(**config)).eval()
    nat.load_state_dict(dinat.state_dict())
    pixels = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        assert_close_maps(dinat(pixels).feature_maps, nat(pixels).feature_maps, atol=0.0)


# -- config ---------------------------------------------------------------------------------------


class TestDinatConfigErrors(ConfigErrors):
    config_class = DinatConfig
    config = TINY
    errors = {
        "dilations_per_stage": (
            {"dilations": [[1, 2]]},
            "dilations has 1 entries but depths has 2; give dilations one list per stage",
        ),
        "dilations_per_layer": (
            {"dilations": [[1, 2], [1]]},
            r"dilations\[1\] has 1 entries but depths\[1\] = 2; give one dilation per layer",
        ),
        "zero_dilation": ({"dilations": [[1, 2], [1, 0]]}, r"dilations\[1\]\[1\]=0 must be a positive integer"),
        "even_kernel": ({"kernel_size": 4}, "kernel_size must be odd"),
        "patch_size": ({"patch_size": 8}, "patch_size must be 4"),
    }


def test_config_defaults_are_dinat_mini() -> None:
    config = DinatConfig()
    assert config.dilations == [[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2], [1, 1, 1, 1, 1]]
    assert config.layer_dilations == config.dilations
    assert (config.embed_dim, config.depths, config.num_heads, config.kernel_size) == (
        64,
        [3, 4, 6, 5],
        [2, 4, 8, 16],
        7,
    )
    assert config.to_dict()["model_type"] == "dinat"


def test_nat_config_is_refused_for_dinat_checkpoints(tmp_path: Path) -> None:
    DinatConfig(**TINY).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="NatConfig is for model_type 'nat', but the config says 'dinat'"):
        NatConfig.from_pretrained(tmp_path)
