"""The hub path end to end: huggingface_hub's real client against a loopback hub on 127.0.0.1."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from reliability_support import (
    LoopbackHub,
    Request,
    _Handler,
    assert_state_equal,
    commit_of,
    feature_maps,
    save_tiny_resnet,
    tiny_resnet,
)

from backbones import AutoBackbone, AutoBackboneConfig, CheckpointError

REPO = "org/tiny-resnet"
CONFIG_HEAD = ("HEAD", f"/{REPO}/resolve/main/config.json")
CONFIG_GET = ("GET", f"/{REPO}/resolve/main/config.json")
WEIGHTS_HEAD = ("HEAD", f"/{REPO}/resolve/main/model.safetensors")


def _cdn(directory: Path) -> tuple[str, str]:
    return ("GET", "/cdn/" + hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest())


def _cache_files(cache: Path) -> list[str]:
    """Every file of the hub cache (relative), locks excluded."""
    return sorted(
        str(path.relative_to(cache)) for path in cache.rglob("*") if path.is_file() and ".locks" not in path.parts
    )


def _blob_names(cache: Path, repo: str = REPO) -> list[str]:
    return sorted(path.name for path in (cache / f"models--{repo.replace('/', '--')}" / "blobs").iterdir())


@pytest.fixture
def published(hub: LoopbackHub, tmp_path: Path) -> tuple[Path, dict]:
    source = tmp_path / "source"
    expected = save_tiny_resnet(source, seed=1)
    hub.publish(REPO, "main", source)
    return source, expected


def test_first_download_then_cache_hit_without_any_request(
    hub: LoopbackHub, published: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, expected = published
    cache = tmp_path / "cache"
    model = AutoBackbone.from_pretrained(REPO, cache_dir=cache)
    assert_state_equal(model, expected)
    assert hub.calls() == [CONFIG_HEAD, CONFIG_GET, WEIGHTS_HEAD, _cdn(source)]
    # The CDN is another host for the client: the download of the large file must not carry the token.
    hub.reset_calls()
    AutoBackbone.from_pretrained(REPO, cache_dir=cache, token="hf_secret", force_download=True)
    requests = {(r.method, r.path): r.headers for r in hub.requests}
    assert requests[CONFIG_HEAD]["authorization"] == "Bearer hf_secret"
    assert "authorization" not in requests[_cdn(source)]

    hub.reset_calls()
    again = AutoBackbone.from_pretrained(REPO, cache_dir=cache)
    config = AutoBackboneConfig.from_pretrained(REPO, cache_dir=cache)
    assert hub.calls() == [], "a cached checkpoint made requests"
    assert_state_equal(again, expected)
    assert config.depths == [1, 1] and config.hidden_sizes == [4, 8]

    # And with sockets banned outright: a cache hit never even resolves a host name.
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise AssertionError("network used")

    import socket

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert_state_equal(AutoBackbone.from_pretrained(REPO, cache_dir=cache), expected)
    assert attempts == [] and hub.calls() == []


def test_revisions_are_pinned_each_to_its_own_weights(hub: LoopbackHub, tmp_path: Path) -> None:
    first = save_tiny_resnet(tmp_path / "v1", seed=1)
    second = save_tiny_resnet(tmp_path / "v2", seed=2)
    commit_v1 = hub.publish(REPO, "v1", tmp_path / "v1")
    hub.publish(REPO, "main", tmp_path / "v2")
    cache = tmp_path / "cache"
    assert_state_equal(AutoBackbone.from_pretrained(REPO, cache_dir=cache, revision="v1"), first)
    assert_state_equal(AutoBackbone.from_pretrained(REPO, cache_dir=cache), second)
    assert_state_equal(AutoBackbone.from_pretrained(REPO, cache_dir=cache, revision="main"), second)
    hub.reset_calls()
    # Both revisions and the commit id of v1 now resolve from the cache alone.
    assert_state_equal(AutoBackbone.from_pretrained(REPO, cache_dir=cache, revision=commit_v1), first)
    assert_state_equal(AutoBackbone.from_pretrained(REPO, cache_dir=cache, revision="v1"), first)
    assert hub.calls() == []
    refs = cache / f"models--{REPO.replace('/', '--')}" / "refs"
    assert {path.name: path.read_text() for path in refs.iterdir()} == {
        "v1": commit_v1,
        "main": commit_of(f"{REPO}@main"),
    }
    with pytest.raises(CheckpointError, match=rf"revision 'v3' not found in hub repository '{REPO}'"):
        AutoBackbone.from_pretrained(REPO, cache_dir=cache, revision="v3")


def test_renamed_repository_redirect_is_followed(
    hub: LoopbackHub, published: tuple[Path, dict], tmp_path: Path
) -> None:
    _, expected = published
    hub.repos["org/old-name"] = type(hub.repos[REPO])(renamed_to=REPO)
    model = AutoBackbone.from_pretrained("org/old-name", cache_dir=tmp_path / "cache")
    assert_state_equal(model, expected)
    assert hub.calls()[:2] == [("HEAD", "/org/old-name/resolve/main/config.json"), CONFIG_HEAD]


def test_missing_repository_and_missing_file_are_named(
    hub: LoopbackHub, published: tuple[Path, dict], tmp_path: Path
) -> None:
    source, _ = published
    cache = tmp_path / "cache"
    with pytest.raises(
        CheckpointError,
        match=r"hub repository 'org/absent' not found \(or it is private: pass token=\.\.\. or log in with `hf auth login`\)",
    ):
        AutoBackbone.from_pretrained("org/absent", cache_dir=cache)
    (source / "model.safetensors").unlink()
    hub.publish("org/no-weights", "main", source)
    with pytest.raises(
        CheckpointError,
        match=r"no weights found for org/no-weights: looked for model.safetensors, model.safetensors.index.json and pytorch_model.bin",
    ):
        AutoBackbone.from_pretrained("org/no-weights", cache_dir=cache)
    (source / "config.json").unlink()
    (source / "README.md").write_text("no config here")
    hub.publish("org/no-config", "main", source)
    with pytest.raises(CheckpointError, match=r"^config.json of hub repository 'org/no-config' not found$"):
        AutoBackboneConfig.from_pretrained("org/no-config", cache_dir=cache)
    with pytest.raises(CheckpointError, match=r"^config.json of hub repository 'org/no-config' not found$"):
        AutoBackbone.from_pretrained("org/no-config", cache_dir=cache)


def test_plain_404_from_a_mirror_is_not_found_not_a_network_error(
    hub: LoopbackHub, published: tuple[Path, dict], tmp_path: Path
) -> None:
    """A mirror or proxy that answers 404 without the hub's X-Error-Code header."""

    def bare_404(handler: _Handler, request: Request) -> bool:
        if request.path.endswith("/config.json"):
            handler.answer(404, {})
            return True
        return False

    hub.faults.append(bare_404)
    with pytest.raises(CheckpointError, match=rf"^config.json of hub repository '{REPO}' not found$"):
        AutoBackboneConfig.from_pretrained(REPO, cache_dir=tmp_path / "cache")


