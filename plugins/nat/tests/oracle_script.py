"""Runs inside the oracle environment (transformers 4.53.3, fake natten): ``oracle_script.py CASES DIR``.

``CASES`` is a JSON list; each case is a dict with

* ``name``: outputs go to ``DIR/<name>/``;
* ``class``: ``NatBackbone``, ``NatForImageClassification``, ``DinatBackbone`` or
  ``DinatForImageClassification``;
* either ``config`` (keyword arguments of the config; the model is built, every weight re-randomised
  with ``seed``, and saved to ``DIR/<name>/`` with ``save_pretrained``) or ``load`` (a checkpoint folder,
  loaded with ``from_pretrained``; its loading info goes to ``info.json``);
* ``inputs``: ``[batch, height, width, seed]`` per input; ``hidden_states`` / ``attentions``: also
  record those for the first input; ``gradients``: also record the parameter gradients of
  ``sum(mean(map ** 2))`` for the first input, in training mode;
* for the classification classes, ``backbone_out_indices``: the expected maps are those of the
  matching backbone class holding the classifier's trunk (its output norms at their initial values).

``DIR/<name>/expected.safetensors`` holds ``pixels.I``, ``map.I.J``, ``hidden.J``, ``attention.J`` and
``grad.<parameter name>``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import save_file
from transformers.models.deprecated import nat

from backbones.testing import randomize_weights_

CLASSES: dict[str, tuple[Any, Any, str]] = {
    "NatBackbone": (nat.NatBackbone, nat.NatConfig, "nat"),
    "NatForImageClassification": (nat.NatForImageClassification, nat.NatConfig, "nat"),
    "DinatBackbone": (transformers.DinatBackbone, transformers.DinatConfig, "dinat"),
    "DinatForImageClassification": (transformers.DinatForImageClassification, transformers.DinatConfig, "dinat"),
}


def _pixels(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _backbone_of(model: Any, case: dict[str, Any]) -> Any:
    """The backbone class of ``model``'s family, holding its trunk, for the case's output selection."""
    family = "Nat" if case["class"].startswith("Nat") else "Dinat"
    model_class, config_class, prefix = CLASSES[f"{family}Backbone"]
    config = config_class(**{**case["config"], "out_indices": case["backbone_out_indices"]})
    backbone = model_class(config).eval()
    trunk = {key[len(prefix) + 1 :]: value for key, value in model.state_dict().items() if key.startswith(prefix + ".")}
    result = backbone.load_state_dict(trunk, strict=False)
    info = {"missing_keys": sorted(result.missing_keys), "unexpected_keys": sorted(result.unexpected_keys)}
    return backbone, info


def run(case: dict[str, Any], directory: Path) -> None:
    model_class, config_class, _ = CLASSES[case["class"]]
    output = directory / case["name"]
    output.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {}
    if case.get("load"):
        model, loading = model_class.from_pretrained(case["load"], output_loading_info=True)
        info["loading"] = {key: sorted(map(str, value)) for key, value in loading.items()}
    else:
        torch.manual_seed(case["seed"])
        model = model_class(config_class(**case["config"]))
        randomize_weights_(model, seed=case["seed"])
        model.save_pretrained(output)
    model.eval()
    backbone = model
    if "ForImageClassification" in case["class"]:
        backbone, info["trunk"] = _backbone_of(model, case)
    tensors: dict[str, torch.Tensor] = {}
    for index, (batch, height, width, seed) in enumerate(case["inputs"]):
        pixels = _pixels(batch, height, width, seed)
        tensors[f"pixels.{index}"] = pixels
        first = index == 0
        with torch.no_grad():
            result = backbone(
                pixels,
                output_hidden_states=first and case.get("hidden_states", False),
                output_attentions=first and case.get("attentions", False),
            )
        for position, fmap in enumerate(result.feature_maps):
            tensors[f"map.{index}.{position}"] = fmap
        if first and case.get("hidden_states"):
            tensors.update({f"hidden.{j}": state for j, state in enumerate(result.hidden_states)})
        if first and case.get("attentions"):
            tensors.update({f"attention.{j}": weights for j, weights in enumerate(result.attentions)})
    if case.get("gradients"):
        backbone.train()
        maps = backbone(tensors["pixels.0"]).feature_maps
        sum(fmap.pow(2).mean() for fmap in maps).backward()
        tensors.update({f"grad.{name}": p.grad for name, p in backbone.named_parameters() if p.grad is not None})
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(output / "expected.safetensors"))
    (output / "info.json").write_text(json.dumps(info, indent=1))


def main() -> None:
    spec, directory = Path(sys.argv[1]), Path(sys.argv[2])
    assert transformers.__version__ == "4.53.3", transformers.__version__
    for case in json.loads(spec.read_text()):
        run(case, directory)


if __name__ == "__main__":
    main()
