"""LoRA through peft beyond the kit's per-plugin checks: the documented target names are the declared ones,
and parameter groups of an adapted backbone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backbones import AutoBackbone, AutoBackboneConfig, get_registry
from backbones.training import layer_ids, param_groups

peft = pytest.importorskip("peft")

TRAINING = Path(__file__).resolve().parent.parent / "docs" / "training.md"
# The page names plugins by distribution; their model types differ where the name has a dash.
MODEL_TYPES = {
    "maskformer-swin": "maskformer-swin",
    "dinov2-with-registers": "dinov2_with_registers",
    "dinov3-vit": "dinov3_vit",
    "rf-detr-dinov2": "rf_detr_dinov2",
    "lw-detr-vit": "lw_detr_vit",
    "pvt-v2": "pvt_v2",
    "dinov3-convnext": "dinov3_convnext",
    "rt-detr-resnet": "rt_detr_resnet",
    "hgnet-v2": "hgnet_v2",
    "timm": "timm_backbone",
    "vitpose-backbone": "vitpose_backbone",
    "pp-lcnet": "pp_lcnet",
    "pp-lcnet-v3": "pp_lcnet_v3",
    "pp-lcnet-v4": "pp_lcnet_v4",
    "uvdoc-backbone": "uvdoc_backbone",
}


def _documented_targets() -> dict[str, tuple[str, ...]]:
    text = TRAINING.read_text(encoding="utf-8")
    table = text[text.index("| plugin | `lora_target_modules` |") :].split("\n\n")[0]
    documented = {}
    for row in table.splitlines()[2:]:
        plugins, targets = (cell.strip() for cell in row.strip("|").split("|"))
        names = tuple(re.findall(r"`([^`]+)`", targets.split(" (")[0]))
        for plugin in plugins.split(", "):
            documented[MODEL_TYPES.get(plugin, plugin)] = names
    return documented


def test_documented_targets_are_the_declared_ones() -> None:
    documented = _documented_targets()
    assert len(documented) == 32
    for model_type, names in documented.items():
        declared = get_registry().get(model_type).load_model_class().lora_target_modules
        assert declared == names, f"{model_type}: declares {declared}, docs/training.md says {names}"


def test_param_groups_of_an_adapted_backbone() -> None:
    config = AutoBackboneConfig.for_model(
        "swin", embed_dim=16, depths=[1, 2], num_heads=[2, 4], window_size=4, image_size=32, out_indices=[1, 2]
    )
    backbone = AutoBackbone.from_config(config)
    base_ids, _ = layer_ids(backbone)
    adapted = peft.get_peft_model(backbone, peft.LoraConfig(r=2, target_modules=list(backbone.lora_target_modules)))
    groups = param_groups(adapted, lr=1.0, layer_decay=0.5)
    names = [name for group in groups for name in group["param_names"]]
    assert names and all(".lora_A." in name or ".lora_B." in name for name in names)
    assert len(names) == sum(p.requires_grad for p in adapted.parameters())
    prefix = "base_model.model."
    for group in groups:
        for name in group["param_names"]:
            # An adapter sits in its block's layer: that of the weight it adapts.
            base = re.sub(r"\.lora_[AB]\.default\.weight$", ".weight", name.removeprefix(prefix))
            assert group["layer_id"] == base_ids[base], name
        assert group["lr_scale"] == 0.5 ** (4 - group["layer_id"])
    assert {group["layer_id"] for group in groups} == {1, 2, 3}
