"""The kit's two-rank launcher (backbones.testing._distributed.launch): a failing rank stops the other and
fails the check with both ranks' output; a rank killed by a signal is tried once more, a Python error is not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from backbones import Backbone
from backbones.testing._distributed import launch

# Workers without torch: each rank counts its attempts in the output directory, then does what WORKER says.
WORKER = """
import json, os, signal, sys, time
from pathlib import Path
out = Path(sys.argv[1]).parent
rank = int(os.environ["RANK"])
assert os.environ["WORLD_SIZE"] == "2" and os.environ["MASTER_ADDR"] == "127.0.0.1"
attempt = len(list(out.glob(f"attempt-{rank}-*"))) + 1
(out / f"attempt-{rank}-{attempt}").write_text(os.environ["MASTER_PORT"])
mode = "{mode}"
if mode == "python_error" and rank == 1:
    raise SystemExit("rank 1 refuses: a Python error")
if mode == "python_error":
    time.sleep(600)  # rank 0 waits for a peer that will never come: the launcher must stop it
if mode == "hang":
    time.sleep(600)
if mode == "abort_once" and rank == 0 and attempt == 1:
    os.kill(os.getpid(), signal.SIGABRT)
"""


def _model() -> Backbone:
    from backbones_toynet.model import ToyNetBackbone, ToyNetConfig

    return ToyNetBackbone(ToyNetConfig())


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    def make(mode: str) -> str:
        package = tmp_path / "workers"
        package.mkdir(exist_ok=True)
        (package / f"worker_{mode}.py").write_text(WORKER.replace("{mode}", mode))
        monkeypatch.setenv("PYTHONPATH", str(package))
        return f"worker_{mode}"

    return make


def test_a_failing_rank_stops_the_other_and_is_not_retried(tmp_path: Path, worker: Callable[[str], str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AssertionError, match=r"ranks exited with \[-9, 1\]") as caught:
        launch(_model(), worker("python_error"), out, batch_size=1, channels=3, size=[8, 8])
    assert "rank 1 refuses: a Python error" in str(caught.value)
    assert sorted(path.name for path in out.glob("attempt-*")) == ["attempt-0-1", "attempt-1-1"]


def test_a_rank_killed_by_a_signal_is_tried_once_more(tmp_path: Path, worker: Callable[[str], str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    launch(_model(), worker("abort_once"), out, batch_size=1, channels=3, size=[8, 8])
    attempts = sorted(path.name for path in out.glob("attempt-*"))
    assert attempts == ["attempt-0-1", "attempt-0-2", "attempt-1-1", "attempt-1-2"]
    # Both ranks of a try rendezvous on the same port.
    for attempt in (1, 2):
        assert (out / f"attempt-0-{attempt}").read_text() == (out / f"attempt-1-{attempt}").read_text()


def test_ranks_that_run_out_of_time_are_stopped_and_not_retried(
    tmp_path: Path, worker: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from backbones.testing import _distributed

    monkeypatch.setattr(_distributed, "_TIMEOUT_S", 1)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AssertionError, match=r"ranks exited with \[-9, -9\]\nthe ranks were stopped after 1 s"):
        launch(_model(), worker("hang"), out, batch_size=1, channels=3, size=[8, 8])
    assert sorted(path.name for path in out.glob("attempt-*")) == ["attempt-0-1", "attempt-1-1"]
