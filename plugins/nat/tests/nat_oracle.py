"""The transformers 4.53.3 oracle of the NAT and DiNAT tests, and the declarations both share (backbones-dinat's
tests import this module).

transformers 4.53.3 is the last release whose DiNAT works and whose deprecated models include NAT.
It is installed once, with pip, into ``<repo>/.venvs/transformers-4.53.3`` (git-ignored), next to
nothing else: the oracle runs on this test environment's Python and torch, with that folder first on
``PYTHONPATH``. natten is not installed; a fake ``natten`` package whose two kernels are the
brute-force references of ``natten_reference.py`` takes its place.

:func:`run_oracle` runs every case of a test module in one subprocess (``oracle_script.py``): it builds
the reference models, re-randomises every weight, saves checkpoints and writes the expected outputs.

:class:`NatFamilyConformance` and :class:`NatFamilyRecordedParity` are what NAT's and DiNAT's tests declare
alike; each test module subclasses them with its own configs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from safetensors.torch import load_file

from backbones import AutoBackbone
from backbones.testing import RecordedParity, randomize_weights_
from backbones.testing.hierarchical import HierarchicalConformance

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parents[2]
ORACLE_VERSION = "4.53.3"
ORACLE_HOME = ROOT / ".venvs" / f"transformers-{ORACLE_VERSION}"
# transformers itself, the two dependencies it pins below what this environment has, and requests
# (which it imports and this environment may lack). Everything else comes from this environment.
ORACLE_REQUIREMENTS = (
    f"transformers=={ORACLE_VERSION}",
    "huggingface_hub>=0.30,<1.0",
    "tokenizers>=0.21,<0.22",
    "requests>=2.30",
    "urllib3>=1.21.1",
    "certifi",
    "charset_normalizer>=2",
    "idna>=2.5",
)
_MARKER = ".installed"


def _check_import(home: Path) -> None:
    code = "import transformers, sys; assert transformers.__version__ == sys.argv[1], transformers.__version__"
    result = subprocess.run(
        [sys.executable, "-c", code, ORACLE_VERSION], env=subprocess_environment(home), capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(f"transformers {ORACLE_VERSION} in {home} does not import:\n{result.stderr}")


def subprocess_environment(*paths: Path) -> dict[str, str]:
    """This process's environment with ``paths`` first on ``PYTHONPATH``, and the hub offline."""
    inherited = os.environ.get("PYTHONPATH")
    entries = [str(path) for path in paths] + ([inherited] if inherited else [])
    # Offline: the oracle never downloads anything, and transformers must not try.
    return {**os.environ, "PYTHONPATH": os.pathsep.join(entries), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def ensure_oracle_env() -> Path:
    """Install the oracle into ``.venvs/`` unless a complete install is there; return its folder.

    Safe under pytest-xdist: a file lock serialises workers, the install goes to a temporary folder that
    is renamed into place, and a marker file names the requirements it was made from.
    """
    from filelock import FileLock

    wanted = "\n".join(ORACLE_REQUIREMENTS) + "\n"
    marker = ORACLE_HOME / _MARKER
    ORACLE_HOME.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(ORACLE_HOME) + ".lock", timeout=900):
        if marker.is_file() and marker.read_text() == wanted:
            return ORACLE_HOME
        staging = ORACLE_HOME.with_name(ORACLE_HOME.name + ".partial")
        for stale in (staging, ORACLE_HOME):
            if stale.exists():
                shutil.rmtree(stale)
        command = [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
            "--target", str(staging), *ORACLE_REQUIREMENTS,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            pytest.fail(f"could not install the transformers {ORACLE_VERSION} oracle:\n{result.stderr[-3000:]}")
        _check_import(staging)
        staging.rename(ORACLE_HOME)
        marker.write_text(wanted)
    return ORACLE_HOME


def fake_natten(directory: Path) -> Path:
    """Write a ``natten`` package (version 0.14.6, which transformers accepts) backed by the references.

    Returns the folder to put on ``PYTHONPATH``, together with this tests folder (:data:`TESTS`).
    """
    package = directory / "natten"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('__version__ = "0.14.6"\n')
    (package / "functional.py").write_text(
        textwrap.dedent(
            """\
            # Brute-force stand-ins for natten 0.14's CPU/CUDA kernels, from the backbones-nat tests.
            from natten_reference import natten2dav, natten2dqkrpb

            __all__ = ["natten2dav", "natten2dqkrpb"]
            """
        )
    )
    info = directory / "natten-0.14.6.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: natten\nVersion: 0.14.6\n")
    return directory


def run_oracle(cases: list[dict[str, Any]], directory: Path) -> Path:
    """Run ``cases`` (see ``oracle_script.py``) with transformers 4.53.3; outputs go to ``directory/<name>``."""
    home = ensure_oracle_env()
    fake = fake_natten(directory / "_fake_natten")
    spec = directory / "cases.json"
    spec.write_text(json.dumps(cases, indent=1))
    result = subprocess.run(
        [sys.executable, str(TESTS / "oracle_script.py"), str(spec), str(directory)],
        env=subprocess_environment(home, fake, TESTS),
        capture_output=True,
        text=True,
    )
    if result.returncode:
        pytest.fail(f"the transformers {ORACLE_VERSION} oracle failed:\n{result.stderr[-5000:]}")
    return directory


