"""transformers' heads on our backbones through backbones.integrations.transformers (the real heads, no stand-ins)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from backbones import ConfigError, UnknownModelTypeError
from backbones.integrations.transformers import TransformersBackbone, backbone_config, register, register_all
from backbones.testing import TINY_DETR, modules_loaded_by, randomize_weights_
from backbones_swin import SwinBackbone

TINY_SWIN = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 4, "image_size": 64}
TINY_DINAT = {
    "embed_dim": 16,
    "depths": [1, 1, 1, 1],
    "num_heads": [1, 1, 2, 2],
    "kernel_size": 3,
    "dilations": [[1], [1], [1], [1]],
    "mlp_ratio": 2.0,
}
TINY_CONVNEXT = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}
TINY_RESNET = {"embedding_size": 8, "hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "layer_type": "basic"}
FOUR = [1, 2, 3, 4]

# Tiny heads: the fields of each head's config beside its backbone_config.
UPERNET = {"hidden_size": 16, "auxiliary_channels": 8, "pool_scales": [1, 2], "num_labels": 3}
MASK2FORMER = {
    "feature_size": 32,  # the pixel decoder's GroupNorm has 32 groups
    "mask_feature_size": 32,
    "hidden_dim": 32,
    "encoder_feedforward_dim": 32,
    "dim_feedforward": 32,
    "num_queries": 4,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "num_attention_heads": 2,
    "num_labels": 3,
    "train_num_points": 64,
}
DETR = {"use_timm_backbone": False, **TINY_DETR}


def _segmentation_inputs() -> dict[str, Any]:
    return {"pixel_values": torch.randn(2, 3, 64, 64), "labels": torch.randint(0, 3, (2, 64, 64))}


def _mask_inputs() -> dict[str, Any]:
    masks = [torch.zeros(2, 64, 64), torch.zeros(1, 64, 64)]
    masks[0][0, :32], masks[0][1, 32:], masks[1][0, :, :20] = 1, 1, 1
    return {
        "pixel_values": torch.randn(2, 3, 64, 64),
        "mask_labels": masks,
        "class_labels": [torch.tensor([0, 2]), torch.tensor([1])],
    }


def _detection_inputs() -> dict[str, Any]:
    labels = [
        {"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]])},
        {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.4, 0.4, 0.5, 0.5]])},
    ]
    return {"pixel_values": torch.randn(2, 3, 64, 64), "labels": labels}


@dataclass(frozen=True)
class Head:
    """A transformers head on one of our backbones, with a batch to train it on.

    Attributes:
        model_class: The head's transformers class name; its config class is ``config_class``.
        fields: The head config's fields beside ``backbone_config``.
        model_type: Our backbone, with the fields ``backbone_fields`` and stages 1 to 4 selected.
        inputs: A batch with labels, so that the head computes a loss.
        output: The output compared after a save / load round trip.
        backbone_trains: Whether the backbone gets gradients (DETR freezes a ResNet).
    """

    model_class: str
    config_class: str
    fields: dict[str, Any]
    model_type: str
    backbone_fields: dict[str, Any]
    inputs: Callable[[], dict[str, Any]]
    output: str = "logits"
    backbone_trains: bool = True

    def build(self) -> Any:
        config = getattr(transformers, self.config_class)(
            backbone_config=backbone_config(self.model_type, **self.backbone_fields, out_indices=FOUR), **self.fields
        )
        return getattr(transformers, self.model_class)(config)


SEGMENTATION = ("UperNetForSemanticSegmentation", "UperNetConfig", UPERNET)
HEADS = {
    "upernet-swin": Head(*SEGMENTATION, "swin", TINY_SWIN, _segmentation_inputs),
    "upernet-dinat": Head(*SEGMENTATION, "dinat", TINY_DINAT, _segmentation_inputs),
    "upernet-convnext": Head(*SEGMENTATION, "convnext", TINY_CONVNEXT, _segmentation_inputs),
    "mask2former-swin": Head(
        "Mask2FormerForUniversalSegmentation",
        "Mask2FormerConfig",
        MASK2FORMER,
        "swin",
        TINY_SWIN,
        _mask_inputs,
        output="masks_queries_logits",
    ),
    # DETR freezes a backbone whose model_type contains "resnet" except names with "stage.1", "stage.2" or
    # "stage.3"; ResNet's parameters are named "stages.N", so that freezes all of them, for transformers' own
    # ResNet too (backbones_resnet gets the same treatment): the backbone does not train here.
    "detr-resnet": Head(
        "DetrForObjectDetection", "DetrConfig", DETR, "resnet", TINY_RESNET, _detection_inputs, backbone_trains=False
    ),
}


def _train_step_then_round_trip(
    model: Any, inputs: dict[str, Any], tmp_path: Path, output: str, *, backbone_trains: bool = True
) -> None:
    """Forward with a loss and backward reaching the backbone; then save_pretrained -> from_pretrained is exact."""
    model.train()
    loss = model(**inputs).loss
    assert loss is not None and torch.isfinite(loss)
    loss.backward()
    backbone = model.get_submodule(_backbone_path(model))
    assert isinstance(backbone, TransformersBackbone)
    grads = [p.grad for p in backbone.parameters() if p.requires_grad]
    if backbone_trains:
        assert grads and all(g is not None for g in grads), "every backbone parameter gets a gradient"
        assert any(g.abs().sum() > 0 for g in grads)
    else:
        assert grads == []
    head_grads = [p.grad for name, p in model.named_parameters() if p.requires_grad and "backbone" not in name]
    assert head_grads and any(g is not None and g.abs().sum() > 0 for g in head_grads)

    model.eval()
    pixel_values = inputs["pixel_values"]
    with torch.no_grad():
        expected = getattr(model(pixel_values=pixel_values), output)
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(getattr(reloaded(pixel_values=pixel_values), output), expected, rtol=0, atol=0)


def _backbone_path(model: Any) -> str:
    for name, module in model.named_modules():
        if isinstance(module, TransformersBackbone):
            return name
    raise AssertionError("no bridged backbone in the head")


@pytest.mark.parametrize("head", HEADS.values(), ids=HEADS.keys())
def test_head_trains_and_round_trips(head: Head, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = head.build()
    assert model.config.backbone_config.model_type == f"backbones_{head.model_type}"
    _train_step_then_round_trip(model, head.inputs(), tmp_path, head.output, backbone_trains=head.backbone_trains)


def test_upernet_on_our_swin_equals_transformers_swin_upernet(tmp_path: Path) -> None:
    """The same weights in transformers' own Swin-backed UperNet and in ours give the same logits (<= 1e-4)."""
    torch.manual_seed(0)
    reference_config = transformers.UperNetConfig(
        backbone_config=transformers.SwinConfig(**TINY_SWIN, out_indices=FOUR), **UPERNET
    )
    reference = randomize_weights_(transformers.UperNetForSemanticSegmentation(reference_config)).eval()
    ours = HEADS["upernet-swin"].build().eval()
    # transformers 5.23's Swin names its attention projections otherwise than the checkpoints our loader reads;
    # our loader maps them: load the reference backbone's weights through it, and the head's as they are.
    reference.backbone.save_pretrained(tmp_path)
    converted = SwinBackbone.from_pretrained(tmp_path).state_dict()
    state = {key: value for key, value in reference.state_dict().items() if not key.startswith("backbone.")}
    state.update({f"backbone.{key}": value for key, value in converted.items()})
    assert set(state) == set(ours.state_dict())
    ours.load_state_dict(state, strict=True)
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(pixel_values=pixel_values).logits
        got = ours(pixel_values=pixel_values).logits
    assert (got - expected).abs().max() / max(1.0, expected.abs().max()) <= 1e-4