def test_private_repository_needs_the_token(hub: LoopbackHub, tmp_path: Path) -> None:
    expected = save_tiny_resnet(tmp_path / "source", seed=3)
    hub.publish("org/private", "main", tmp_path / "source", token="hf_good")
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match=r"not found \(or it is private: pass token=\.\.\. or log in"):
        AutoBackbone.from_pretrained("org/private", cache_dir=cache)
    with pytest.raises(CheckpointError, match=r"not found \(or it is private: pass token=\.\.\. or log in"):
        AutoBackbone.from_pretrained("org/private", cache_dir=cache, token="hf_wrong")
    assert _cache_files(cache) == [], "a refused download left files in the cache"
    assert_state_equal(AutoBackbone.from_pretrained("org/private", cache_dir=cache, token="hf_good"), expected)


def test_unauthorized_answer_names_the_token(hub: LoopbackHub, published: tuple[Path, dict], tmp_path: Path) -> None:
    def refuse(handler: _Handler, request: Request) -> bool:
        handler.answer(401, {"X-Error-Message": "Invalid credentials in Authorization header"})
        return True

    hub.faults.append(refuse)
    with pytest.raises(
        CheckpointError,
        match=rf"the hub refused access to config.json of hub repository '{REPO}' \(HTTP 401\): pass a valid token=\.\.\. or log in",
    ):
        AutoBackbone.from_pretrained(REPO, cache_dir=tmp_path / "cache", token="hf_expired")


