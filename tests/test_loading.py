"""Checkpoint loading and saving through AutoBackbone, on the third-party ToyNet backbone."""

from __future__ import annotations

import json
import os
import pickle
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from backbones import AutoBackbone, CheckpointError, ConfigError, LoadReport, WeightsMismatchError
from backbones.testing import assert_close_maps, assert_load_report, randomize_weights_
from backbones_toynet.model import ToyNetBackbone, ToyNetConfig

pytestmark = pytest.mark.usefixtures("registry")

PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _model(**overrides: Any) -> ToyNetBackbone:
    torch.manual_seed(0)
    model = ToyNetBackbone(ToyNetConfig(widths=[4, 8, 8], out_indices=[1, 2, 3], **overrides))
    return randomize_weights_(model).eval()


def _maps(model: Any) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(PIXELS).feature_maps


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, ToyNetBackbone]:
    model = _model()
    model.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt", model


def _rewrite(directory: Path, edit: Any) -> None:
    tensors = load_file(directory / "model.safetensors")
    save_file(edit(tensors), directory / "model.safetensors", metadata={"format": "pt"})


def test_saved_files_are_transformers_format(saved: tuple[Path, ToyNetBackbone]) -> None:
    directory, model = saved
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "toynet"
    assert config["architectures"] == ["ToyNetBackbone"]
    assert config["out_indices"] == [1, 2, 3] and config["out_features"] == ["stage1", "stage2", "stage3"]
    tensors = load_file(directory / "model.safetensors")
    assert sorted(tensors) == sorted(model.state_dict())


def test_architectures_name_the_class_unless_it_declares_a_reference_name(tmp_path: Path) -> None:
    class Widened(ToyNetBackbone):  # a subclass is another model: its own name, not its parent's
        pass

    class Renamed(Widened):
        reference_class_name = "ToyNetModel"

    class RenamedChild(Renamed):
        pass

    assert ToyNetBackbone.reference_class_name == "ToyNetBackbone"
    assert [cls.reference_class_name for cls in (Widened, Renamed, RenamedChild)] == [
        "Widened",
        "ToyNetModel",
        "RenamedChild",
    ]
    Renamed(ToyNetConfig(widths=[4, 8])).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["ToyNetModel"]


def test_task_checkpoint_maps_prefix_and_reports(saved: tuple[Path, ToyNetBackbone]) -> None:
    directory, model = saved

    def as_task_checkpoint(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        task = {f"toynet.{key}": value for key, value in tensors.items() if not key.startswith("stages.2.1")}
        task["classifier.weight"] = torch.ones(10, 8)
        task["classifier.bias"] = torch.zeros(10)
        return task

    _rewrite(directory, as_task_checkpoint)
    loaded, report = assert_load_report(
        directory,
        prefix="'toynet.' removed",
        missing_keys=[
            "stages.2.1.bias",
            "stages.2.1.num_batches_tracked",
            "stages.2.1.running_mean",
            "stages.2.1.running_var",
            "stages.2.1.weight",
        ],
        unused_keys=["classifier.bias", "classifier.weight"],
    )
    assert isinstance(report, LoadReport) and isinstance(loaded, ToyNetBackbone)
    norm = loaded.stages[2][1]
    # Missing keys are initialised as the architecture does (BatchNorm: weight 1, bias 0, fresh stats).
    assert torch.equal(norm.weight, torch.ones(8)) and torch.equal(norm.bias, torch.zeros(8))
    assert torch.equal(norm.running_var, torch.ones(8)) and torch.equal(norm.running_mean, torch.zeros(8))
    ours = _maps(loaded)
    assert_close_maps(ours[:2], _maps(model)[:2], atol=0.0)
    assert "initialised (not in checkpoint): stages.2.1.bias" in str(report)
    with pytest.raises(
        WeightsMismatchError, match=r"(?s)strict loading of .* failed:\n.*unused checkpoint keys: classifier.bias"
    ):
        AutoBackbone.from_pretrained(directory, strict=True)


def test_assert_load_report_expects_what_is_not_given_to_be_empty(saved: tuple[Path, ToyNetBackbone]) -> None:
    directory, _ = saved
    loaded, report = assert_load_report(directory, out_indices=[-1])  # clean and unmapped; options pass through
    assert report.clean and report.prefix == "" and loaded.out_features == ["stage3"]
    with pytest.raises(
        AssertionError,
        match=r"^\(prefix, missing_keys, unused_keys\) \('', \[\], \[\]\) != expected \('', \['stages.0.weight'\], \[\]\); "
        r"report:\ncheckpoint ",
    ):
        assert_load_report(directory, missing_keys=["stages.0.weight"])


def test_checkpoint_prefix_selects_a_nested_backbone(saved: tuple[Path, ToyNetBackbone]) -> None:
    directory, model = saved
    _rewrite(
        directory, lambda t: {**{f"model.encoder.{k}": v for k, v in t.items()}, "model.head.weight": torch.ones(2)}
    )
    loaded, report = AutoBackbone.from_pretrained(
        directory, checkpoint_prefix="model.encoder.", output_loading_info=True
    )
    assert report.missing_keys == [] and report.unused_keys == ["model.head.weight"]
    assert_close_maps(_maps(loaded), _maps(model), atol=0.0)


def test_nested_backbone_config(saved: tuple[Path, ToyNetBackbone]) -> None:
    directory, model = saved
    inner = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({"model_type": "some-head", "backbone_config": inner}))
    loaded = AutoBackbone.from_pretrained(directory, config_key="backbone_config")
    assert_close_maps(_maps(loaded), _maps(model), atol=0.0)
    with pytest.raises(ConfigError, match="has no 'decoder_config' object"):
        AutoBackbone.from_pretrained(directory, config_key="decoder_config")


