"""Smoke test of the benchmark harness (benchmarks/): the timing loop on a tiny model, the table and ratio code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.report import FORWARD_COLUMNS, forward_rows, median, ratio, render_markdown, verdict  # noqa: E402


def _forward_entry(arch: str, batch: int, ours: float, hf: float | None, timm: float | None) -> dict[str, Any]:
    samples = {
        "ours": [ours, ours * 2, ours / 2],  # median is ours
        "transformers": None if hf is None else [hf],
        "timm": None if timm is None else [timm, timm],
    }
    return {"arch": arch, "label": f"{arch}-tiny", "mode": "fp32", "batch": batch, "samples": samples}


def _results() -> dict[str, Any]:
    return {
        "meta": {
            "machine": {"cpu": "Test CPU", "cores": 2, "threads": 2, "platform": "Linux"},
            "versions": {"python": "3.11", "torch": "2.x", "transformers": "5.x", "timm": "1.x", "backbones": "0.1"},
            "date": "2024-01-01 00:00",
            "command": "python benchmarks/run.py --quick",
            "quick": True,
        },
        "imports": {
            "samples": {
                "python -c pass": [0.020, 0.020, 0.030],
                "import backbones": [0.045, 0.040, 0.050],
                "backbones list": [0.200],
                "from transformers import AutoBackbone": [2.5],
                "import timm": [3.8],
            },
            "torch_imported": {"import backbones": False, "backbones list": False},
        },
        "whole_process": {
            "swin": {
                "ours": {"time_s": [2.0, 2.2, 2.1], "rss_mib": [500.0]},
                "transformers": {"time_s": [4.0], "rss_mib": [1000.0]},
            }
        },
        "load": {"swin": {"ours": [0.1], "transformers": [0.4], "timm_create": [0.3]}},
        "forward": [
            _forward_entry("swin", 1, ours=0.060, hf=0.072, timm=0.083),  # 0.060 / 0.072
            _forward_entry("resnet", 1, ours=0.040, hf=0.034, timm=0.032),  # 0.040 / 0.032 -> MISS
            _forward_entry("nat", 1, ours=0.050, hf=None, timm=None),  # nothing to compare with
            _forward_entry("swin", 8, ours=0.400, hf=0.500, timm=None),
        ],
        "truncated": [{"arch": "swin", "batch": 1, "full": [0.060], "truncated": [0.015]}],
        "notes": {"nat": "our latency only"},
    }


def test_median_ratio_verdict() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([]) is None
    assert ratio(2.0, [4.0, 8.0]) == 0.5
    assert ratio(2.0, [None, 1.0]) == 2.0
    assert ratio(2.0, [None, None]) is None
    assert ratio(None, [1.0]) is None
    assert verdict(1.0, 1.0) == "pass"
    assert verdict(1.01, 1.0) == "MISS"
    assert verdict(None, 1.0) == "n/a"


def test_forward_rows_ratios() -> None:
    rows = forward_rows(_results()["forward"])
    by_key = {(row["arch"], row["batch"]): row for row in rows}
    assert by_key["swin", 1]["ratio"] == pytest.approx(0.060 / 0.072)
    assert by_key["swin", 1]["status"] == "pass"
    assert by_key["resnet", 1]["ratio"] == pytest.approx(0.040 / 0.032)
    assert by_key["resnet", 1]["status"] == "MISS"
    assert by_key["nat", 1]["ratio"] is None and by_key["nat", 1]["status"] == "n/a"
    assert by_key["swin", 8]["ratio"] == pytest.approx(0.8)


def test_markdown_tables() -> None:
    text = render_markdown(_results(), plot="img/plot.png")
    lines = text.splitlines()
    assert "Test CPU, 2 cores, torch threads 2" in text
    assert all(name in text for name in ("python 3.11", "torch 2.x", "transformers 5.x", "timm 1.x", "backbones 0.1"))
    assert "shared, noisy 2-core machine" in text
    assert "![forward latency](img/plot.png)" in text
    header = "| " + " | ".join(FORWARD_COLUMNS) + " |"
    assert header in lines
    start = lines.index(header)
    table = [line for line in lines[start + 2 :] if line.startswith("|")][:4]
    assert [line.split(" | ")[0] for line in table] == ["| swin", "| resnet", "| nat", "| swin"]
    assert table[0].endswith("| 60.0 | 72.0 | 83.0 | 0.83x | pass |")
    assert table[1].endswith("| 40.0 | 34.0 | 32.0 | 1.25x | MISS |")
    assert table[2].endswith("| 50.0 | n/a | n/a | n/a | n/a |")
    # Targets: import 25 ms over bare (pass), list 0.2 s (pass), whole wall 0.525x (pass), RSS 0.5x (pass),
    # batch 1 has a MISS (resnet), batch 8 passes, truncation 0.25x (pass).
    targets = lines[lines.index("## Targets (issue #8)") + 4 :]
    targets = [line for line in targets[: targets.index("")]]
    assert len(targets) == 7
    assert "25.0 ms; torch imported: False" in targets[0] and targets[0].endswith("| pass |")
    assert targets[1].endswith("| pass |")
    assert "0.53x" in targets[2] and targets[2].endswith("| pass |")
    assert "0.50x" in targets[3]
    assert "MISS: resnet" in targets[4] and targets[4].endswith("| MISS |")
    assert targets[5].endswith("| pass |")
    assert "0.25x" in targets[6] and targets[6].endswith("| pass |")


def test_interleaved_timing_on_a_tiny_model() -> None:
    torch = pytest.importorskip("torch")
    from benchmarks.run import interleaved, measure_forward
    from benchmarks.specs import arch_by_name

    order: list[str] = []
    samples = interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repetitions=2, warmup=1)
    assert order == ["a", "b", "a", "b", "b", "a"]  # warm-up, then the order rotates
    assert {name: len(values) for name, values in samples.items()} == {"a": 2, "b": 2}

    tiny = torch.nn.Conv2d(3, 4, 3).eval()
    arch = arch_by_name("resnet")
    result = measure_forward(
        {"ours": tiny, "transformers": None, "timm": tiny}, arch, 1, "channels_last", 1, 0, size=16
    )
    assert result["transformers"] is None and len(result["ours"]) == 1 and len(result["timm"]) == 1
    assert tiny.weight.is_contiguous()  # converted back after the channels_last measurement
    entry = {"arch": "resnet", "mode": "channels_last", "batch": 1, "samples": result}
    (row,) = forward_rows([entry])
    assert row["ratio"] == pytest.approx(row["ours"] / row["timm"])


def test_update_merges_rows_instead_of_replacing_sections() -> None:
    from benchmarks.run import merge_section

    previous = [
        {"arch": "swin", "mode": "fp32", "batch": 1, "samples": [1.0]},
        {"arch": "resnet", "mode": "fp32", "batch": 1, "samples": [2.0]},
    ]
    fresh = [
        {"arch": "resnet", "mode": "fp32", "batch": 1, "samples": [3.0]},
        {"arch": "resnet", "mode": "bf16", "batch": 1, "samples": [4.0]},
    ]
    assert merge_section(previous, fresh) == [previous[0], fresh[0], fresh[1]]
    assert merge_section({"a": 1, "b": 2}, {"b": 3}) == {"a": 1, "b": 3}
    assert merge_section(None, fresh) == fresh


def test_reparam_section_measures_and_renders() -> None:
    from backbones_resnet import ResNetBackbone, ResNetConfig
    from benchmarks.run import _measure_folding

    model = ResNetBackbone(ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1])).eval()
    settings = {"bs1": {"repetitions": 1, "warmup": 0, "budget_s": None, "max_repetitions": None}}
    row = _measure_folding("resnet", "resnet-tiny", model, settings)
    assert not model.is_reparameterized, "the measured copy is folded, not the model itself"
    # The stem, 3 + 3 bottleneck layers and stage 2's projection: 8 conv-norm pairs.
    assert (row["arch"], row["folded_blocks"], len(row["unfolded"]), len(row["folded"])) == ("resnet", 8, 1, 1)
    entry = {**row, "unfolded": [0.030], "folded": [0.020]}
    markdown = render_markdown({**_results(), "reparam": [entry]})
    assert "| resnet-tiny | 8 | 30.0 | 20.0 | 1.50x |" in markdown


@pytest.mark.skipif(sys.platform != "linux", reason="mallopt is glibc's (Linux); elsewhere the allocator is left as is")
def test_allocator_is_pinned_in_a_process_of_its_own() -> None:
    import platform
    import subprocess

    # In a child: pinning changes the allocator for the rest of the process, which the tests must not share.
    code = "from benchmarks.run import pin_allocator; print(pin_allocator())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    if platform.libc_ver()[0] == "glibc":
        assert done.stdout.strip() == "glibc, pinned: M_MMAP_THRESHOLD=32 MiB, M_TRIM_THRESHOLD=1 GiB"
    else:
        assert done.stdout.strip().startswith("platform default")  # e.g. musl: mallopt refuses
    results = _results()
    results["meta"]["allocator"] = done.stdout.strip()
    assert f"- **Allocator**: {done.stdout.strip()} for the run." in render_markdown(results)
    results["meta"]["updates"] = [
        {"command": "run.py --only x", "date": "d", "sections": ["forward"], "allocator": "A"}
    ]
    markdown = render_markdown(results)
    assert "re-measured by `run.py --only x` on d (allocator: A)." in markdown
    assert "for the run (each re-measurement above says its own)." in markdown


def test_forward_scale_multiplies_repetitions_and_budgets_only() -> None:
    from benchmarks.run import _settings

    plain, scaled = _settings(quick=False), _settings(quick=False, forward_scale=3)
    assert scaled["bs1"] == {
        "repetitions": 3 * plain["bs1"]["repetitions"],
        "warmup": plain["bs1"]["warmup"],
        "budget_s": 3 * plain["bs1"]["budget_s"],
        "max_repetitions": 3 * plain["bs1"]["max_repetitions"],
    }
    assert scaled["bs8"]["repetitions"] == 3 * plain["bs8"]["repetitions"]
    assert {key: scaled[key] for key in ("import_reps", "load_reps")} == {"import_reps": 5, "load_reps": 2}
    assert _settings(quick=True, forward_scale=2)["bs8"]["budget_s"] is None  # no budget stays no budget