def _truncate_weights(times: int, then_status: int | None = None) -> tuple[list[str | None], object]:
    """A fault: the first ``times`` weight downloads send Content-Length, half the bytes, and hang up."""
    seen: list[str | None] = []

    def fault(handler: _Handler, request: Request) -> bool:
        if request.method != "GET" or not request.path.startswith("/cdn/"):
            return False
        seen.append(request.headers.get("range"))
        if len(seen) <= times:
            data = handler.hub.blob(request.path.rsplit("/", 1)[1])
            assert data is not None
            handler.send_data(data, {}, body=True, limit=len(data) // 2)
            return True
        if then_status is not None:
            handler.answer(then_status, {})
            return True
        return False

    return seen, fault


@pytest.fixture
def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """huggingface_hub pauses 1 s before resuming a broken download; record the pauses instead of sleeping."""
    from huggingface_hub import file_download

    pauses: list[float] = []
    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=pauses.append))
    return pauses


def test_interrupted_transfer_is_retried_to_exact_weights(
    hub: LoopbackHub, published: tuple[Path, dict], tmp_path: Path, no_retry_pause: list[float]
) -> None:
    _, expected = published
    ranges, fault = _truncate_weights(times=1)
    hub.faults.append(fault)  # type: ignore[arg-type]
    cache = tmp_path / "cache"
    assert_state_equal(AutoBackbone.from_pretrained(REPO, cache_dir=cache), expected)
    # The half that arrived was still in the client's buffer when the peer hung up, so nothing was written
    # and the retry starts afresh (no Range): the file is whole or absent, never spliced.
    assert ranges == [None, None]
    assert no_retry_pause == [1]
    assert not [name for name in _cache_files(cache) if name.endswith(".incomplete")]


def test_interrupted_transfer_that_cannot_resume_leaves_a_clean_cache(
    hub: LoopbackHub, published: tuple[Path, dict], tmp_path: Path, no_retry_pause: list[float]
) -> None:
    source, expected = published
    ranges, fault = _truncate_weights(times=1, then_status=503)
    hub.faults.append(fault)  # type: ignore[arg-type]
    cache = tmp_path / "cache"
    with pytest.raises(
        CheckpointError, match=rf"downloading model.safetensors of hub repository '{REPO}' failed: .*503"
    ):
        AutoBackbone.from_pretrained(REPO, cache_dir=cache)
    assert len(ranges) == 2
    snapshot = f"models--org--tiny-resnet/snapshots/{commit_of(REPO + '@main')}"
    config_blob = hashlib.sha1(
        b"blob %d\0" % (source / "config.json").stat().st_size + (source / "config.json").read_bytes()
    )
    assert _cache_files(cache) == sorted(
        [
            "CACHEDIR.TAG",
            f"models--org--tiny-resnet/blobs/{config_blob.hexdigest()}",
            "models--org--tiny-resnet/refs/main",
            f"{snapshot}/config.json",
        ]
    ), "the broken download left a partial file"
    hub.faults.clear()
    hub.reset_calls()
    assert_state_equal(AutoBackbone.from_pretrained(REPO, cache_dir=cache), expected)
    assert hub.calls() == [WEIGHTS_HEAD, _cdn(source)], "only the missing file is fetched"


