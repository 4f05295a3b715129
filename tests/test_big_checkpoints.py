"""Sharded, reduced-precision checkpoints: dtype conversion, the meta device, broken shards, memory.

Everything here is tiny; the 1.7 GB ViT-H+/16 measurement is ``benchmarks/run.py --only bigload``.
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
from safetensors.torch import load_file, save_file

import backbones._loading as loading
from backbones import AutoBackbone, CheckpointError
from backbones.testing import assert_close_maps, randomize_weights_
from backbones_toynet.model import ToyNetBackbone, ToyNetConfig

pytestmark = pytest.mark.usefixtures("registry")

PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
SHARDS = ("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors")


def _model() -> ToyNetBackbone:
    torch.manual_seed(0)
    model = ToyNetBackbone(ToyNetConfig(widths=[4, 8, 8], out_indices=[1, 2, 3]))
    return randomize_weights_(model).eval()


def _write_sharded(directory: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Three shards and an index, as transformers' save_pretrained writes a big checkpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = sorted(tensors)
    parts = [keys[index :: len(SHARDS)] for index in range(len(SHARDS))]
    weight_map = {}
    for name, part in zip(SHARDS, parts):
        save_file({key: tensors[key].contiguous() for key in part}, directory / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    total = sum(tensor.nbytes for tensor in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    (directory / "config.json").write_text(json.dumps(config))


@pytest.fixture
def sharded(tmp_path: Path) -> tuple[Path, ToyNetBackbone, dict[str, torch.Tensor]]:
    """A 3-shard checkpoint whose floating tensors are float16, and the float32 model it came from."""
    model = _model()
    model.save_pretrained(tmp_path / "single")
    tensors = load_file(tmp_path / "single" / "model.safetensors")
    half = {key: value.half() if value.is_floating_point() else value for key, value in tensors.items()}
    config = json.loads((tmp_path / "single" / "config.json").read_text())
    _write_sharded(tmp_path / "sharded", half, config)
    return tmp_path / "sharded", model, half


def _maps(model: Any) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(PIXELS.to(next(model.parameters()).dtype)).feature_maps


def test_float16_shards_into_a_bfloat16_model(sharded: tuple[Path, ToyNetBackbone, dict[str, torch.Tensor]]) -> None:
    directory, _, half = sharded
    model, report = AutoBackbone.from_pretrained(directory, dtype=torch.bfloat16, output_loading_info=True)
    assert report.clean
    state = model.state_dict()
    assert {value.dtype for key, value in state.items() if not key.endswith("num_batches_tracked")} == {torch.bfloat16}
    assert state["stages.0.1.num_batches_tracked"].dtype == torch.int64  # integers are never converted
    for key, value in half.items():
        expected = value.to(torch.bfloat16) if value.is_floating_point() else value
        assert torch.equal(state[key], expected), key
    # bfloat16 from float16 loses precision: the same weights, rounded once.
    reference = AutoBackbone.from_pretrained(directory, dtype=torch.float32)
    for ours, wider in zip(_maps(model), _maps(reference), strict=True):
        torch.testing.assert_close(ours.float(), wider, atol=0.05, rtol=0.05)


def test_auto_dtype_keeps_float16_and_same_dtype_tensors_are_not_copied(
    sharded: tuple[Path, ToyNetBackbone, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _, half = sharded
    reads: list[str] = []
    original = loading._Checkpoint.read

    def counting_read(self: Any, key: str, scratch: torch.Tensor) -> torch.Tensor:
        reads.append(key)
        return original(self, key, scratch)

    monkeypatch.setattr(loading._Checkpoint, "read", counting_read)
    model = AutoBackbone.from_pretrained(directory, dtype="auto")
    assert model.stem.weight.dtype == torch.float16
    assert torch.equal(model.stem.weight, half["stem.weight"])
    assert reads == [], "tensors kept as they are stored are views of the mapped file, not copies"
    AutoBackbone.from_pretrained(directory, dtype=torch.bfloat16)
    floating = sorted(key for key, value in half.items() if value.is_floating_point())
    assert sorted(reads) == floating, "a converted load reads exactly the tensors it converts"


def test_meta_device_reads_no_tensor_then_loads(
    sharded: tuple[Path, ToyNetBackbone, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _, _ = sharded

    def no_data(*args: Any) -> None:
        raise AssertionError("a meta load read tensor data")

    with monkeypatch.context() as patch:
        patch.setattr(loading._Checkpoint, "get", no_data)
        patch.setattr(loading._Checkpoint, "read", no_data)
        skeleton = AutoBackbone.from_pretrained(directory, device="meta", dtype=torch.bfloat16)
    tensors = {**dict(skeleton.named_parameters()), **dict(skeleton.named_buffers())}
    assert {tensor.device.type for tensor in tensors.values()} == {"meta"}
    assert skeleton.stages[2][0].weight.shape == (8, 8, 3, 3)
    assert skeleton.stem.weight.dtype == torch.bfloat16
    # ...then load: materialise the skeleton and fill it from the shards.
    skeleton.to_empty(device="cpu")
    shards = {key: value for name in SHARDS for key, value in load_file(directory / name).items()}
    result = skeleton.load_state_dict(shards, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    direct = AutoBackbone.from_pretrained(directory, dtype=torch.bfloat16)
    for key, value in direct.state_dict().items():
        assert torch.equal(skeleton.state_dict()[key], value), key
    assert_close_maps(_maps(skeleton.eval()), _maps(direct), atol=0.0)


def test_missing_shard_is_named_before_anything_is_built(
    sharded: tuple[Path, ToyNetBackbone, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _, _ = sharded
    monkeypatch.setattr(loading, "_build", _never_called)
    (directory / SHARDS[1]).unlink()
    with pytest.raises(CheckpointError) as error:
        AutoBackbone.from_pretrained(directory, dtype=torch.bfloat16)
    assert str(error.value) == (
        f"{directory / 'model.safetensors.index.json'} names shard '{SHARDS[1]}', which is missing from {directory}"
    )


def test_truncated_shard_is_named_before_anything_is_built(
    sharded: tuple[Path, ToyNetBackbone, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _, _ = sharded
    monkeypatch.setattr(loading, "_build", _never_called)
    shard = directory / SHARDS[2]
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match=rf"weights file {shard} is truncated: tensor '[\w.]+' ends at byte"):
        AutoBackbone.from_pretrained(directory, dtype=torch.bfloat16)


def test_shard_shortened_during_the_load_is_an_error(
    sharded: tuple[Path, ToyNetBackbone, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _, _ = sharded
    original = loading._Checkpoint.check_index

    def truncate_after_validation(self: Any, *args: Any) -> None:
        original(self, *args)
        for name in SHARDS:
            data = (directory / name).read_bytes()
            (directory / name).write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(loading._Checkpoint, "check_index", truncate_after_validation)
    with pytest.raises(CheckpointError, match=r"is shorter than when its header was read \(tensor '[\w.]+'\)"):
        AutoBackbone.from_pretrained(directory, dtype=torch.bfloat16)


def _never_called(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the model was built before the checkpoint was checked")


# A converted load (float32 file, bfloat16 model) must hold the converted model and one tensor being
# converted, never the file's pages and the model at once. Measured in a fresh process: its peak RSS
# (VmHWM) above the RSS once everything is imported and a warm-up load has run.
MEMORY_PROBE = """
import sys
sys.path.insert(0, {toynet!r})
import torch
from backbones import AutoBackbone, register
register("toynet", config="backbones_toynet.model:ToyNetConfig", model="backbones_toynet.model:ToyNetBackbone")

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

