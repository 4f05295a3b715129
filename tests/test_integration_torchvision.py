"""backbones.integrations.torchvision: our backbones inside torchvision's detectors, end to end.

For a CNN (resnet), a hierarchical transformer (swin) and a plain ViT through ViTDet's neck (dinov2 with
SimpleFeaturePyramid), each of FasterRCNN, MaskRCNN, RetinaNet and FCOS trains three steps on synthetic
64-pixel images with finite losses that decrease on average and gradients reaching the backbone's stem, then
detects in eval mode.
``trainable_layers`` freezes the same stages as torchvision's ``resnet_fpn_backbone``.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from backbones import AutoBackbone, AutoBackboneConfig, Backbone
from backbones.integrations.torchvision import DetectionBackbone, to_detection_backbone
from backbones.necks import SimpleFeaturePyramid
from backbones.testing import randomize_weights_

WIDTH = 32  # channels of every pyramid level (FCOS's head has GroupNorm(32, channels))
NUM_CLASSES = 3
SIZE = 64
TWO_STAGE = ("faster_rcnn", "mask_rcnn")  # four maps at strides 4-32 and a pooled fifth
ONE_STAGE = ("retinanet", "fcos")  # three maps at strides 8-32, then P6 and P7


def _backbone(kind: str, maps: int) -> Backbone:
    """A tiny backbone of ``kind`` selecting its last ``maps`` stages (strides up to 32)."""
    torch.manual_seed(0)
    if kind == "resnet":
        config = AutoBackboneConfig.for_model(
            "resnet", embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1]
        )
    elif kind == "swin":
        config = AutoBackboneConfig.for_model(
            "swin", embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=2, image_size=SIZE
        )
    else:
        vit = AutoBackbone.from_config(
            AutoBackboneConfig.for_model(
                "dinov2", hidden_size=16, num_hidden_layers=2, num_attention_heads=2, patch_size=16, image_size=SIZE
            )
        )
        # ViTDet's pyramid from the stride-16 map: strides 4, 8, 16, 32.
        neck = SimpleFeaturePyramid.from_backbone(vit, out_channels=WIDTH)
        neck.out_features = ["p2", "p3", "p4", "p5"][-maps:]
        return neck
    model = AutoBackbone.from_config(config, out_indices=list(range(5 - maps, 5)))
    randomize_weights_(model, 0)
    return model


def _detector(name: str, backbone: nn.Module) -> nn.Module:
    small: dict[str, Any] = {"min_size": SIZE, "max_size": SIZE}
    if name in TWO_STAGE:
        small.update(
            rpn_pre_nms_top_n_train=64,
            rpn_post_nms_top_n_train=32,
            rpn_pre_nms_top_n_test=64,
            rpn_post_nms_top_n_test=32,
            rpn_batch_size_per_image=32,
            box_batch_size_per_image=16,
            box_detections_per_img=8,
            box_head=TwoMLPHead(WIDTH * 7 * 7, 32),
            box_predictor=FastRCNNPredictor(32, NUM_CLASSES),
        )
        if name == "faster_rcnn":
            return FasterRCNN(backbone, **small)
        return MaskRCNN(
            backbone,
            mask_head=MaskRCNNHeads(WIDTH, [WIDTH], 1),
            mask_predictor=MaskRCNNPredictor(WIDTH, WIDTH, NUM_CLASSES),
            **small,
        )
    small.update(detections_per_img=8, topk_candidates=32)
    detector_class = RetinaNet if name == "retinanet" else FCOS
    return detector_class(backbone, num_classes=NUM_CLASSES, **small)


def _batch() -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, SIZE, SIZE, generator=generator) for _ in range(2)]
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 36.0], [24.0, 20.0, 60.0, 58.0]]), torch.tensor([[4.0, 30.0, 30.0, 62.0]])]
    targets = []
    for box in boxes:
        masks = torch.zeros(len(box), SIZE, SIZE, dtype=torch.uint8)
        for index, (x0, y0, x1, y1) in enumerate(box.long().tolist()):
            masks[index, y0:y1, x0:x1] = 1
        targets.append({"boxes": box, "labels": torch.arange(1, len(box) + 1), "masks": masks})
    return images, targets


@pytest.mark.parametrize("detector_name", [*TWO_STAGE, *ONE_STAGE])
@pytest.mark.parametrize("kind", ["resnet", "swin", "dinov2"])
def test_detector_trains_and_detects(kind: str, detector_name: str) -> None:
    one_stage = detector_name in ONE_STAGE
    model = _backbone(kind, maps=3 if one_stage else 4)
    # A neck's maps already have one width: no second pyramid on it.
    with_fpn = kind != "dinov2"
    backbone = to_detection_backbone(
        model, out_channels=WIDTH, fpn=with_fpn, extra_blocks="p6p7" if one_stage else "max_pool"
    )
    detector = _detector(detector_name, backbone).train()
    images, targets = _batch()
    with torch.no_grad():
        names = list(backbone(torch.zeros(1, 3, SIZE, SIZE)).keys())
    assert names == (["0", "1", "2", "p6", "p7"] if one_stage else ["0", "1", "2", "3", "pool"])

    stem = [p for module in model._stage_modules(0) for p in module.parameters()]  # the shallowest stage
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.02, momentum=0.9)
    torch.manual_seed(0)  # the heads sample proposals and anchors at random
    totals = []
    for step in range(3):
        optimizer.zero_grad()
        losses = detector(images, targets)
        expected = {
            "faster_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
            "mask_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask"},
            "retinanet": {"classification", "bbox_regression"},
            "fcos": {"classification", "bbox_regression", "bbox_ctrness"},
        }[detector_name]
        assert set(losses) == expected
        total = sum(losses.values())
        assert all(math.isfinite(value.item()) for value in losses.values()), losses
        totals.append(float(total.detach()))
        total.backward()
        grads = [p.grad for p in stem if p.grad is not None]
        assert grads and all(torch.isfinite(grad).all() for grad in grads), f"step {step}: stem gradients {grads}"
        assert sum(grad.abs().sum() for grad in grads) > 0, f"step {step}: no gradient reached the backbone's stem"
        optimizer.step()
    # Decreasing on average: the steps' mean change is negative (on one batch, a detector fits it).
    assert totals[-1] < totals[0], f"losses did not decrease on average over 3 steps: {totals}"

    detector.eval()
    with torch.no_grad():
        detections = detector(images)
    assert len(detections) == 2
    for found in detections:
        count = len(found["boxes"])
        assert count <= 8 and found["boxes"].shape == (count, 4)
        assert found["labels"].shape == found["scores"].shape == (count,)
        assert torch.isfinite(found["boxes"]).all()
        if detector_name == "mask_rcnn":
            assert found["masks"].shape == (count, 1, SIZE, SIZE)


STAGE_OF_TORCHVISION_LAYER = {
    "conv1": "stem",
    "layer1": "stage1",
    "layer2": "stage2",
    "layer3": "stage3",
    "layer4": "stage4",
}


def _trainable_stages(model: Backbone) -> set[str]:
    """The stages whose parameters train (each stage's parameters are all trainable or all frozen)."""
    trainable = set()
    for position, name in enumerate(model.stage_names):
        flags = {p.requires_grad for module in model._stage_modules(position) for p in module.parameters()}
        assert len(flags) == 1, f"stage {name} is partly frozen"
        if flags == {True}:
            trainable.add(name)
    return trainable


@pytest.mark.parametrize("trainable_layers", [0, 1, 2, 3, 4, 5])
def test_trainable_layers_freeze_as_torchvision(trainable_layers: int) -> None:
    theirs = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=trainable_layers)
    their_trainable = {
        name.split(".")[1] for name, p in theirs.named_parameters() if name.startswith("body.") and p.requires_grad
    }
    model = AutoBackbone.from_config(
        AutoBackboneConfig.for_model("resnet", embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1]),
        out_indices=[1, 2, 3, 4],
    )
    ours = to_detection_backbone(model, out_channels=8, trainable_layers=trainable_layers, freeze_batch_norm=True)
    assert _trainable_stages(model) == {STAGE_OF_TORCHVISION_LAYER[layer] for layer in their_trainable}
    assert len(their_trainable) == trainable_layers
    assert model.frozen_stages == model.stage_names[: 5 - trainable_layers]
    # torchvision's detection backbones use frozen BatchNorm; so does ours with freeze_batch_norm=True.
    for module in (theirs, ours):
        assert not any(isinstance(m, nn.BatchNorm2d) for m in module.modules())
    assert all(p.requires_grad for p in ours.fpn.parameters())


