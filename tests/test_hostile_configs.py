"""Hostile or mistaken configs: a parameter limit checked before anything is allocated, unknown fields reported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import backbones._loading as loading
from backbones import AutoBackbone, ConfigError, LoadOptions
from backbones_toynet.model import ToyNetBackbone, ToyNetConfig

pytestmark = pytest.mark.usefixtures("registry")

TOYNET_SRC = str(Path(__file__).parent / "third_party" / "backbones-toynet" / "src")
SMALL = ToyNetConfig(widths=[4, 8, 8])
# stem 3->4 conv (108 + 4), stages 4->4, 4->8, 8->8 (no bias) with BatchNorm weight and bias.
SMALL_PARAMETERS = (3 * 4 * 9 + 4) + (4 * 4 * 9 + 8) + (4 * 8 * 9 + 16) + (8 * 8 * 9 + 16)
HOSTILE = {"model_type": "toynet", "widths": [60000] * 60000}  # 60000 stages of 32.4 B parameters each


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    ToyNetBackbone(SMALL).save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


@pytest.fixture
def hostile_checkpoint(checkpoint: Path) -> Path:
    """Small, valid weights beside a config.json that asks for an absurd model."""
    (checkpoint / "config.json").write_text(json.dumps(HOSTILE))
    return checkpoint


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "_warned_fields", set())
    monkeypatch.delenv("BACKBONES_MAX_PARAMETERS", raising=False)


# -- the parameter limit --------------------------------------------------------------------------------


def test_small_parameter_count_is_exact() -> None:
    assert sum(p.numel() for p in ToyNetBackbone(SMALL).parameters()) == SMALL_PARAMETERS == 1160
    assert loading.count_parameters(ToyNetBackbone, SMALL) == SMALL_PARAMETERS


def test_limit_refuses_with_the_count_and_the_fix(checkpoint: Path) -> None:
    with pytest.raises(ConfigError) as error:
        AutoBackbone.from_config(SMALL, max_parameters=SMALL_PARAMETERS - 1)
    assert str(error.value) == (
        "ToyNetBackbone would have 1,160 parameters (counted on the meta device, nothing allocated), above the "
        "limit of 1,159: check the config's sizes; if the model is meant to be this big, pass "
        "max_parameters=2320 or set the environment variable BACKBONES_MAX_PARAMETERS"
    )
    assert AutoBackbone.from_config(SMALL, max_parameters=SMALL_PARAMETERS).stem.weight.shape == (4, 3, 3, 3)
    assert ToyNetBackbone.from_config(SMALL, max_parameters=SMALL_PARAMETERS).stages[2][0].weight.shape == (8, 8, 3, 3)
    with pytest.raises(ConfigError, match=rf"^ToyNetBackbone from {checkpoint / 'config.json'} would have 1,160 "):
        AutoBackbone.from_pretrained(checkpoint, max_parameters=SMALL_PARAMETERS - 1)
    with pytest.raises(ConfigError, match="above the limit of 1,000"):
        AutoBackbone.from_pretrained(checkpoint, load_options=LoadOptions(max_parameters=1000))
    assert AutoBackbone.from_pretrained(checkpoint, max_parameters=SMALL_PARAMETERS).stem.weight.shape == (4, 3, 3, 3)


def test_environment_variable_sets_the_limit(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKBONES_MAX_PARAMETERS", "1_000")
    with pytest.raises(ConfigError, match="would have 1,160 parameters .* above the limit of 1,000"):
        AutoBackbone.from_config(SMALL)
    with pytest.raises(ConfigError, match="would have 1,160 parameters .* above the limit of 1,000"):
        AutoBackbone.from_pretrained(checkpoint)
    assert AutoBackbone.from_pretrained(checkpoint, max_parameters=2000).stem.weight.shape == (4, 3, 3, 3)
    monkeypatch.setenv("BACKBONES_MAX_PARAMETERS", "lots")
    with pytest.raises(ValueError, match=r"^BACKBONES_MAX_PARAMETERS='lots' is not a positive integer; set it"):
        AutoBackbone.from_config(SMALL)


@pytest.mark.parametrize("value", [0, -5, True, 2.5, "10"])
def test_max_parameters_must_be_a_positive_int(value: Any) -> None:
    with pytest.raises(TypeError, match=rf"^max_parameters must be a positive int .*, got {value!r}$"):
        LoadOptions(max_parameters=value)


def test_default_limit_refuses_a_hostile_config(hostile_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "_COUNT_SECONDS", 0.2)
    with pytest.raises(ConfigError) as error:
        AutoBackbone.from_pretrained(hostile_checkpoint)
    message = str(error.value)
    assert message.startswith(f"ToyNetBackbone from {hostile_checkpoint / 'config.json'} would have more than ")
    assert "above the limit of 20,000,000,000 (20 B)" in message
    # A few huge stages are counted to the end (all on the meta device): the exact estimate.
    with pytest.raises(ConfigError) as error:
        AutoBackbone.from_config({"model_type": "toynet", "widths": [60000, 60000]})
    stages = 60000 * 60000 * 9 + 2 * 60000  # conv (no bias) and BatchNorm of one stage
    expected = 3 * 60000 * 9 + 60000 + 2 * stages
    assert str(error.value).startswith(f"ToyNetBackbone would have {expected:,} (64.8 B) parameters (counted on")


# Under an address-space cap a little above what the process already maps, any real attempt to build
# the hostile model fails at once; the limit must refuse it without trying.
CAPPED = """
import json, resource, sys
sys.path.insert(0, {toynet!r})
import torch
torch.set_num_threads(1)
import backbones._loading as loading
from backbones import AutoBackbone, ConfigError, register
register("toynet", config="backbones_toynet.model:ToyNetConfig", model="backbones_toynet.model:ToyNetBackbone")
loading._COUNT_SECONDS = 0.2
hostile = {{"model_type": "toynet", "widths": [60000] * 60000}}
AutoBackbone.from_pretrained({small!r})  # imports everything a load needs, before the cap

