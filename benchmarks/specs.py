"""The architectures benchmarked: how to build the transformers model, our checkpoint and the timm model.

Each architecture is measured at its usual tiny/base size at 224 x 224. Ours and transformers share one
checkpoint, written by transformers' ``save_pretrained`` from a randomly initialised model; timm builds
the matching architecture with random weights (``pretrained=False``), since it uses another key format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backbones_hgnet_v2 import VARIANTS

__all__ = ["ARCHS", "Arch", "BIG_LOAD", "BIG_LOAD_SHARD_BYTES", "arch_by_name"]

FOUR_STAGES = [1, 2, 3, 4]
VIT_LAYERS = [3, 6, 9, 12]
TIMM_VIT_LAYERS = [index - 1 for index in VIT_LAYERS]  # timm counts blocks from 0, transformers' stages from 1
CONVNEXT_TINY: dict[str, Any] = {"depths": [3, 3, 9, 3], "hidden_sizes": [96, 192, 384, 768]}


@dataclass(frozen=True)
class Arch:
    """One benchmarked architecture.

    Attributes:
        name: Short name used in tables and ``--only`` (e.g. ``swin``).
        label: The model size measured (e.g. ``swin-tiny``).
        hf_config: transformers config class name, or ``None`` when transformers cannot run it.
        hf_backbone: transformers backbone class name (the concrete class: see ``run.py`` for why).
        config: Config fields (lists, not tuples: some transformers 5.23 configs reject tuples).
        ours_config: Our config class ``(module, name)`` when transformers cannot write the checkpoint.
        timm_name: timm model name, or ``None`` when timm has no equivalent.
        timm_kwargs: Extra ``timm.create_model`` arguments.
        timm_features_only: Use ``features_only=True`` (else ``forward_features``).
        timm_norm: Read timm's maps through its final norm (``FeatureGetterNet(norm=True)``), as the
            transformers backbone returns them (``apply_layernorm``): the same work on both sides.
        channels_last: Whether a ``channels_last`` row is measured (convolutional networks).
        note: Shown under the table.
    """

    name: str
    label: str
    hf_config: str | None
    hf_backbone: str | None
    config: dict[str, Any]
    ours_config: tuple[str, str] | None = None
    timm_name: str | None = None
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    timm_features_only: bool = True
    timm_norm: bool = False
    channels_last: bool = False
    note: str = ""

    def write_checkpoint(self, directory: Path) -> None:
        """Save a randomly initialised checkpoint of this architecture into ``directory``."""
        import torch

        torch.manual_seed(0)
        if self.hf_config is not None:
            import transformers

            config = getattr(transformers, self.hf_config)(**self.config)
            model = getattr(transformers, self.hf_backbone)(config)
        else:
            import importlib

            from backbones import AutoBackbone

            assert self.ours_config is not None
            module, name = self.ours_config
            config = getattr(importlib.import_module(module), name)(**self.config)
            model = AutoBackbone.from_config(config)
        model.save_pretrained(directory)

    def load_transformers(self, directory: Path) -> Any:
        """transformers' backbone from ``directory``, in eval mode, or ``None`` when it cannot run."""
        if self.hf_backbone is None:
            return None
        import transformers

        # The concrete class: transformers.AutoBackbone.from_pretrained(local_dir) may ask the hub first.
        return getattr(transformers, self.hf_backbone).from_pretrained(directory).eval()

    def build_timm(self) -> Any:
        """timm's equivalent model with random weights, in eval mode, or ``None``."""
        if self.timm_name is None:
            return None
        import timm

        kwargs = dict(self.timm_kwargs)
        if self.timm_norm:
            from timm.models._features import FeatureGetterNet

            out_indices = kwargs.pop("out_indices")
            model = timm.create_model(self.timm_name, pretrained=False, **kwargs)
            return FeatureGetterNet(model, out_indices=out_indices, norm=True).eval()
        if self.timm_features_only:
            kwargs["features_only"] = True
        return timm.create_model(self.timm_name, pretrained=False, **kwargs).eval()