def test_frozen_stages_stay_unchanged_in_training() -> None:
    model = _backbone("resnet", maps=4)
    backbone = to_detection_backbone(model, out_channels=WIDTH, trainable_layers=3, freeze_batch_norm=True)
    detector = _detector("faster_rcnn", backbone).train()

    def stage_values() -> dict[str, list[Tensor]]:
        return {
            name: [p.detach().clone() for module in model._stage_modules(position) for p in module.parameters()]
            for position, name in enumerate(model.stage_names)
        }

    before = stage_values()
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.1)
    images, targets = _batch()
    for _ in range(2):
        optimizer.zero_grad()
        sum(detector(images, targets).values()).backward()
        optimizer.step()
    after = stage_values()
    changed = {name for name in before if any(not torch.equal(a, b) for a, b in zip(after[name], before[name]))}
    assert changed == {"stage2", "stage3", "stage4"}


def test_forward_names_and_channels() -> None:
    model = _backbone("resnet", maps=4)
    backbone = to_detection_backbone(model, out_channels=WIDTH)
    assert isinstance(backbone, DetectionBackbone) and backbone.out_channels == WIDTH
    features = backbone(torch.zeros(2, 3, SIZE, SIZE))
    assert isinstance(features, OrderedDict)
    assert {name: tuple(f.shape) for name, f in features.items()} == {
        "0": (2, WIDTH, 16, 16),
        "1": (2, WIDTH, 8, 8),
        "2": (2, WIDTH, 4, 4),
        "3": (2, WIDTH, 2, 2),
        "pool": (2, WIDTH, 1, 1),
    }
    no_extra = to_detection_backbone(model, out_channels=WIDTH, extra_blocks=None)
    assert list(no_extra(torch.zeros(1, 3, SIZE, SIZE))) == ["0", "1", "2", "3"]