def vm_size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

cap = vm_size() + 1024**3
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
results = {{}}

def attempt(name, call):
    try:
        model = call()
        results[name] = "built " + str(sum(p.numel() for p in model.parameters()))
    except Exception as error:
        kind = "ConfigError" if isinstance(error, ConfigError) else type(error).__name__
        results[name] = kind + ": " + str(error)[:300]

attempt("from_config", lambda: AutoBackbone.from_config(hostile))
attempt("from_pretrained", lambda: AutoBackbone.from_pretrained({directory!r}))
attempt("small", lambda: AutoBackbone.from_config({{"model_type": "toynet", "widths": [64] * 4}}))
attempt("unlimited", lambda: AutoBackbone.from_config(hostile, max_parameters=10**15))
print(json.dumps(results))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the address space from /proc (Linux)")
def test_no_config_allocates_past_the_limit_under_an_address_space_cap(
    hostile_checkpoint: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    ToyNetBackbone(SMALL).save_pretrained(tmp_path / "small")
    code = CAPPED.format(toynet=TOYNET_SRC, small=str(tmp_path / "small"), directory=str(hostile_checkpoint))
    script = tmp_path / "capped.py"
    script.write_text(textwrap.dedent(code))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["from_config"].startswith("ConfigError: ToyNetBackbone would have more than "), results
    assert results["from_pretrained"].startswith(
        f"ConfigError: ToyNetBackbone from {hostile_checkpoint / 'config.json'} would have more than "
    ), results
    # The cap leaves room for real work, and it bites: without the limit the build runs into it.
    assert results["small"] == f"built {3 * 64 * 9 + 64 + 4 * (64 * 64 * 9 + 128)}", results
    assert results["unlimited"].startswith(("RuntimeError", "MemoryError", "ConfigError: cannot build")), results
    assert "would have" not in results["unlimited"], results


# -- unknown config fields --------------------------------------------------------------------------------

TRANSFORMERS_KEYS = {
    "architectures": ["ToyNetForImageClassification"],
    "id2label": {"0": "cat"},
    "label2id": {"cat": 0},
    "transformers_version": "5.23.0",
    "torch_dtype": "float32",
    "dtype": "float32",
    "problem_type": None,
    "_name_or_path": "org/toynet",
    "_attn_implementation_autoset": True,
    "is_encoder_decoder": False,
    "chunk_size_feed_forward": 0,
    "freeze_at": -1,
}


def _edit_config(directory: Path, **changes: Any) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_transformers_keys_are_not_unknown(checkpoint: Path) -> None:
    _edit_config(checkpoint, **TRANSFORMERS_KEYS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, report = AutoBackbone.from_pretrained(checkpoint, output_loading_info=True, strict=True)
    assert report.unknown_config_fields == {}
    assert {key: model.config.to_dict()[key] for key in TRANSFORMERS_KEYS} == TRANSFORMERS_KEYS  # kept


def test_unknown_field_is_reported_warned_once_and_kept(checkpoint: Path) -> None:
    _edit_config(checkpoint, widht=[4, 8], output_stride=8, architectures=["ToyNetBackbone"])
    message = (
        f"ToyNetConfig from {checkpoint / 'config.json'} has field(s) it does not know, kept for the round trip "
        "but without effect: 'widht' (did you mean 'widths'?); 'output_stride' (did you mean 'output_hidden_states'?). "
        "Fix the spelling, or remove them if this architecture does not support them"
    )
    with pytest.warns(UserWarning) as caught:
        model, report = AutoBackbone.from_pretrained(checkpoint, output_loading_info=True)
    assert [str(item.message) for item in caught] == [message]
    assert caught[0].filename == __file__, "the warning points at the caller"
    assert report.unknown_config_fields == {"widht": "widths", "output_stride": "output_hidden_states"}
    assert report.clean, "unknown fields are no weights problem"
    assert "unknown config fields (kept, no effect): widht (did you mean widths?), output_stride" in str(report)
    assert model.config.to_dict()["output_stride"] == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per field and config class in a process
        _, report = AutoBackbone.from_pretrained(checkpoint, output_loading_info=True)
    assert report.unknown_config_fields == {"widht": "widths", "output_stride": "output_hidden_states"}


def test_strict_makes_unknown_fields_an_error_before_building(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _edit_config(checkpoint, widht=[4, 8])

    def never(*args: Any) -> None:
        raise AssertionError("built despite strict=True")

    monkeypatch.setattr(loading, "_build", never)
    with pytest.raises(ConfigError) as error:
        AutoBackbone.from_pretrained(checkpoint, strict=True)
    assert str(error.value).endswith(
        "without effect: 'widht' (did you mean 'widths'?). Fix the spelling, or remove them if this architecture "
        "does not support them (strict=True makes them an error)"
    )


def test_from_config_warns_about_unknown_fields() -> None:
    config = ToyNetConfig(widths=[4, 8], output_stride=8)
    with pytest.warns(UserWarning) as caught:
        model = AutoBackbone.from_config(config)
    assert [str(item.message) for item in caught] == [
        "ToyNetConfig has field(s) it does not know, kept for the round trip but without effect: 'output_stride' "
        "(did you mean 'output_hidden_states'?). Fix the spelling, or remove them if this architecture does not "
        "support them"
    ]
    assert model.config.to_dict()["output_stride"] == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ToyNetBackbone.from_config(ToyNetConfig(widths=[4, 8], **TRANSFORMERS_KEYS))


class _TokenNet(ToyNetBackbone):
    """ToyNet with a parameter drawn from the global generator in ``__init__`` (as a class token is)."""

    def __init__(self, config: ToyNetConfig) -> None:
        super().__init__(config)
        self.token = torch.nn.Parameter(torch.randn(1, 4))


def test_counting_draws_nothing_from_the_random_generator() -> None:
    torch.manual_seed(0)
    counted = _TokenNet.from_config(SMALL)
    torch.manual_seed(0)
    plain = _TokenNet(SMALL)
    assert counted.token.device.type == "cpu"
    for key, value in plain.state_dict().items():
        assert torch.equal(counted.state_dict()[key], value), key
    torch.manual_seed(0)
    assert loading.count_parameters(_TokenNet, SMALL) == SMALL_PARAMETERS + 4
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))