def test_shape_mismatch_names_key_and_shapes(saved: tuple[Path, ToyNetBackbone]) -> None:
    directory, _ = saved
    _rewrite(directory, lambda t: {**t, "stem.weight": torch.zeros(4, 3, 5, 5)})
    with pytest.raises(WeightsMismatchError, match=r"stem.weight: checkpoint \[4, 3, 5, 5\] vs model \[4, 3, 3, 3\]"):
        AutoBackbone.from_pretrained(directory)


def test_parameters_are_never_randomly_initialised_on_load(
    saved: tuple[Path, ToyNetBackbone], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _ = saved
    devices: list[str] = []
    original = ToyNetBackbone.post_init

    def spy(self: ToyNetBackbone) -> None:
        devices.extend(p.device.type for p in self.parameters())
        original(self)

    monkeypatch.setattr(ToyNetBackbone, "post_init", spy)
    AutoBackbone.from_pretrained(directory)
    assert devices and set(devices) == {"meta"}


def test_load_options(saved: tuple[Path, ToyNetBackbone], monkeypatch: pytest.MonkeyPatch) -> None:
    directory, model = saved
    half = AutoBackbone.from_pretrained(directory, dtype="bfloat16", out_features=["stage3"])
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half.out_indices == [3]
    assert AutoBackbone.from_pretrained(directory, dtype="auto").stem.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="dtype 'float33' is not a torch dtype"):
        AutoBackbone.from_pretrained(directory, dtype="float33")
    monkeypatch.chdir(directory.parent)
    relative = AutoBackbone.from_pretrained("./ckpt")
    assert_close_maps(_maps(relative), _maps(model), atol=0.0)
    overridden = AutoBackbone.from_pretrained(directory, widths=[4, 8, 8])
    assert overridden.config.widths == [4, 8, 8]


def test_sharded_checkpoint(saved: tuple[Path, ToyNetBackbone]) -> None:
    directory, model = saved
    tensors = load_file(directory / "model.safetensors")
    (directory / "model.safetensors").unlink()
    keys = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    for name, shard_keys in shards.items():
        save_file({key: tensors[key] for key in shard_keys}, directory / name, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {key: name for name, shard_keys in shards.items() for key in shard_keys}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_close_maps(_maps(AutoBackbone.from_pretrained(directory)), _maps(model), atol=0.0)
    (directory / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="names shard 'model-00002-of-00002.safetensors', which is missing"):
        AutoBackbone.from_pretrained(directory)


class _RunsCodeWhenUnpickled:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch PWNED",))


def test_pickle_checkpoints_are_refused_unless_trusted(
    saved: tuple[Path, ToyNetBackbone], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, model = saved
    monkeypatch.chdir(directory)
    state = load_file(directory / "model.safetensors")
    (directory / "model.safetensors").unlink()
    torch.save(state, directory / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"has only pytorch_model.bin, a pickle checkpoint.*allow_pickle=True"):
        AutoBackbone.from_pretrained(directory)
    trusted = AutoBackbone.from_pretrained(directory, allow_pickle=True)
    assert_close_maps(_maps(trusted), _maps(model), atol=0.0)

    with open(directory / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"stem.weight": _RunsCodeWhenUnpickled()}, handle)
    with pytest.raises(CheckpointError, match="has only pytorch_model.bin"):
        AutoBackbone.from_pretrained(directory)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        AutoBackbone.from_pretrained(directory, allow_pickle=True)
    assert not (directory / "PWNED").exists(), "the pickle payload ran"


def test_missing_and_malformed_inputs(tmp_path: Path, saved: tuple[Path, ToyNetBackbone]) -> None:
    directory, _ = saved
    with pytest.raises(CheckpointError, match=r"checkpoint directory .*nowhere does not exist"):
        AutoBackbone.from_pretrained(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"config.json not found in checkpoint directory .*empty"):
        AutoBackbone.from_pretrained(empty)
    (empty / "config.json").write_text((directory / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"no weights found for .*empty: looked for model.safetensors"):
        AutoBackbone.from_pretrained(empty)
    # A config.json without a known model type: see test_config.test_unreadable_config_file_is_refused.
    with pytest.raises(CheckpointError, match="neither an existing directory nor a hub repository id"):
        AutoBackbone.from_pretrained("not a repo id!")


def test_corrupted_safetensors_are_clear_errors(saved: tuple[Path, ToyNetBackbone]) -> None:
    directory, _ = saved
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 10])
    with pytest.raises(CheckpointError, match=r"is truncated: tensor .* ends at byte \d+ of the data, which has only"):
        AutoBackbone.from_pretrained(directory)
    weights.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="is 5 bytes long, too short to be a safetensors file"):
        AutoBackbone.from_pretrained(directory)
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_size])
    header["stem.weight"]["shape"] = [4, 3, 3, 4]
    lying = json.dumps(header, separators=(",", ":")).encode().ljust(header_size)
    weights.write_bytes(data[:8] + lying + data[8 + header_size :])
    with pytest.raises(
        CheckpointError,
        match=r"says tensor 'stem.weight' \(F32, shape \[4, 3, 3, 4\]\) spans 432 bytes, but that shape needs 576",
    ):
        AutoBackbone.from_pretrained(directory)
    weights.write_bytes((10**12).to_bytes(8, "little") + data[8:])
    with pytest.raises(CheckpointError, match="declares a 1000000000000-byte header"):
        AutoBackbone.from_pretrained(directory)