ALL_STAGES = [0, 1, 2, 3]
# The layout of the recorded task models (spread over a test module's three-stage config): three stages of 2, 1
# and 1 layers, an MLP twice as wide as its input, and layer scales.
CLASSIFIER_LAYOUT: dict[str, Any] = {
    "depths": [2, 1, 1],
    "num_heads": [1, 2, 4],
    "mlp_ratio": 2.0,
    "layer_scale_init_value": 0.5,
}
# The output norm of each stage named, as load-report key templates.
NORM_KEYS = ("hidden_states_norms.{stage}.bias", "hidden_states_norms.{stage}.weight")
# 40 x 56 and 38 x 50 give maps of 10 x 14 / 10 x 13, 5 x 7 and 3 x 4: the last stages pad at least one axis.
INPUTS = [[2, 64, 64, 1], [2, 40, 56, 2], [1, 38, 50, 3]]


class NatFamilyConformance(HierarchicalConformance):
    """The conformance declaration of a NAT-family backbone; a subclass sets ``model_type``, ``config_class`` and
    ``config``."""

    # Any input size works: maps smaller than the (dilated) window are padded. Under torch.export the padding
    # is virtual and every size-dependent choice symbolic (padded_neighborhood_attention_2d), so one program
    # serves maps both smaller and larger than the window; exported from 16 (twice the deepest stride:
    # torch.export specialises maps of size 1) to 1024.
    export_range = (16, 1024)
    # nat-mini's and dinat-mini's widths (the config classes' defaults).
    default_pyramid = (64, 128, 256, 512)


class NatFamilyRecordedParity(RecordedParity):
    """Parity with transformers 4.53.3's NAT-family models, recorded by :func:`run_oracle` (marked ``oracle``).

    The recording: ``backbone``, transformers' backbone of ``small`` (three stages) with every stage selected,
    its hidden states, attentions and gradients at :data:`INPUTS`; ``extra_cases``; ``classifier``, its task
    model of ``classifier``; ``saved_by_us``, our backbone of ``small`` (selecting ``saved_out_indices``) loaded
    by transformers.

    Class attributes (besides :class:`~backbones.testing.RecordedParity`'s):
        small: Config arguments of the recorded backbone.
        classifier: Config arguments of the recorded task model (with layer scales).
        base_model_prefix: transformers' base-model prefix, which a task checkpoint's keys start with: the model
            type (``"nat"``), set from ``backbone_class``.
        saved_out_indices: The selection of our saved backbone.
        extra_cases: More oracle cases (``oracle_script.py``'s format) recorded in the same run.
        classifier_fields: Values our config class reads from the task checkpoint's ``config.json``.
    """

    pytestmark = pytest.mark.oracle
    small: ClassVar[dict[str, Any]]
    classifier: ClassVar[dict[str, Any]]
    base_model_prefix: ClassVar[str]
    saved_out_indices: ClassVar[tuple[int, ...]]
    extra_cases: ClassVar[tuple[dict[str, Any], ...]] = ()
    classifier_fields: ClassVar[dict[str, Any]] = {}
    out_indices = (tuple(ALL_STAGES), (-1,), (1, 3), (0, 2))
    backbone_unused_keys = NORM_KEYS
    # Channels-last, stem then every stage before its downsampling, as transformers returns them.
    hidden_state_shapes = ((2, 16, 16, 16), (2, 16, 16, 16), (2, 8, 8, 32), (2, 4, 4, 64))
    task_case = "classifier"
    # The reference holds the same trunk with its own norms at their initial values, as transformers does.
    task_missing_keys = NORM_KEYS
    task_trunk_unexpected_keys = ("layernorm.bias", "layernorm.weight")
    round_trip_case = "saved_by_us"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        prefix = cls.base_model_prefix = cls.backbone_class.config_class.model_type
        cls.task_unused_keys = (
            "classifier.bias",
            "classifier.weight",
            f"{prefix}.layernorm.bias",
            f"{prefix}.layernorm.weight",
        )
        cls.task_prefix = f"'{prefix}.' removed"

    def record(self, directory: Path) -> Path:
        """Every oracle case of the test module, run in one subprocess."""
        config = self.backbone_class.config_class(out_indices=list(self.saved_out_indices), **self.small)
        ours = self.backbone_class(config)
        randomize_weights_(ours, seed=11).eval().save_pretrained(directory / "ours")
        name = self.reference_backbone_class
        cases = [
            {
                "name": "backbone",
                "class": name,
                "config": {**self.small, "out_indices": ALL_STAGES},
                "seed": 3,
                "inputs": INPUTS,
                "hidden_states": True,
                "attentions": True,
                "gradients": True,
            },
            *self.extra_cases,
            {
                "name": "classifier",
                "class": name.replace("Backbone", "ForImageClassification"),
                "config": self.classifier,
                "seed": 4,
                "inputs": [[2, 48, 40, 5]],
                "backbone_out_indices": list(self.task_out_indices),
            },
            {"name": "saved_by_us", "class": name, "load": str(directory / "ours"), "inputs": [[2, 44, 60, 6]]},
        ]
        return run_oracle(cases, directory)

    def test_task_checkpoint_layer_scales_are_loaded(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        # The layer scales of the checkpoint are loaded, not re-initialised.
        directory = self.recording(tmp_path_factory) / "classifier"
        ours = AutoBackbone.from_pretrained(directory, out_indices=list(self.task_out_indices))
        state = load_file(directory / "model.safetensors")
        scales = ours.encoder.levels[0].layers[1].layer_scale_parameters
        assert torch.equal(scales, state[f"{self.base_model_prefix}.encoder.levels.0.layers.1.layer_scale_parameters"])

    def test_transformers_config_json_round_trips(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        saved = json.loads((self.recording(tmp_path_factory) / "classifier" / "config.json").read_text())
        config = self.backbone_class.config_class.from_dict(saved)
        assert {name: getattr(config, name) for name in self.classifier_fields} == self.classifier_fields
        written = config.to_dict()
        # Extras and derived values kept.
        assert {key: value for key, value in written.items() if key in saved} == saved
