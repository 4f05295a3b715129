"""Loading from many threads gives exactly what a serial load gives (registry discovery under threads:
tests/test_registry.py::test_concurrent_first_use_discovers_once)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from reliability_support import LoopbackHub, assert_state_equal, feature_maps, save_tiny_resnet

from backbones import AutoBackbone


def test_same_and_different_checkpoints_from_eight_threads(tmp_path: Path) -> None:
    directories = [tmp_path / f"ckpt{seed}" for seed in range(4)]
    for seed, directory in enumerate(directories):
        save_tiny_resnet(directory, seed=10 + seed)
    serial = {directory: AutoBackbone.from_pretrained(directory) for directory in directories}
    jobs = [directories[0]] * 8 + directories * 2  # the same checkpoint 8 times, then each one twice
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(AutoBackbone.from_pretrained, jobs))
    assert len(results) == 16
    for directory, model in zip(jobs, results):
        reference = serial[directory]
        assert_state_equal(model, reference.state_dict())
        for ours, theirs in zip(feature_maps(model), feature_maps(reference), strict=True):
            assert torch.equal(ours, theirs)
        assert all(p.device.type == "cpu" for p in model.parameters()), "a parameter stayed on meta"


def test_concurrent_first_download_of_one_hub_id(hub: LoopbackHub, tmp_path: Path) -> None:
    expected = save_tiny_resnet(tmp_path / "source", seed=6)
    hub.publish("org/shared", "main", tmp_path / "source")
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: AutoBackbone.from_pretrained("org/shared", cache_dir=cache), range(8)))
    for model in results:
        assert_state_equal(model, expected)
    repo = cache / "models--org--shared"
    blobs = {path.name: path.read_bytes() for path in (repo / "blobs").iterdir()}
    weights = (tmp_path / "source" / "model.safetensors").read_bytes()
    assert blobs[hashlib.sha256(weights).hexdigest()] == weights
    assert len(blobs) == 2, f"partial or duplicate blobs: {sorted(blobs)}"
    (snapshot,) = (repo / "snapshots").iterdir()
    assert sorted(path.name for path in snapshot.iterdir()) == ["config.json", "model.safetensors"]
    assert (snapshot / "model.safetensors").read_bytes() == weights
    assert not [path for path in cache.rglob("*.incomplete")]
    # Each thread asked at least for what it needed; after that, the cache answers alone.
    downloads = [call for call in hub.calls() if call[1].startswith("/cdn/")]
    assert 1 <= len(downloads) <= 8
    hub.reset_calls()
    assert_state_equal(AutoBackbone.from_pretrained("org/shared", cache_dir=cache), expected)
    assert hub.calls() == []