def test_bad_arguments_are_explained() -> None:
    model = _backbone("resnet", maps=4)
    with pytest.raises(
        ValueError, match=r"fpn=False returns the maps as they are, but their channels are .*'stage1': 8, 'stage2': 16"
    ):
        to_detection_backbone(model, out_channels=32, fpn=False)
    with pytest.raises(ValueError, match=r"trainable_layers must be an int between 0 and 5 .*got 6"):
        to_detection_backbone(model, trainable_layers=6)
    with pytest.raises(ValueError, match="extra_blocks must be 'max_pool'"):
        to_detection_backbone(model, extra_blocks="p6")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model must be a backbones.Backbone, got Linear"):
        to_detection_backbone(nn.Linear(1, 1))  # type: ignore[arg-type]


def test_import_backbones_imports_neither_torch_nor_torchvision() -> None:
    code = "import sys, backbones, backbones.integrations; print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("index", range(3))
def test_docs_scripts_run_as_written(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "integrations.md").read_text(encoding="utf-8")
    scripts = re.findall(r"^```python\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)
    assert len(scripts) == 3
    monkeypatch.chdir(tmp_path)
    exec(compile(scripts[index], f"docs/integrations.md script {index + 1}", "exec"), {"__name__": "__main__"})


def test_trainable_layers_of_a_neck_count_the_wrapped_stages() -> None:
    neck = _backbone("dinov2", maps=4)
    assert isinstance(neck, SimpleFeaturePyramid)
    to_detection_backbone(neck, out_channels=WIDTH, fpn=False, trainable_layers=1)
    assert neck.frozen_stages == ["stem", "stage1"] == neck.backbone.frozen_stages
    assert _trainable_stages(neck) == {"stage2", "p2", "p3", "p4", "p5"}
    with pytest.raises(
        ValueError,
        match=r"trainable_layers must be an int between 0 and 3 \(the stages \['stem', 'stage1', 'stage2'\]\)",
    ):
        to_detection_backbone(neck, out_channels=WIDTH, fpn=False, trainable_layers=4)
