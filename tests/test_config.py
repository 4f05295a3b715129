"""BackboneConfig and AutoBackboneConfig: transformers' config.json format, alignment on assignment."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from backbones import AutoBackbone, AutoBackboneConfig, ConfigError, UnknownModelTypeError
from backbones_toynet.model import ToyNetConfig

pytestmark = pytest.mark.usefixtures("registry")


def test_defaults_select_the_last_stage() -> None:
    config = ToyNetConfig()
    assert config.stage_names == ["stem", "stage1", "stage2", "stage3"]
    assert (config.out_features, config.out_indices) == (["stage3"], [3])


def test_tuples_are_stored_as_lists() -> None:
    config = ToyNetConfig(widths=(4, 8), out_indices=(0, -1))
    assert config.widths == [4, 8]
    assert config.out_indices == [0, -1]
    assert config.out_features == ["stem", "stage2"]
    assert json.loads(config.to_json_string())["widths"] == [4, 8]


def test_assigning_one_selection_realigns_the_other() -> None:
    config = ToyNetConfig(out_features=["stage1"])
    config.out_indices = [1, 2]
    assert config.out_features == ["stage1", "stage2"]
    config.out_features = ["stem"]
    assert config.out_indices == [0]
    with pytest.raises(ValueError, match=r"out_indices \[9\] has indices \[9\] outside the 4 stages"):
        config.out_indices = [9]
    with pytest.raises(ValueError, match=r"out_features must be a list of str, got tuple \('stage1',\)"):
        config.out_features = ("stage1",)  # transformers refuses a tuple too
    assert config.out_indices == [0], "a rejected assignment leaves the config as it was"
    config.out_indices = (1,)  # ... but takes out_indices as a tuple
    assert (config.out_features, config.out_indices) == (["stage1"], [1])


def test_transformers_method_names_and_stage_names_assignment() -> None:
    config = ToyNetConfig()
    config.set_output_features_output_indices(None, (0, 2))
    assert (config.out_features, config.out_indices) == (["stem", "stage2"], [0, 2])
    config.verify_out_features_out_indices()
    # transformers' code assigns stage_names; ours follow from the architecture, so the same names (or None)
    # are accepted and change nothing, and other names are refused.
    config.stage_names = ["stem", "stage1", "stage2", "stage3"]
    config.stage_names = None
    assert config.stage_names == ["stem", "stage1", "stage2", "stage3"]
    with pytest.raises(ValueError, match=r"stage_names of a ToyNetConfig follow from its architecture fields and are"):
        config.stage_names = ["a", "b"]
    assert ToyNetConfig(stage_names=None).stage_names == ["stem", "stage1", "stage2", "stage3"]
    # A selection written around the setters is caught by verify.
    config.__dict__["_out_indices"] = [1, 0]
    with pytest.raises(ValueError, match=r"must follow the order of the stages: use \[0, 1\]"):
        config.verify_out_features_out_indices()


def test_architecture_change_keeps_a_valid_selection_or_is_refused() -> None:
    config = ToyNetConfig(widths=[4, 8, 16], out_indices=[-1])
    config.widths = [4, 8]
    assert config.out_features == ["stage2"]
    config.out_indices = [1, 2]
    with pytest.raises(ValueError, match="outside the 2 stages"):
        config.widths = [4]
    assert config.widths == [4, 8], "the refused change is rolled back"


def test_field_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^invalid ToyNetConfig: widths='wide': Input should be a valid list$"):
        ToyNetConfig(widths="wide")
    with pytest.raises(ConfigError, match=r"widths=\[0\]: widths must be a non-empty list of positive ints"):
        ToyNetConfig(widths=[0])
    config = ToyNetConfig()
    with pytest.raises(ConfigError, match=r"num_channels='three': Input should be a valid integer"):
        config.num_channels = "three"
    assert config.num_channels == 3


def test_round_trip_keeps_unmodelled_keys(tmp_path: Path) -> None:
    data = {
        "model_type": "toynet",
        "widths": [4, 8],
        "architectures": ["ToyNetForImageClassification"],
        "id2label": {"0": "cat", "1": "dog"},
        "transformers_version": "5.23.0",
        "dtype": "float32",
        "stage_names": ["stale", "names"],
        "out_features": ["stage1"],
        "out_indices": [1],
    }
    config = ToyNetConfig.from_dict(data)
    assert config.stage_names == ["stem", "stage1", "stage2"], "stage_names are derived, never read back"
    written = config.to_dict()
    defaults = {
        "num_channels": 3,
        "output_hidden_states": False,
        "output_attentions": False,
        "return_dict": True,
        "output_prefix_tokens": False,
    }
    assert written == {**data, **defaults, "stage_names": ["stem", "stage1", "stage2"]}
    path = config.save_pretrained(tmp_path)
    assert path == tmp_path / "config.json"
    assert ToyNetConfig.from_pretrained(tmp_path) == config
    assert AutoBackboneConfig.from_pretrained(tmp_path) == config


def test_transformers_private_key_names_are_read() -> None:
    config = ToyNetConfig.from_dict({"model_type": "toynet", "_out_features": ["stem"], "_out_indices": [0]})
    assert (config.out_features, config.out_indices) == (["stem"], [0])


def test_overriding_one_selection_replaces_both_saved_values() -> None:
    saved = {"model_type": "toynet", "out_features": ["stage3"], "out_indices": [3]}
    assert ToyNetConfig.from_dict(saved, out_indices=[1]).out_features == ["stage1"]
    assert ToyNetConfig.from_dict(saved, out_features=["stem"]).out_indices == [0]


def test_wrong_model_type_is_refused() -> None:
    with pytest.raises(ConfigError, match="ToyNetConfig is for model_type 'toynet', but the config says 'swin'"):
        ToyNetConfig.from_dict({"model_type": "swin"})


def test_auto_config_for_model_and_alias() -> None:
    config = AutoBackboneConfig.for_model("toynet", widths=[2, 2], out_indices=[1])
    assert isinstance(config, ToyNetConfig) and config.out_features == ["stage1"]
    assert isinstance(AutoBackboneConfig.for_model("toy-net"), ToyNetConfig)


def test_auto_config_errors() -> None:
    with pytest.raises(UnknownModelTypeError, match="unknown model_type 'nope'; installed model types: .*toynet"):
        AutoBackboneConfig.for_model("nope")
    with pytest.raises(ConfigError, match="a backbone config must be a dict"):
        AutoBackboneConfig.from_dict(["toynet"])  # type: ignore[arg-type]


# A checkpoint's config.json that neither entry point can read, and what it says (after the file's path).
BAD_CONFIG_FILES = [
    ('{"widths": [4]}', ConfigError, r"{path} has no 'model_type'"),
    ('{"model_type": "toynet",', ConfigError, r"{path} is not valid JSON"),
    ('["toynet"]', ConfigError, r"{path} must hold a JSON object, got list"),
    (
        '{"model_type": "toynet", "widths": [-1]}',
        ConfigError,
        r"invalid backbone config in {path}: invalid ToyNetConfig: widths=\[-1\]: widths must be",
    ),
    (
        '{"model_type": "vitdet-xl"}',
        UnknownModelTypeError,
        r"unknown model_type 'vitdet-xl'; installed model types: .*toynet",
    ),
]


@pytest.mark.parametrize("load", [AutoBackboneConfig.from_pretrained, AutoBackbone.from_pretrained])
@pytest.mark.parametrize(("text", "error", "pattern"), BAD_CONFIG_FILES)
def test_unreadable_config_file_is_refused(
    tmp_path: Path, load: Callable[[Path], object], text: str, error: type[Exception], pattern: str
) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(error, match=pattern.format(path=re.escape(str(tmp_path / "config.json")))):
        load(tmp_path)


def test_failed_cross_field_validation_rolls_back() -> None:
    from pydantic import model_validator

    class Paired(ToyNetConfig):
        depths: list[int] = [1, 1, 1]

        @model_validator(mode="after")
        def _same_length(self) -> Paired:
            if len(self.depths) != len(self.widths):
                raise ValueError(f"depths {self.depths} and widths {self.widths} must have the same length")
            return self

    config = Paired(out_indices=[3])
    with pytest.raises(ConfigError, match=r"depths \[1, 1\] and widths \[8, 16, 32\] must have the same length"):
        config.depths = [1, 1]
    assert config.depths == [1, 1, 1] and config.out_indices == [3]


def test_assigning_extras_keeps_the_selection_and_writes_no_private_keys() -> None:
    config = ToyNetConfig(out_indices=[1, 2])
    config.note = "kept"
    config.widths = [4, 8, 16]
    assert config.out_indices == [1, 2] and config.out_features == ["stage1", "stage2"]
    written = config.to_dict()
    assert written["note"] == "kept"
    assert not [key for key in written if key.startswith("_")], written