def _arch(
    name: str,
    label: str,
    prefix: str,
    out_indices: list[int] = FOUR_STAGES,
    *,
    fields: dict[str, Any] | None = None,
    timm_out_indices: list[int] | None = None,
    **options: Any,
) -> Arch:
    """An architecture transformers runs as ``{prefix}Config`` / ``{prefix}Backbone``, measured at ``out_indices``.

    ``fields`` are the config's other fields; ``timm_out_indices`` (timm's numbering of the same stages) joins
    the ``timm_kwargs`` in ``options``, which are :class:`Arch`'s own.
    """
    timm_kwargs = dict(options.pop("timm_kwargs", {}))
    if timm_out_indices is not None:
        timm_kwargs["out_indices"] = timm_out_indices
    config = {**(fields or {}), "out_indices": out_indices}
    return Arch(name, label, f"{prefix}Config", f"{prefix}Backbone", config, timm_kwargs=timm_kwargs, **options)


def _cnn(name: str, label: str, prefix: str, out_indices: list[int] = FOUR_STAGES, **options: Any) -> Arch:
    """A convolutional network (see :func:`_arch`): it also gets a ``channels_last`` row."""
    return _arch(name, label, prefix, out_indices, channels_last=True, **options)


def _vit(
    name: str,
    label: str,
    prefix: str,
    fields: dict[str, Any],
    timm_name: str,
    *,
    timm_img_size: int | None = 224,
    **options: Any,
) -> Arch:
    """A plain ViT read after layers 3, 6, 9 and 12 (see :func:`_arch`); timm's model is built for
    ``timm_img_size`` (``None``: its own size)."""
    timm_kwargs = {} if timm_img_size is None else {"img_size": timm_img_size}
    return _arch(
        name,
        label,
        prefix,
        VIT_LAYERS,
        fields=fields,
        timm_name=timm_name,
        timm_kwargs=timm_kwargs,
        timm_out_indices=TIMM_VIT_LAYERS,
        **options,
    )