def test_register_is_idempotent_and_covers_every_installed_type() -> None:
    first = register("swin")
    assert register("swin") is first
    assert first.model_type == "backbones_swin"
    assert transformers.AutoConfig.for_model("backbones_swin").__class__ is first
    names = register_all()
    assert "backbones_swin" in names and "backbones_dinat" in names and len(names) == len(set(names))


def test_forward_defaults_carry_through_the_bridge() -> None:
    bridged = backbone_config("swin", **TINY_SWIN, output_hidden_states=True, return_dict=False)
    assert bridged.output_hidden_states is True and bridged.return_dict is False
    ours = bridged.to_backbone_config()
    assert (ours.output_hidden_states, ours.output_attentions, ours.return_dict) == (True, False, False)
    assert ours.embed_dim == TINY_SWIN["embed_dim"]


def test_bad_requests_are_our_errors() -> None:
    with pytest.raises(UnknownModelTypeError, match="nosuchnet"):
        backbone_config("nosuchnet")
    with pytest.raises(ValueError, match=r"out_indices \[9\] has indices \[9\] outside the 5 stages"):
        backbone_config("swin", **TINY_SWIN, out_indices=[9])  # a ValueError, as transformers raises
    with pytest.raises(ConfigError, match="embed_dim"):
        backbone_config("swin", **{**TINY_SWIN, "embed_dim": -1})


def test_docs_script_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "transformers-heads.md").read_text(encoding="utf-8")
    scripts = re.findall(r"^```python\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)
    assert len(scripts) == 1
    monkeypatch.chdir(tmp_path)
    exec(compile(scripts[0], "docs/transformers-heads.md script", "exec"), {"__name__": "__main__"})
    assert (tmp_path / "upernet-dinat" / "config.json").is_file()


def test_import_backbones_imports_no_transformers() -> None:
    loaded = modules_loaded_by("import backbones, backbones.integrations")
    assert "transformers" not in loaded and "torch" not in loaded
