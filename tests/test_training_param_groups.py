"""backbones.training.param_groups: weight-decay sets and layer-wise lr decay, checked against timm's
``param_groups_layer_decay`` on networks timm also has (BEiT, Swin), and the rules on their own."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import torch
from torch import nn

from backbones import AutoBackbone, AutoBackboneConfig, Backbone
from backbones.training import decays, layer_ids, param_groups

timm = pytest.importorskip("timm")
from timm.optim import param_groups_layer_decay  # noqa: E402

BEIT = {"hidden_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 32}
BEIT |= {"image_size": 32, "patch_size": 8, "drop_path_rate": 0.0, "layer_scale_init_value": 0.1}
BEIT |= {"use_relative_position_bias": True, "use_absolute_position_embeddings": True}
SWIN = {"embed_dim": 16, "depths": [1, 2, 2], "num_heads": [2, 2, 4], "window_size": 4, "patch_size": 4}
SWIN |= {"image_size": 32, "drop_path_rate": 0.0}

# Our (transformers') parameter names -> timm's. Several of ours may map to one of timm's (fused qkv).
BEIT_TO_TIMM = [
    (r"beit\.embeddings\.cls_token", "cls_token"),
    (r"beit\.embeddings\.position_embeddings", "pos_embed"),
    (r"beit\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"beit\.encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"beit\.encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"beit\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.weight", r"blocks.\1.attn.qkv.weight"),
    (r"beit\.encoder\.layer\.(\d+)\.attention\.attention\.query\.bias", r"blocks.\1.attn.q_bias"),
    (r"beit\.encoder\.layer\.(\d+)\.attention\.attention\.value\.bias", r"blocks.\1.attn.v_bias"),
    (
        r"beit\.encoder\.layer\.(\d+)\.attention\.attention\.relative_position_bias\.relative_position_bias_table",
        r"blocks.\1.attn.relative_position_bias_table",
    ),
    (r"beit\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"beit\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"beit\.encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"beit\.encoder\.layer\.(\d+)\.lambda_(\d)", r"blocks.\1.gamma_\2"),
]
SWIN_TO_TIMM = [
    (r"swin\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"swin\.embeddings\.norm\.", "patch_embed.norm."),
    (r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_before\.", r"layers.\1.blocks.\2.norm1."),
    (r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_after\.", r"layers.\1.blocks.\2.norm2."),
    (
        r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.(query|key|value)\.",
        r"layers.\1.blocks.\2.attn.qkv.",
    ),
    (
        r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.relative_position_bias_table",
        r"layers.\1.blocks.\2.attn.relative_position_bias_table",
    ),
    (r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.output\.dense\.", r"layers.\1.blocks.\2.attn.proj."),
    (r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.intermediate\.dense\.", r"layers.\1.blocks.\2.mlp.fc1."),
    (r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.output\.dense\.", r"layers.\1.blocks.\2.mlp.fc2."),
    # transformers' Swin downsamples at the end of a stage, timm's at the start of the next one.
    (r"swin\.encoder\.layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) + 1}.downsample."),
]


def _timm_name(name: str, table: list[tuple[str, Any]]) -> str | None:
    for pattern, replacement in table:
        mapped, count = re.subn("^" + pattern, replacement, name)
        if count:
            return mapped
    return None


def _by_name(model: nn.Module, groups: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """``{parameter name: (lr_scale, weight_decay)}`` of timm-style groups (which hold no names)."""
    where = {id(p): (group["lr_scale"], group["weight_decay"]) for group in groups for p in group["params"]}
    return {name: where[id(p)] for name, p in model.named_parameters() if id(p) in where}


def _compare_with_timm(ours: Backbone, reference: nn.Module, table: list[tuple[str, Any]], decay: float) -> set[str]:
    groups = param_groups(ours, lr=1.0, weight_decay=0.05, layer_decay=decay)
    mine = {n: (g["lr_scale"], g["weight_decay"]) for g in groups for n in g["param_names"]}
    theirs = _by_name(
        reference,
        param_groups_layer_decay(
            reference, weight_decay=0.05, layer_decay=decay, no_weight_decay_list=reference.no_weight_decay()
        ),
    )
    covered: set[str] = set()
    unmapped = []
    for name, (scale, weight_decay) in mine.items():
        other = _timm_name(name, table)
        if other is None:
            unmapped.append(name)
            continue
        assert other in theirs, f"{name} -> {other}, which timm's model lacks"
        assert scale == pytest.approx(theirs[other][0], rel=1e-12), f"{name}: lr scale {scale} vs timm {theirs[other]}"
        assert weight_decay == theirs[other][1], f"{name}: weight decay {weight_decay} vs timm {theirs[other][1]}"
        covered.add(other)
    # timm's classifier is its layer L + 1 (our models have none); its final norm has no counterpart here.
    assert set(theirs) - covered <= {
        f"{m}.{w}" for m in ("head", "head.fc", "fc_norm", "norm") for w in ("weight", "bias")
    }
    return set(unmapped)


def test_beit_groups_equal_timms() -> None:
    from timm.models.beit import Beit

    ours = AutoBackbone.from_config(AutoBackboneConfig.for_model("beit", **BEIT, out_indices=[1, 2, 3, 4]))
    reference = Beit(
        img_size=32, patch_size=8, embed_dim=16, depth=4, num_heads=2, mlp_ratio=2.0, num_classes=10,
        init_values=0.1, use_abs_pos_emb=True, use_rel_pos_bias=True,
    )  # fmt: skip
    assert _compare_with_timm(ours, reference, BEIT_TO_TIMM, 0.75) == set()
    ids, num_blocks = layer_ids(ours)
    assert num_blocks == 4
    assert ids["beit.embeddings.cls_token"] == 0 and ids["beit.encoder.layer.3.output.dense.weight"] == 4


def test_swin_groups_equal_timms_across_stages() -> None:
    from timm.models.swin_transformer import SwinTransformer

    ours = AutoBackbone.from_config(AutoBackboneConfig.for_model("swin", **SWIN, out_indices=[1, 2, 3]))
    reference = SwinTransformer(
        img_size=32, patch_size=4, embed_dim=16, depths=(1, 2, 2), num_heads=(2, 2, 4), window_size=4, num_classes=10
    )
    unmapped = _compare_with_timm(ours, reference, SWIN_TO_TIMM, 0.5)
    # The per-output norms come after the last block: layer L + 1, full learning rate, no decay.
    assert unmapped == {f"hidden_states_norms.stage{i}.{w}" for i in (1, 2, 3) for w in ("weight", "bias")}
    groups = param_groups(ours, lr=2.0, layer_decay=0.5)
    (last,) = [g for g in groups if "hidden_states_norms.stage3.weight" in g["param_names"]]
    assert (last["layer_id"], last["lr_scale"], last["lr"], last["weight_decay"]) == (6, 1.0, 2.0, 0.0)
    ids, num_blocks = layer_ids(ours)
    assert num_blocks == 5
    # The downsampling between stages 1 and 2 joins the first block of stage 2, as in timm.
    assert (
        ids["swin.encoder.layers.0.downsample.reduction.weight"]
        == ids["swin.encoder.layers.1.blocks.0.output.dense.weight"]
        == 2
    )


def _tiny_swin(**overrides: Any) -> Backbone:
    config = AutoBackboneConfig.for_model("swin", **{**SWIN, "out_indices": [1, 2, 3], **overrides})
    torch.manual_seed(0)
    return AutoBackbone.from_config(config)


def test_every_trainable_parameter_in_exactly_one_group() -> None:
    model = _tiny_swin()
    for layer_decay in (None, 0.8):
        groups = param_groups(model, lr=1e-3, weight_decay=0.1, layer_decay=layer_decay)
        listed = [id(p) for group in groups for p in group["params"]]
        assert sorted(listed) == sorted(id(p) for p in model.parameters())
        for group in groups:
            assert len(group["param_names"]) == len(group["params"])
            assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"])
    plain = param_groups(model, lr=1e-3, weight_decay=0.1)
    assert [(g["layer_id"], g["weight_decay"], g["lr_scale"]) for g in plain] == [(0, 0.1, 1.0), (0, 0.0, 1.0)]
    assert "swin.embeddings.patch_embeddings.projection.weight" in plain[0]["param_names"]
    assert "swin.embeddings.patch_embeddings.projection.bias" in plain[1]["param_names"]


def test_frozen_stages_get_no_group() -> None:
    model = _tiny_swin()
    model.freeze_stages(2)  # the stem (patch embedding) and stage 1 (its block)
    groups = param_groups(model, lr=1e-3, layer_decay=0.5)
    names = {name for group in groups for name in group["param_names"]}
    assert names == {name for name, p in model.named_parameters() if p.requires_grad}
    assert not any(name.startswith("swin.embeddings.") or ".layers.0.blocks." in name for name in names)
    # The merging after stage 1 computes stage 2's input: it belongs to stage 2 and to layer 2.
    (merging,) = [g for g in groups if "swin.encoder.layers.0.downsample.reduction.weight" in g["param_names"]]
    assert merging["layer_id"] == 2
    assert min(group["layer_id"] for group in groups) == 2  # layers 0 and 1 are frozen
    # The scales do not change: freezing removes layers, it does not renumber them.
    assert {g["layer_id"]: g["lr_scale"] for g in groups}[2] == 0.5**4
    model.requires_grad_(False)
    with pytest.raises(ValueError, match=r"^SwinBackbone has no trainable parameter \(all are frozen\); unfreeze"):
        param_groups(model, lr=1e-3)


@pytest.mark.parametrize(
    ("name", "shape", "owner", "expected"),
    [
        ("encoder.layer.0.attention.query.weight", (4, 4), nn.Linear(4, 4), True),
        ("encoder.layer.0.attention.query.bias", (4,), nn.Linear(4, 4), False),
        ("encoder.layer.0.layer_scale1.lambda1", (4,), nn.Module(), False),
        ("embeddings.position_embeddings", (1, 5, 4), nn.Module(), False),
        ("embeddings.register_tokens", (1, 2, 4), nn.Module(), False),
        ("embeddings.mask_token", (1, 1, 4), nn.Module(), False),
        ("encoder.layer.0.attention.rel_pos_h", (7, 8), nn.Module(), False),
        ("encoder.levels.0.layers.0.attention.self.rpb", (2, 5, 5), nn.Module(), False),
        ("encoder.layers.0.blocks.0.attention.self.logit_scale", (2, 1, 1), nn.Module(), False),
        ("stages.0.layers.0.grn.weight", (1, 1, 1, 4), type("GlobalResponseNorm", (nn.Module,), {})(), False),
        ("stages.0.layers.0.conv.weight", (4, 4, 3, 3), nn.Conv2d(4, 4, 3), True),
    ],
)
def test_decay_rule(name: str, shape: tuple[int, ...], owner: nn.Module, expected: bool) -> None:
    assert decays(name, nn.Parameter(torch.zeros(shape)), owner) is expected


def test_no_weight_decay_patterns() -> None:
    model = _tiny_swin()
    groups = param_groups(model, lr=1.0, no_weight_decay=["*.attention.self.query.weight", "swin.embeddings.*"])
    undecayed = {name for group in groups if group["weight_decay"] == 0.0 for name in group["param_names"]}
    assert "swin.encoder.layers.1.blocks.1.attention.self.query.weight" in undecayed
    assert "swin.embeddings.patch_embeddings.projection.weight" in undecayed
    assert "swin.encoder.layers.1.blocks.1.attention.self.key.weight" not in undecayed


def test_a_plugin_declares_its_blocks() -> None:
    model = _tiny_swin()
    stages = list(model.swin.encoder.layers)
    model.layer_decay_blocks = lambda: stages  # type: ignore[method-assign]  # e.g. one layer per stage
    ids, num_blocks = layer_ids(model)
    assert num_blocks == 3
    assert ids["swin.encoder.layers.1.blocks.1.output.dense.weight"] == 2
    assert ids["swin.embeddings.norm.weight"] == 0 and ids["hidden_states_norms.stage1.weight"] == 4


def test_a_wrapped_backbone_and_the_optimizer_step() -> None:
    model = nn.Sequential(_tiny_swin(out_indices=[3]))  # a module holding a backbone: the generic rule
    groups = param_groups(model, lr=0.1, layer_decay=0.5)
    assert [g["layer_id"] for g in groups if g["weight_decay"]] == [0, 1, 2, 3, 4, 5]
    optimizer = torch.optim.AdamW(groups)
    assert [g["lr"] for g in optimizer.param_groups][-1] == 0.1
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model[0].train()
    model[0](torch.randn(2, 3, 32, 32)).feature_maps[0].square().mean().backward()
    optimizer.step()
    assert all(not torch.equal(p, before[name]) for name, p in model.named_parameters() if p.grad is not None)


def test_bad_arguments_are_explained() -> None:
    model = _tiny_swin()
    with pytest.raises(
        ValueError, match=r"^layer_decay must be in \(0, 1\] \(e\.g\. 0\.75\), or None for none, got 1\.5$"
    ):
        param_groups(model, lr=1e-3, layer_decay=1.5)
    with pytest.raises(ValueError, match=r"^lr must be positive, got 0$"):
        param_groups(model, lr=0)
    with pytest.raises(ValueError, match=r"^weight_decay must be 0 or more, got -0\.1$"):
        param_groups(model, lr=1e-3, weight_decay=-0.1)
    with pytest.raises(TypeError, match=r"^lr must be a number, got str \('0\.1'\)$"):
        param_groups(model, lr="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^layer_decay needs the blocks of Linear, and it has none"):
        param_groups(nn.Linear(2, 2), lr=1e-3, layer_decay=0.5)


def test_importing_backbones_training_lazily() -> None:
    code = "import sys, backbones; assert 'backbones.training' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