AutoBackbone.from_pretrained({warmup!r}, dtype=torch.bfloat16)
floor = status("VmRSS:")
model = AutoBackbone.from_pretrained({directory!r}, dtype=torch.bfloat16)
assert model.stages[0][0].weight.dtype == torch.bfloat16
print(status("VmHWM:") - floor, sum(p.nbytes for p in model.parameters()))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc (Linux)")
def test_converted_load_never_holds_two_copies(tmp_path: Path) -> None:
    widths = [256] * 16  # 9.4 M parameters in 16 equal tensors: 38 MB as float32, 19 MB as bfloat16
    torch.manual_seed(0)
    with loading.parameters_on_meta():
        model = ToyNetBackbone(ToyNetConfig(widths=widths))
    tensors = {key: torch.randn(value.shape) if value.is_floating_point() else torch.zeros((), dtype=value.dtype)
               for key, value in model.state_dict().items()}  # fmt: skip
    config = {**ToyNetConfig(widths=widths).to_dict()}
    _write_sharded(tmp_path / "big", tensors, config)
    _model().save_pretrained(tmp_path / "warmup")
    toynet = str(Path(__file__).parent / "third_party" / "backbones-toynet" / "src")
    code = MEMORY_PROBE.format(toynet=toynet, warmup=str(tmp_path / "warmup"), directory=str(tmp_path / "big"))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    peak, model_bytes = map(int, done.stdout.split())
    assert model_bytes == 2 * sum(parameter.numel() for parameter in model.parameters()) == 18_905_088
    # Holding the file's pages and the model would be 3x the model; one copy and the scratch is 1.13x.
    assert peak <= 1.5 * model_bytes, f"peak RSS {peak / 2**20:.1f} MiB for a {model_bytes / 2**20:.1f} MiB model"
