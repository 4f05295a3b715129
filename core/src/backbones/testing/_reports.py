"""A checkpoint loaded with its report checked in one call, for plugins' loading tests."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .. import AutoBackbone, Backbone, LoadReport

__all__ = ["assert_load_report"]


def assert_load_report(
    source: str | os.PathLike[str],
    *,
    prefix: str = "",
    missing_keys: Sequence[str] = (),
    unused_keys: Sequence[str] = (),
    **load_options: Any,
) -> tuple[Backbone, LoadReport]:
    """Load ``source`` with :meth:`backbones.AutoBackbone.from_pretrained` and check its whole key report.

    What is not given is expected empty: with no arguments, the load must be clean and unmapped.

    Args:
        source: The checkpoint (a directory saved by transformers or by backbones).
        prefix: The report's :attr:`~backbones.LoadReport.prefix` exactly, e.g. ``"'resnet.' removed"``,
            ``"'bit.' added"``, ``"keys renamed"``.
        missing_keys: The model keys the checkpoint lacks, in the report's (sorted) order.
        unused_keys: The checkpoint keys the model does not use, in the report's (sorted) order.
        **load_options: Passed to ``from_pretrained`` (``out_indices=[-1]``, ``checkpoint_prefix=...``).

    Returns:
        The model and its report, for further checks.

    Raises:
        AssertionError: A field of the report differs; the message shows the whole report.
    """
    model, report = AutoBackbone.from_pretrained(source, output_loading_info=True, **load_options)
    expected = (prefix, list(missing_keys), list(unused_keys))
    got = (report.prefix, report.missing_keys, report.unused_keys)
    assert got == expected, f"(prefix, missing_keys, unused_keys) {got} != expected {expected}; report:\n{report}"
    return model, report