DINOV2_SMALL = {"hidden_size": 384, "num_attention_heads": 6}
ARCHS: list[Arch] = [
    _arch("swin", "swin-tiny", "Swin", timm_name="swin_tiny_patch4_window7_224"),
    _arch(
        "swinv2",
        "swinv2-tiny (window 7)",
        "Swinv2",
        timm_name="swinv2_tiny_window8_256",
        timm_kwargs={"img_size": 224, "window_size": 7},
        note="timm's swinv2_tiny_window8_256 built at img_size=224, window_size=7 to match SwinV2Config() defaults",
    ),
    _arch(
        "maskformer-swin",
        "maskformer-swin-tiny",
        "MaskFormerSwin",
        timm_name="swin_tiny_patch4_window7_224",
        note="timm has no MaskFormer Swin; its swin_tiny_patch4_window7_224 is the same network without per-stage norms",
    ),
    _cnn("resnet", "resnet50", "ResNet", timm_name="resnet50", timm_out_indices=FOUR_STAGES),
    _cnn("bit", "bit-50", "Bit", timm_name="resnetv2_50x1_bit", timm_out_indices=FOUR_STAGES),
    _cnn("hgnet-v2", "hgnetv2-b4 (D-FINE-L's backbone)", "HGNetV2", fields=VARIANTS["B4"], timm_name="hgnetv2_b4"),
    _cnn(
        "rt-detr-resnet",
        "resnet50-vd (RT-DETR R50's backbone)",
        "RTDetrResNet",
        timm_name="resnet50d",
        timm_out_indices=FOUR_STAGES,
        note="timm's resnet50d (deep stem, average-pool downsampling) is the same network as ResNet-50-vd",
    ),
    _cnn("convnext", "convnext-tiny", "ConvNext", fields=CONVNEXT_TINY, timm_name="convnext_tiny"),
    _cnn("convnextv2", "convnextv2-tiny", "ConvNextV2", fields=CONVNEXT_TINY, timm_name="convnextv2_tiny"),
    _cnn(
        "dinov3-convnext",
        "dinov3-convnext-tiny",
        "DINOv3ConvNext",
        fields=CONVNEXT_TINY,
        timm_name="convnext_tiny",
        note="timm's convnext_tiny is the same network (timm's convnext_tiny.dinov3_lvd1689m weights load into it)",
    ),
    _arch(
        "pvt-v2",
        "pvt_v2_b2 (spatial-reduction attention, 224)",
        "PvtV2",
        [0, 1, 2, 3],
        fields={"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 6, 3]},
        timm_name="pvt_v2_b2",
        timm_out_indices=[0, 1, 2, 3],
        note="PVTv2 has no stem: its four stages are out_indices 0 to 3",
    ),
    _arch(
        "focalnet",
        "focalnet-tiny (srf)",
        "FocalNet",
        fields={
            "depths": [2, 2, 6, 2],
            "hidden_sizes": [192, 384, 768, 768],
            "focal_levels": [2, 2, 2, 2],
            "focal_windows": [3, 3, 3, 3],
        },
        timm_name="focalnet_tiny_srf",
    ),
    _vit(
        "beit",
        "beit-base (relative position bias)",
        "Beit",
        {"use_relative_position_bias": True},
        "beit_base_patch16_224",
        timm_img_size=None,  # built at 224 already
    ),
    _vit("dinov2", "dinov2-small (patch 14, 224)", "Dinov2", DINOV2_SMALL, "vit_small_patch14_dinov2", timm_norm=True),
    _vit(
        "dinov3-vit",
        "dinov3-vits16 (4 registers, rotary positions, 224)",
        "DINOv3ViT",
        {"num_register_tokens": 4},
        "vit_small_patch16_dinov3_qkvb",
        timm_norm=True,
        note="timm's vit_small_patch16_dinov3_qkvb is the same network (with a zero key bias) built at img_size=224",
    ),
    _vit(
        "dinov2-with-registers",
        "dinov2-with-registers-small (patch 14, 4 registers, 224)",
        "Dinov2WithRegisters",
        {**DINOV2_SMALL, "patch_size": 14},
        "vit_small_patch14_reg4_dinov2",
        timm_norm=True,
    ),
    _arch(
        "vitdet",
        "vitdet-base (window 14, rel-pos, global at 3/6/9/12)",
        "VitDet",
        [12],
        fields={
            "window_size": 14,
            "window_block_indices": [0, 1, 3, 4, 6, 7, 9, 10],
            "use_relative_position_embeddings": True,
        },
        timm_name="samvit_base_patch16_224",
        timm_kwargs={"neck_chans": 0},
        timm_features_only=False,
        note="timm has no ViTDet; samvit_base_patch16_224 (windowed + global attention, rel-pos, no neck) is the same block design",
    ),
    _arch(
        "lw-detr-vit",
        "lw-detr ViT (192 wide, 10 layers, 2x2 windows at 224, global at layers 3/5/6/9)",
        "LwDetrViT",
        [2, 4, 5, 9],
        fields={
            "image_size": 224,
            "hidden_size": 192,
            "num_hidden_layers": 10,
            "num_windows": 4,
            "window_block_indices": [0, 1, 3, 6, 7, 9],
        },
        note="timm has no LW-DETR ViT; 2x2 windows, since a 224x224 input gives a 14x14 patch grid, which LW-DETR's 4x4 windows do not split",
    ),
    _arch(
        "rf-detr-dinov2",
        "rf-detr-base backbone (ViT-S/14, positions for 518, 4x4 windows, global at 2/5/8/11, 224)",
        "RfDetrDinov2",
        [2, 5, 8, 11],
        fields={**DINOV2_SMALL, "image_size": 518},
        note="timm has no RF-DETR windowed DINOv2: transformers' RfDetrDinov2Backbone only",
    ),
    _arch(
        "hiera",
        "hiera-base (224, mask-unit attention)",
        "Hiera",
        timm_name="hiera_base_224",
        timm_out_indices=[0, 1, 2, 3],
        note="timm's hiera_base_224 is the same network",
    ),
    Arch(
        "vitpose-backbone",
        "vitpose-base backbone (ViT-B/16, one expert, 224)",
        "VitPoseBackboneConfig",
        "VitPoseBackbone",
        {"image_size": [224, 224], "out_indices": [12]},
        note="timm has no ViTPose backbone: transformers' VitPoseBackbone only",
    ),
    _arch(
        "pixio",
        "pixio at ViT-B width (768, 12 layers, 224)",
        "Pixio",
        VIT_LAYERS,
        fields={"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224},
        note="Pixio's released sizes start at ViT-H; measured at ViT-B width to fit the suite's budget; timm has none",
    ),
    _arch(
        "tipsv2",
        "tipsv2-b/14 vision encoder (224)",
        "Tipsv2Vision",
        VIT_LAYERS,
        fields={"image_size": 224},
        note="timm has no TIPSv2: transformers' Tipsv2VisionBackbone only",
    ),
    _arch(
        "sapiens2",
        "sapiens2 at ViT-B width (768, 12 layers, 8 registers, 224)",
        "Sapiens2",
        VIT_LAYERS,
        fields={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
        note="Sapiens2's smallest release is 0.4 B; measured at ViT-B width to fit the suite's budget; timm has none",
    ),
    _cnn(
        "pp-lcnet",
        "pp-lcnet x1.0",
        "PPLCNet",
        [2, 3, 4, 5],
        timm_name="lcnet_100",
        timm_out_indices=[1, 2, 3, 4],
        note="timm's lcnet_100 is the same network",
    ),
    _cnn(
        "pp-lcnet-v3",
        "pp-lcnetv3 (default config, unfolded)",
        "PPLCNetV3",
        [2, 3, 4, 5],
        note="timm has no PP-LCNetV3; the reparam section measures the folded model",
    ),
    _cnn(
        "pp-lcnet-v4",
        "pp-lcnetv4 (default config)",
        "PPLCNetV4",
        note="timm has no PP-LCNetV4: transformers' PPLCNetV4Backbone only",
    ),
    _cnn(
        "textnet",
        "textnet-base (default config, unfolded, 224)",
        "TextNet",
        note="timm has no TextNet; the reparam section measures the folded model",
    ),
    Arch(
        "uvdoc-backbone",
        "uvdoc backbone (default config, dilated stages, 224)",
        "UVDocBackboneConfig",
        "UVDocBackbone",
        {"out_indices": [1, 2, 3, 4, 5, 6]},
        channels_last=True,
        note="timm has no UVDoc backbone: transformers' UVDocBackbone only",
    ),
    Arch(
        "nat",
        "nat-mini",
        None,
        None,
        {"out_indices": FOUR_STAGES},
        ours_config=("backbones_nat", "NatConfig"),
        note="transformers 5.23 ships no NAT and timm has none: our latency only",
    ),
    Arch(
        "dinat",
        "dinat-mini",
        None,
        None,
        {"out_indices": FOUR_STAGES},
        ours_config=("backbones_dinat", "DinatConfig"),
        note="transformers' DiNAT needs natten (not installable here) and timm has none: our latency only",
    ),
]


# The big-checkpoint case (section ``bigload``): DINOv3 ViT-H+/16 (dinov3-vith16plus, 0.84 B parameters), as
# transformers' model card configures it, written as a sharded bfloat16 checkpoint of random weights.
BIG_LOAD = Arch(
    "dinov3-vith16plus",
    "dinov3-vith16plus (0.84 B parameters, bf16, 4 shards)",
    "DINOv3ViTConfig",
    "DINOv3ViTBackbone",
    {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "use_gated_mlp": True,
        "hidden_act": "silu",
        "num_register_tokens": 4,
        "key_bias": False,
        "out_indices": [32],
    },
    note="a synthetic checkpoint: transformers' config, random bfloat16 weights in shards of at most 500 MB",
)
BIG_LOAD_SHARD_BYTES = 500_000_000


def arch_by_name(name: str) -> Arch:
    for arch in ARCHS:
        if arch.name == name:
            return arch
    raise KeyError(f"unknown architecture {name!r}; choose from {', '.join(arch.name for arch in ARCHS)}")
