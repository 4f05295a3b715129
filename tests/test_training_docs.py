"""The fine-tuning examples of docs/training.md run as written and print what the page says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

TRAINING = Path(__file__).resolve().parent.parent / "docs" / "training.md"


def _example(section: str) -> str:
    text = TRAINING.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    (code,) = re.findall(r"```python\n(.*?)```", text[start:end], re.DOTALL)
    return code


def _run(section: str) -> str:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(_example(section), f"docs/training.md ({section})", "exec"), {})
    return output.getvalue()


def test_parameter_groups_example() -> None:
    lines = _run("Optimizer parameter groups").splitlines()
    # Three blocks (layers 1-3; the patch merging joins the block after it), then the output norms (layer 4);
    # the frozen patch embedding (layer 0) has no group. Layer l learns at 0.75 ** (4 - l).
    assert lines == [
        "1 0.421875 0.05 6", "1 0.421875 0.0 11", "2 0.5625 0.05 7", "2 0.5625 0.0 13",
        "3 0.75 0.05 6", "3 0.75 0.0 11", "4 1.0 0.0 4",
    ]  # fmt: skip


def test_non_rgb_example() -> None:
    output = _run("Non-RGB input from RGB weights")
    assert output.strip() == (
        "{'embedder.embedder.convolution.weight': '3 -> 4 input channels, filters repeated cyclically, scaled by 3/4'}"
    )


def test_lora_example() -> None:
    pytest.importorskip("peft")
    trainable, difference = _run("LoRA (peft)").splitlines()
    # Rank 8 on six linears of each of the two layers (16 wide, MLP 64).
    assert trainable.startswith("trainable params: 4,608 || all params: ")
    assert float(difference.removeprefix("tensor(").removesuffix(")")) < 1e-5
