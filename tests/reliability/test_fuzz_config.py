"""config.json fuzzed with hypothesis: only the project's clear errors, never a crash from deep inside."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbones import AutoBackbone, AutoBackboneConfig, BackboneError, ConfigError

CONFIGS: dict[str, dict[str, Any]] = {
    "resnet": {"embedding_size": 4, "hidden_sizes": [4, 8], "depths": [1, 1], "layer_type": "basic"},
    "swin": {"embed_dim": 4, "depths": [1, 1], "num_heads": [1, 2], "window_size": 2, "image_size": 16},
    "convnext": {"hidden_sizes": [4, 8], "depths": [1, 1]},
}
ABSURD = [10**9, -(10**9), 2**40, 10**18, 1 << 17, float("inf"), float("nan"), 1e300]
EXAMPLES: dict[str, int] = {}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    saved = {}
    for model_type, fields in CONFIGS.items():
        directory = tmp_path_factory.mktemp(model_type)
        AutoBackbone.from_config(AutoBackboneConfig.for_model(model_type, **fields)).save_pretrained(directory)
        saved[model_type] = directory
    return saved


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.sampled_from(ABSURD),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def mutated_configs(draw: st.DrawFn, model_type: str, saved: dict[str, Any]) -> dict[str, Any]:
    config = dict(saved)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["set", "set", "delete", "absurd-list", "model_type"]))
        key = draw(st.sampled_from(sorted(config)) | st.text(min_size=1, max_size=6))
        if action == "set":
            config[key] = draw(values)
        elif action == "delete":
            config.pop(key, None)
        elif action == "absurd-list":
            key = draw(st.sampled_from(["depths", "hidden_sizes", "num_heads", "embed_dim", "window_size"]))
            length = len(config.get("depths") or [1, 1])
            config[key] = [draw(st.sampled_from([*ABSURD, 0, -1, 1]))] * length
        else:
            config["model_type"] = draw(st.sampled_from(["", "resnet", "swin", "convnext", "os:system", "Resnet"]))
    return config


def _check(directory: Path, text: str) -> None:
    """Loading must succeed or raise one of the project's errors; nothing else escapes."""
    (directory / "config.json").write_text(text)
    for load in (AutoBackboneConfig.from_pretrained, AutoBackbone.from_pretrained):
        try:
            load(directory)
        except BackboneError as error:
            assert str(error), "an error without a message"
            assert "\n" not in str(error) or isinstance(error, ConfigError)


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_fuzzed_config_values_give_only_clear_errors(
    model_type: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    directory = checkpoints[model_type]
    saved = json.loads((directory / "config.json").read_text())
    original = (directory / "config.json").read_text()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(mutated_configs(model_type, saved))
    def run(config: dict[str, Any]) -> None:
        EXAMPLES[model_type] = EXAMPLES.get(model_type, 0) + 1
        _check(directory, json.dumps(config, allow_nan=True))

    try:
        run()
    finally:
        (directory / "config.json").write_text(original)
    assert EXAMPLES[model_type] == 100
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 512, f"fuzzing {model_type} allocated {grown_mib:.0f} MiB"


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    st.one_of(
        st.text(max_size=40),
        st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
        st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6).map(json.dumps),
        st.integers(1, 3).map(lambda n: "[" * (10_000 * n) + "]" * (10_000 * n)),
        st.integers(1, 3).map(lambda n: '{"a":' * (5_000 * n) + "1" + "}" * (5_000 * n)),
        st.integers(4_400, 6_000).map(lambda digits: '{"model_type": "resnet", "depths": [' + "9" * digits + "]}"),
    )
)
def test_any_text_as_config_json_gives_only_clear_errors(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        _check(Path(directory), text)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"depths": [10**9, 1]}, r"depths\[0\]=1000000000 is beyond any real architecture \(limit: magnitude 65536\)"),
        ({"hidden_sizes": [4, 2**40]}, r"hidden_sizes\[1\]=1099511627776 is beyond any real architecture"),
        ({"embedding_size": -(10**9)}, r"embedding_size=-1000000000 is beyond any real architecture"),
        ({"hidden_sizes": [4, -8]}, r"hidden_sizes must list one positive integer per stage, got \[4, -8\]"),
        ({"depths": "deep"}, r"depths='deep': Input should be a valid list"),
        ({"model_type": "os:system"}, r"unknown model_type 'os:system'"),
        ({"model_type": ["resnet"]}, r"has no 'model_type', so the architecture is unknown"),
    ],
)
def test_named_absurd_values(checkpoints: dict[str, Path], edit: dict[str, Any], message: str) -> None:
    directory = checkpoints["resnet"]
    original = (directory / "config.json").read_text()
    try:
        (directory / "config.json").write_text(json.dumps({**json.loads(original), **edit}))
        with pytest.raises(BackboneError, match=message):
            AutoBackbone.from_pretrained(directory)
        with pytest.raises(BackboneError, match=message):
            AutoBackboneConfig.from_pretrained(directory)
    finally:
        (directory / "config.json").write_text(original)


def test_non_json_list_and_deep_nesting_are_named(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    for text, message in [
        ("{model_type: resnet}", r"config.json is not valid JSON \(Expecting property name enclosed in double quotes"),
        ('["resnet"]', r"config.json must hold a JSON object, got list"),
        ("[" * 100_000 + "]" * 100_000, r"config.json nests JSON arrays or objects too deeply to be a config"),
        ('{"depths": [' + "9" * 5000 + "]}", r"config.json is not valid JSON \(Exceeds the limit \(4300 digits\)"),
        ("", r"config.json is not valid JSON \(Expecting value at line 1, column 1\)"),
    ]:
        config.write_text(text)
        with pytest.raises(ConfigError, match=message):
            AutoBackbone.from_pretrained(tmp_path)
        with pytest.raises(ConfigError, match=message):
            AutoBackboneConfig.from_pretrained(tmp_path)
    config.write_bytes(b'{"model_type": "\xff\xfe"}')
    with pytest.raises(ConfigError, match=r"cannot read .*config.json: 'utf-8' codec can't decode byte 0xff"):
        AutoBackbone.from_pretrained(tmp_path)