def test_failed_save_leaves_nothing_half_written(
    saved: tuple[Path, ToyNetBackbone], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, model = saved
    before = {path.name: path.read_bytes() for path in directory.iterdir()}

    def broken_save(tensors: Any, filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(directory)
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == before


def _populate_hub_cache(cache: Path, repo_id: str, source: Path) -> str:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in source.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.mark.usefixtures("no_network")
def test_local_dir_and_cached_hub_id_make_no_network_call(saved: tuple[Path, ToyNetBackbone], tmp_path: Path) -> None:
    directory, model = saved
    AutoBackbone.from_pretrained(directory)
    cache = tmp_path / "hub-cache"
    commit = _populate_hub_cache(cache, "someone/toynet-tiny", directory)
    for revision in (None, commit):
        loaded = AutoBackbone.from_pretrained("someone/toynet-tiny", cache_dir=cache, revision=revision)
        assert_close_maps(_maps(loaded), _maps(model), atol=0.0)
    with pytest.raises(
        CheckpointError,
        match="config.json of hub repository 'someone/other' is not in the local cache and local_files_only=True",
    ):
        AutoBackbone.from_pretrained("someone/other", cache_dir=cache, local_files_only=True)


def test_offline_mode_names_the_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        CheckpointError,
        match="config.json of hub repository 'someone/absent' is not in the local cache and HF_HUB_OFFLINE is set",
    ):
        AutoBackbone.from_pretrained("someone/absent", cache_dir=tmp_path)


def test_meta_parameter_build_is_confined_to_its_thread() -> None:
    import threading

    from backbones._loading import parameters_on_meta

    inside, outside = threading.Event(), threading.Event()
    devices: dict[str, set[str]] = {}

    def build_elsewhere() -> None:
        inside.wait(timeout=10)
        devices["other thread"] = {p.device.type for p in ToyNetBackbone(ToyNetConfig()).parameters()}
        outside.set()

    thread = threading.Thread(target=build_elsewhere)
    thread.start()
    with parameters_on_meta():
        inside.set()
        outside.wait(timeout=10)
        devices["loading thread"] = {p.device.type for p in ToyNetBackbone(ToyNetConfig()).parameters()}
    thread.join()
    devices["afterwards"] = {p.device.type for p in ToyNetBackbone(ToyNetConfig()).parameters()}
    assert devices == {"other thread": {"cpu"}, "loading thread": {"meta"}, "afterwards": {"cpu"}}


def test_missing_parameter_does_not_reset_loaded_statistics(saved: tuple[Path, ToyNetBackbone]) -> None:
    directory, model = saved
    _rewrite(directory, lambda t: {k: v for k, v in t.items() if k != "stages.0.1.weight"})
    loaded, report = AutoBackbone.from_pretrained(directory, output_loading_info=True)
    assert report.missing_keys == ["stages.0.1.weight"]
    norm, reference = loaded.stages[0][1], model.stages[0][1]
    assert torch.equal(norm.weight, torch.ones(4)), "the missing weight is initialised"
    for name in ("bias", "running_mean", "running_var"):
        assert torch.equal(getattr(norm, name), getattr(reference, name)), f"loaded {name} was overwritten"


def test_plugin_key_renames_map_other_module_names(
    saved: tuple[Path, ToyNetBackbone], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, model = saved
    # As if another release called the stages "blocks" and the stem "patch_embed".
    _rewrite(
        directory, lambda t: {k.replace("stages.", "blocks.").replace("stem.", "patch_embed."): v for k, v in t.items()}
    )
    monkeypatch.setattr(
        ToyNetBackbone, "checkpoint_key_renames", ((r"^blocks\.", "stages."), (r"^patch_embed\.", "stem."))
    )
    loaded, report = AutoBackbone.from_pretrained(directory, output_loading_info=True)
    assert report.clean and report.prefix == "keys renamed"
    assert_close_maps(_maps(loaded), _maps(model), atol=0.0)
