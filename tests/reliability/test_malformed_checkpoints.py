"""Malformed weights (safetensors, shards, pickles) and checkpoints that try to run code."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from reliability_support import assert_state_equal, save_tiny_resnet
from safetensors.torch import load_file, save_file

from backbones import AutoBackbone, CheckpointError, UnknownModelTypeError, WeightsMismatchError

STEM = "embedder.embedder.convolution.weight"  # [4, 3, 7, 7]


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    return tmp_path / "ckpt", save_tiny_resnet(tmp_path / "ckpt", seed=4)


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _join(header: bytes, body: bytes) -> bytes:
    return len(header).to_bytes(8, "little") + header + body


def _forge(weights: Path, edit: Any) -> None:
    header, body = _split(weights.read_bytes())
    edit(header)
    weights.write_bytes(_join(json.dumps(header).encode(), body))


def test_forged_safetensors_headers_are_named(saved: tuple[Path, dict]) -> None:
    directory, _ = saved
    weights = directory / "model.safetensors"
    original = weights.read_bytes()
    header, body = _split(original)
    first, second = sorted((key for key in header if key != "__metadata__"), key=lambda k: header[k]["data_offsets"])[
        :2
    ]
    cases: list[tuple[bytes, str]] = [
        # Header length larger than the file.
        (
            len(original).to_bytes(8, "little") + original[8:],
            rf"declares a {len(original)}-byte header in a {len(original)}-byte file",
        ),
        # Not UTF-8.
        (
            _join(b'{"\xff\xfe": 1}', body),
            r"has a header that is not valid UTF-8 JSON \('utf-8' codec can't decode byte 0xff",
        ),
        # Valid JSON with a key named twice: json would silently keep the last one.
        (
            _join(
                json.dumps(header).encode()[:-1]
                + b', "'
                + STEM.encode()
                + b'": '
                + json.dumps(header[STEM]).encode()
                + b"}",
                body,
            ),
            rf"has a header that names '{STEM}' twice, so which data it means is ambiguous",
        ),
        # Nested far too deep.
        (_join(b"[" * 100_000 + b"]" * 100_000, body), r"has a header nested too deeply to be a safetensors header"),
        # A header that is JSON but not an object.
        (_join(b"[1, 2]", body), r"has a header that is not a JSON object"),
    ]
    for data, message in cases:
        weights.write_bytes(data)
        with pytest.raises(CheckpointError, match=message):
            AutoBackbone.from_pretrained(directory)

    def overlap(h: dict[str, Any]) -> None:  # the second tensor reads the first one's bytes, same length
        start, end = h[second]["data_offsets"]
        length = end - start
        h[second]["data_offsets"] = [h[first]["data_offsets"][0], h[first]["data_offsets"][0] + length]

    weights.write_bytes(original)
    _forge(weights, overlap)
    with pytest.raises(
        CheckpointError, match=r"lets tensors '.+' \(bytes \d+-\d+\) and '.+' \(bytes \d+-\d+\) overlap"
    ):
        AutoBackbone.from_pretrained(directory)

    def wrong_dtype(h: dict[str, Any]) -> None:  # F32 data declared F64: the byte count no longer fits
        h[STEM]["dtype"] = "F64"

    for edit, message in [
        (
            wrong_dtype,
            rf"says tensor '{STEM}' \(F64, shape \[4, 3, 7, 7\]\) spans 2352 bytes, but that shape needs 4704",
        ),
        (lambda h: h[STEM].update(dtype="F128"), rf"gives tensor '{STEM}' the unsupported dtype 'F128'"),
        (lambda h: h[STEM].update(shape=[4, -3, 7, 7]), rf"gives tensor '{STEM}' the invalid shape \[4, -3, 7, 7\]"),
        (
            lambda h: h[STEM].update(shape=[2**62, 2**62]),
            rf"says tensor '{STEM}' \(F32, shape \[{2**62}, {2**62}\]\) spans",
        ),
        (
            lambda h: h[STEM].update(data_offsets=[100, 50]),
            rf"gives tensor '{STEM}' the invalid data_offsets \[100, 50\]",
        ),
        (lambda h: h.update({STEM: "x"}), rf"describes tensor '{STEM}' with 'x', not an object"),
    ]:
        weights.write_bytes(original)
        _forge(weights, edit)
        with pytest.raises(CheckpointError, match=message):
            AutoBackbone.from_pretrained(directory)


def test_model_mismatch_names_key_dtype_and_shapes(saved: tuple[Path, dict]) -> None:
    directory, expected = saved
    tensors = load_file(directory / "model.safetensors")
    save_file({**tensors, STEM: torch.zeros(4, 3, 5, 5)}, directory / "model.safetensors")
    with pytest.raises(WeightsMismatchError, match=rf"{STEM}: checkpoint \[4, 3, 5, 5\] vs model \[4, 3, 7, 7\]"):
        AutoBackbone.from_pretrained(directory)
    save_file({**tensors, STEM: tensors[STEM].to(torch.int32)}, directory / "model.safetensors")
    with pytest.raises(WeightsMismatchError, match=rf"{STEM}: checkpoint torch.int32 vs model torch.float32"):
        AutoBackbone.from_pretrained(directory)
    counter = "embedder.embedder.normalization.num_batches_tracked"
    save_file({**tensors, counter: tensors[counter].float()}, directory / "model.safetensors")
    with pytest.raises(WeightsMismatchError, match=rf"{counter}: checkpoint torch.float32 vs model torch.int64"):
        AutoBackbone.from_pretrained(directory)
    # Float precision is a choice, not a mismatch: bfloat16 weights load (upcast) into a float32 model.
    save_file({**tensors, STEM: tensors[STEM].to(torch.bfloat16)}, directory / "model.safetensors")
    loaded = AutoBackbone.from_pretrained(directory)
    assert torch.equal(loaded.state_dict()[STEM], tensors[STEM].to(torch.bfloat16).float())
    save_file(tensors, directory / "model.safetensors")
    assert_state_equal(AutoBackbone.from_pretrained(directory), expected)


def _shard(directory: Path) -> dict[str, str]:
    tensors = load_file(directory / "model.safetensors")
    (directory / "model.safetensors").unlink()
    keys = sorted(tensors)
    weight_map = {key: f"model-0000{1 + (i % 2)}-of-00002.safetensors" for i, key in enumerate(keys)}
    for name in set(weight_map.values()):
        save_file({k: tensors[k] for k, v in weight_map.items() if v == name}, directory / name)
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weight_map


def test_sharded_index_must_match_its_shards(saved: tuple[Path, dict]) -> None:
    directory, expected = saved
    weight_map = _shard(directory)
    assert_state_equal(AutoBackbone.from_pretrained(directory), expected)
    index = directory / "model.safetensors.index.json"
    # A key listed in a shard that does not hold it: loading it would silently leave that weight random.
    shard_one = "model-00001-of-00002.safetensors"
    moved = next(key for key, shard in weight_map.items() if shard != shard_one)
    index.write_text(json.dumps({"weight_map": {**weight_map, moved: shard_one}}))
    with pytest.raises(
        CheckpointError,
        match=rf"model.safetensors.index.json says tensor '{moved}' is in shard '{shard_one}', which does not hold it",
    ):
        AutoBackbone.from_pretrained(directory)
    index.write_text(json.dumps({"weight_map": {**weight_map, "extra.weight": "model-00003-of-00003.safetensors"}}))
    with pytest.raises(CheckpointError, match=r"names shard 'model-00003-of-00003.safetensors', which is missing from"):
        AutoBackbone.from_pretrained(directory)
    for shard in ["../model-00001-of-00002.safetensors", "/etc/passwd", "sub\\x.safetensors"]:
        index.write_text(json.dumps({"weight_map": {moved: shard}}))
        with pytest.raises(CheckpointError, match=r"names shard .*, which is not a plain file name"):
            AutoBackbone.from_pretrained(directory)
    index.write_text(json.dumps({"weight_map": ["not", "a", "mapping"]}))
    with pytest.raises(
        CheckpointError, match=r"has no valid 'weight_map' \(a mapping of tensor names to shard files\)"
    ):
        AutoBackbone.from_pretrained(directory)
    index.write_text(json.dumps({"weight_map": weight_map}))
    assert_state_equal(AutoBackbone.from_pretrained(directory), expected)


class _Payload:
    """Unpickling this creates the marker file (through os.system): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payloads_never_run(saved: tuple[Path, dict], tmp_path: Path) -> None:
    """Complements tests/test_loading.py (raw pickle): torch.save's zip format, sharded pickles, disguises."""
    directory, _ = saved
    marker = tmp_path / "PWNED"
    tensors = load_file(directory / "model.safetensors")
    (directory / "model.safetensors").unlink()
    torch.save({**tensors, STEM: _Payload(marker)}, directory / "pytorch_model.bin")  # zip format, like real ones
    with pytest.raises(
        CheckpointError, match=r"has only pytorch_model.bin, a pickle checkpoint; unpickling can run arbitrary code"
    ):
        AutoBackbone.from_pretrained(directory)
    with pytest.raises(
        CheckpointError,
        match=r"cannot load pickle checkpoint .*pytorch_model.bin with weights_only=True: .*posix.system|system",
    ):
        AutoBackbone.from_pretrained(directory, allow_pickle=True)
    assert not marker.exists(), "the pickle payload ran"

    # Sharded pickles: refused before any shard is opened, and shards opened with weights_only=True.
    (directory / "pytorch_model.bin").unlink()
    torch.save({STEM: _Payload(marker)}, directory / "pytorch_model-00001-of-00001.bin")
    (directory / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": {STEM: "pytorch_model-00001-of-00001.bin"}})
    )
    with pytest.raises(CheckpointError, match=r"has only pytorch_model.bin.index.json, a pickle checkpoint"):
        AutoBackbone.from_pretrained(directory)
    with pytest.raises(CheckpointError, match=r"with weights_only=True"):
        AutoBackbone.from_pretrained(directory, allow_pickle=True)
    assert not marker.exists(), "the pickle payload ran"

    # A pickle disguised as safetensors is read as (invalid) safetensors, never unpickled.
    with open(directory / "model.safetensors", "wb") as handle:
        pickle.dump({STEM: _Payload(marker)}, handle)
    with pytest.raises(CheckpointError, match=r"model.safetensors declares a \d+-byte header"):
        AutoBackbone.from_pretrained(directory, allow_pickle=True)
    assert not marker.exists(), "the pickle payload ran"


def test_checkpoint_code_is_never_imported(saved: tuple[Path, dict], tmp_path: Path) -> None:
    """transformers' trust_remote_code has no equivalent: auto_map and model_type never import files."""
    directory, expected = saved
    marker = tmp_path / "IMPORTED"
    (directory / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Evil: pass\n")
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoBackbone": "modeling_evil.Evil", "AutoConfig": "modeling_evil.Evil"}
    config["trust_remote_code"] = True
    (directory / "config.json").write_text(json.dumps(config))
    assert_state_equal(AutoBackbone.from_pretrained(directory), expected)
    for model_type in ["modeling_evil:Evil", "modeling_evil.Evil", "os:system"]:
        (directory / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
        with pytest.raises(UnknownModelTypeError, match=rf"unknown model_type '{model_type}'"):
            AutoBackbone.from_pretrained(directory)
    assert not marker.exists(), "code from the checkpoint ran"
