"""Shared helpers of the reliability tests: tiny checkpoints and a loopback hub speaking huggingface_hub's protocol.

Imported by name: ``conftest.py`` puts this folder on ``sys.path`` (pytest runs with ``--import-mode=importlib``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import torch

from backbones import AutoBackbone, AutoBackboneConfig, Backbone
from backbones.testing import randomize_weights_

PIXELS = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))

TINY_RESNET = {"embedding_size": 4, "hidden_sizes": [4, 8], "depths": [1, 1], "layer_type": "basic"}


def tiny_resnet(seed: int) -> Backbone:
    """A two-stage ResNet with every parameter and statistic drawn from ``seed``."""
    torch.manual_seed(seed)
    config = AutoBackboneConfig.for_model("resnet", out_indices=[1, 2], **TINY_RESNET)
    return randomize_weights_(AutoBackbone.from_config(config)).eval()


def save_tiny_resnet(directory: Path, seed: int) -> dict[str, torch.Tensor]:
    """Save :func:`tiny_resnet` ``(seed)`` with our own ``save_pretrained``; return its state dict."""
    model = tiny_resnet(seed)
    model.save_pretrained(directory)
    return {key: value.clone() for key, value in model.state_dict().items()}


def assert_state_equal(model: Backbone, expected: dict[str, torch.Tensor]) -> None:
    """Exact (atol=0) equality of every tensor, dtype included."""
    state = model.state_dict()
    assert sorted(state) == sorted(expected)
    for key, value in expected.items():
        assert state[key].dtype == value.dtype, key
        assert torch.equal(state[key], value), f"{key} differs"


def feature_maps(model: Backbone) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return tuple(model(PIXELS).feature_maps)


# -- the loopback hub ----------------------------------------------------------------------------


def commit_of(text: str) -> str:
    """A 40-hex commit id derived from ``text``."""
    return hashlib.sha1(text.encode()).hexdigest()


@dataclass
class Revision:
    commit: str
    files: dict[str, bytes]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Repo:
    revisions: dict[str, Revision] = field(default_factory=dict)
    token: str | None = None  # private: this bearer token is required
    renamed_to: str | None = None  # answers every request with a 307 to this repository


# A fault decides, per request, whether to take it over: it returns True when it answered (or hung up).
Fault = Callable[["_Handler", Request], bool]


class LoopbackHub:
    """A Hugging Face Hub look-alike on 127.0.0.1 for huggingface_hub's real client.

    Speaks what ``hf_hub_download`` needs: ``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` answered
    with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``; large files (``*.safetensors``) as the hub serves
    LFS files, a ``302`` carrying ``X-Linked-Etag``/``X-Linked-Size`` to a "CDN" (``localhost``, another
    host for the client, so it strips the token as it would for a real CDN); ``Range`` requests (``206``);
    the hub's ``X-Error-Code`` on 404 and 401. Every request is recorded. A daemon thread serves; the
    server stops on :meth:`stop` or, at the latest, after ``deadline_s``.
    """

    def __init__(self, deadline_s: float = 60.0) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._blobs: dict[str, bytes] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.hub = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._deadline = threading.Timer(deadline_s, self.stop)
        self._deadline.daemon = True

    def start(self) -> LoopbackHub:
        self._thread.start()
        self._deadline.start()
        return self

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()  # releases stalled handlers
        self._deadline.cancel()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    # -- content ------------------------------------------------------------------------------------

    def publish(self, repo_id: str, revision: str, directory: Path, *, token: str | None = None) -> str:
        """Serve every file of ``directory`` as ``repo_id`` at branch ``revision``; return its commit."""
        repo = self.repos.setdefault(repo_id, Repo())
        repo.token = token
        commit = commit_of(f"{repo_id}@{revision}")
        files = {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()}
        repo.revisions[revision] = Revision(commit, files)
        for data in files.values():
            self._blobs[hashlib.sha256(data).hexdigest()] = data
        return commit

    def find(self, repo_id: str, revision: str) -> Revision | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None
        if revision in repo.revisions:
            return repo.revisions[revision]
        return next((rev for rev in repo.revisions.values() if rev.commit == revision), None)

    def blob(self, sha256: str) -> bytes | None:
        return self._blobs.get(sha256)

    # -- observation --------------------------------------------------------------------------------

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def calls(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request so far, in arrival order."""
        with self._lock:
            return [(request.method, request.path) for request in self.requests]

    def reset_calls(self) -> None:
        with self._lock:
            self.requests.clear()


class _Handler(BaseHTTPRequestHandler):
    server_version = "LoopbackHub/1"

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
        pass

    @property
    def hub(self) -> LoopbackHub:
        return self.server.hub  # type: ignore[attr-defined,no-any-return]

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        request = Request(self.command, unquote(self.path), {k.lower(): v for k, v in self.headers.items()})
        self.hub.record(request)
        for fault in list(self.hub.faults):
            if fault(self, request):
                return
        parts = request.path.lstrip("/").split("/")
        if parts[0] == "cdn" and len(parts) == 2:
            data = self.hub.blob(parts[1])
            if data is None:
                self.answer(HTTPStatus.NOT_FOUND, {})
            else:
                self.send_data(data, {"ETag": f'"{parts[1]}"'}, body=body)
            return
        if len(parts) < 5 or parts[2] != "resolve":
            self.answer(HTTPStatus.NOT_FOUND, {"X-Error-Code": "RepoNotFound"})
            return
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self.answer(
                HTTPStatus.UNAUTHORIZED, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
            )
            return
        if repo.renamed_to is not None:
            self.answer(
                HTTPStatus.TEMPORARY_REDIRECT, {"Location": f"/{repo.renamed_to}/resolve/{revision}/{filename}"}
            )
            return
        if repo.token is not None and request.headers.get("authorization") != f"Bearer {repo.token}":
            # What the hub answers for a private repository and a missing or wrong token.
            self.answer(
                HTTPStatus.UNAUTHORIZED,
                {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Invalid credentials in Authorization header"},
            )
            return
        found = self.hub.find(repo_id, revision)
        if found is None:
            self.answer(HTTPStatus.NOT_FOUND, {"X-Error-Code": "RevisionNotFound"})
            return
        data = found.files.get(filename)
        if data is None:
            self.answer(HTTPStatus.NOT_FOUND, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": found.commit})
            return
        sha256 = hashlib.sha256(data).hexdigest()
        if filename.endswith(".safetensors"):
            self.answer(
                HTTPStatus.FOUND,
                {
                    "Location": f"http://localhost:{self.hub.port}/cdn/{sha256}",
                    "X-Repo-Commit": found.commit,
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(data)),
                },
            )
            return
        git_sha = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        self.send_data(data, {"ETag": f'"{git_sha}"', "X-Repo-Commit": found.commit}, body=body)

    # -- building blocks for the handler and for faults ---------------------------------------------

    def answer(self, status: HTTPStatus, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_data(self, data: bytes, headers: dict[str, str], *, body: bool, limit: int | None = None) -> None:
        """Send ``data`` (honouring ``Range: bytes=N-``); with ``limit``, hang up after that many body bytes."""
        start = 0
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes=") : -1])
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(HTTPStatus.OK)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body:
            payload = data[start:] if limit is None else data[start : start + limit]
            self.wfile.write(payload)
            self.wfile.flush()
        if limit is not None:
            self.close_connection = True
            self.connection.shutdown(2)

    def stall(self, seconds: float) -> None:
        """Wait (without answering) for ``seconds``, or until the hub stops."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.hub.stopping.wait(0.02):
            pass