def test_stalled_download_times_out_cleanly(
    hub: LoopbackHub,
    published: tuple[Path, dict],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_retry_pause: list[float],
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.2)

    def stall(handler: _Handler, request: Request) -> bool:
        if request.path.startswith("/cdn/"):
            handler.stall(5)  # far beyond the timeout; released when the hub stops
            return True
        return False

    hub.faults.append(stall)
    cache = tmp_path / "cache"
    started = time.monotonic()
    with pytest.raises(
        CheckpointError,
        match=rf"downloading model.safetensors of hub repository '{REPO}' failed \(ReadTimeout: timed out\); check the network",
    ):
        AutoBackbone.from_pretrained(REPO, cache_dir=cache)
    elapsed = time.monotonic() - started
    assert elapsed < 3, f"the 0.2 s timeout was not honoured ({elapsed:.1f} s)"
    assert [call for call in hub.calls() if call[1].startswith("/cdn/")] == [_cdn(published[0])] * 6
    assert no_retry_pause == [1] * 5, "huggingface_hub retries a stalled download 5 times"
    assert not [name for name in _cache_files(cache) if "model.safetensors" in name or name.endswith(".incomplete")]


def test_slow_metadata_answer_is_retried_after_the_etag_timeout(
    hub: LoopbackHub, published: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 0.2)
    stalled: list[str] = []

    def stall_first_head(handler: _Handler, request: Request) -> bool:
        if request.method == "HEAD" and not stalled:
            stalled.append(request.path)
            handler.stall(5)
            return True
        return False

    hub.faults.append(stall_first_head)
    started = time.monotonic()
    assert_state_equal(AutoBackbone.from_pretrained(REPO, cache_dir=tmp_path / "cache"), published[1])
    assert time.monotonic() - started < 3
    assert hub.calls()[:2] == [CONFIG_HEAD, CONFIG_HEAD], "the HEAD that timed out is asked again"


def test_offline_mode_uses_the_cache_and_names_a_miss(
    hub: LoopbackHub, published: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, expected = published
    cache = tmp_path / "cache"
    AutoBackbone.from_pretrained(REPO, cache_dir=cache)
    hub.reset_calls()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_state_equal(AutoBackbone.from_pretrained(REPO, cache_dir=cache), expected)
    with pytest.raises(
        CheckpointError,
        match=r"^config.json of hub repository 'org/other' is not in the local cache and HF_HUB_OFFLINE is set; "
        r"download it once with network access, or pass a local directory$",
    ):
        AutoBackbone.from_pretrained("org/other", cache_dir=cache)
    with pytest.raises(
        CheckpointError,
        match=r"config.json of hub repository 'org/tiny-resnet' at revision 'v9' is not in the local cache",
    ):
        AutoBackbone.from_pretrained(REPO, cache_dir=cache, revision="v9")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(CheckpointError, match=r"is not in the local cache and local_files_only=True"):
        AutoBackbone.from_pretrained("org/other", cache_dir=cache, local_files_only=True)
    assert hub.calls() == []


def test_loaded_hub_model_computes_what_the_saved_one_did(
    hub: LoopbackHub, published: tuple[Path, dict], tmp_path: Path
) -> None:
    loaded = AutoBackbone.from_pretrained(REPO, cache_dir=tmp_path / "cache")
    for ours, reference in zip(feature_maps(loaded), feature_maps(tiny_resnet(seed=1)), strict=True):
        assert torch.equal(ours, reference)


def test_unwritable_cache_is_named_not_blamed_on_the_network(
    hub: LoopbackHub, published: tuple[Path, dict], tmp_path: Path
) -> None:
    cache = tmp_path / "cache-is-a-file"
    cache.write_text("not a directory")
    with pytest.raises(
        CheckpointError,
        match=rf"^cannot store config.json of hub repository '{REPO}' in the hub cache \((FileExistsError|NotADirectoryError): "
        r".*check that the cache directory \(cache_dir or HF_HUB_CACHE\) is writable and has free space$",
    ):
        AutoBackbone.from_pretrained(REPO, cache_dir=cache)
    assert cache.read_text() == "not a directory"
