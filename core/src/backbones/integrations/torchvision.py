"""Any backbone as the ``backbone`` of torchvision's detectors: ``FasterRCNN``, ``MaskRCNN``, ``RetinaNet``
and ``FCOS`` (``pip install "backbones-core[torchvision]"``).

torchvision's detectors take a module with an ``out_channels`` attribute whose forward returns an
``OrderedDict`` of feature maps, all with ``out_channels`` channels. :func:`to_detection_backbone` builds
one from the backbone's selected maps, named ``"0"``, ``"1"``, ... as torchvision's own backbones name them
(the names ``MultiScaleRoIAlign`` and the anchor generators expect by default), through torchvision's
``FeaturePyramidNetwork`` and with its extra levels: ``"max_pool"`` adds ``"pool"`` (Faster and Mask R-CNN,
over strides 4 to 32), ``"p6p7"`` adds ``"p6"`` and ``"p7"`` (RetinaNet and FCOS, over strides 8 to 32).

Example:
    >>> from torchvision.models.detection import FasterRCNN
    >>> resnet = AutoBackbone.from_pretrained("path/to/resnet50", out_indices=[1, 2, 3, 4])  # doctest: +SKIP
    >>> detector = FasterRCNN(to_detection_backbone(resnet, trainable_layers=3), num_classes=91)  # doctest: +SKIP
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal, TypeAlias

from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import (
    ExtraFPNBlock,
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

from .._backbone import Backbone
from ..necks._model import PyramidBackbone

__all__ = ["DetectionBackbone", "to_detection_backbone"]

ExtraBlocks: TypeAlias = Literal["max_pool", "p6p7"] | ExtraFPNBlock | None


class DetectionBackbone(nn.Module):
    """A backbone (``body``), optionally torchvision's FPN (``fpn``) and extra levels, as a detector's backbone.

    Build it with :func:`to_detection_backbone`.

    Attributes:
        body: The wrapped :class:`~backbones.Backbone`; its ``out_features`` are the maps used.
        fpn: torchvision's ``FeaturePyramidNetwork`` (holding the extra levels), or None.
        extra_blocks: The extra levels applied without an FPN, or None.
        out_channels: Channels of every returned map (what torchvision's heads read).
    """

    def __init__(
        self, body: Backbone, out_channels: int, fpn: FeaturePyramidNetwork | None, extra_blocks: ExtraFPNBlock | None
    ) -> None:
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.extra_blocks = extra_blocks
        self.out_channels = out_channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """Feature maps of ``images`` (a batch torchvision's transform has normalised and padded), by name."""
        maps = list(self.body(images, return_dict=True).feature_maps)
        names = [str(index) for index in range(len(maps))]
        if self.fpn is not None:
            return self.fpn(OrderedDict(zip(names, maps)))
        if self.extra_blocks is not None:
            maps, names = self.extra_blocks(maps, list(maps), names)
        return OrderedDict(zip(names, maps))


def _extra_blocks(extra_blocks: ExtraBlocks, out_channels: int) -> ExtraFPNBlock | None:
    if extra_blocks is None or isinstance(extra_blocks, ExtraFPNBlock):
        return extra_blocks
    if extra_blocks == "max_pool":
        return LastLevelMaxPool()
    if extra_blocks == "p6p7":
        return LastLevelP6P7(out_channels, out_channels)
    raise ValueError(
        f"extra_blocks must be 'max_pool' (Faster/Mask R-CNN), 'p6p7' (RetinaNet, FCOS), None or a torchvision "
        f"ExtraFPNBlock, got {extra_blocks!r}"
    )


def to_detection_backbone(
    model: Backbone,
    out_channels: int = 256,
    fpn: bool = True,
    *,
    extra_blocks: ExtraBlocks = "max_pool",
    trainable_layers: int | None = None,
    freeze_batch_norm: bool = False,
) -> DetectionBackbone:
    """Make ``model`` the ``backbone`` of a torchvision detector.

    The maps used are ``model.out_features`` (select them first: four stages at strides 4 to 32 for Faster and
    Mask R-CNN, three at 8 to 32 for RetinaNet and FCOS, as torchvision's own builders do).

    Args:
        model: Any backbone, a neck included (:class:`backbones.necks.SimpleFeaturePyramid` for a plain ViT).
        out_channels: Channels of every returned map.
        fpn: Put torchvision's ``FeaturePyramidNetwork`` on the maps. Without it the maps are returned as
            they are (a neck's already have one width), and must have ``out_channels`` channels.
        extra_blocks: Extra coarser levels after the last map: ``"max_pool"`` (``"pool"``: Faster and Mask
            R-CNN), ``"p6p7"`` (``"p6"``, ``"p7"``: RetinaNet and FCOS), None, or a torchvision ``ExtraFPNBlock``.
        trainable_layers: As torchvision's ``trainable_backbone_layers``: how many stages, counted from the
            deepest, keep training; the others are frozen with :meth:`~backbones.Backbone.freeze_stages`
            (ResNet's ``trainable_layers=3`` trains stages 2 to 4: the stem and stage 1 are frozen); a neck's
            count is of its wrapped backbone's stages, and its pyramid keeps training. None leaves the model's
            freezing as it is.
        freeze_batch_norm: Replace every BatchNorm by a frozen one (:meth:`~backbones.Backbone.freeze_batch_norm`),
            as torchvision's detection builders do for pretrained backbones.

    Returns:
        A :class:`DetectionBackbone` holding ``model`` (not a copy).

    Raises:
        ValueError: No map is selected, ``trainable_layers`` is out of range, or (``fpn=False``) the maps do not
            all have ``out_channels`` channels.
    """
    if not isinstance(model, Backbone):
        raise TypeError(f"model must be a backbones.Backbone, got {type(model).__name__}")
    if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels <= 0:
        raise ValueError(f"out_channels must be a positive int, got {out_channels!r}")
    channels = model.channels
    if not channels:
        raise ValueError("the model outputs no feature map; select its stages first (model.out_indices = [...])")
    if trainable_layers is not None:
        # A neck's levels always train: the count is of the wrapped backbone's stages, which come first.
        count = model.backbone.num_kept_stages if isinstance(model, PyramidBackbone) else model.num_kept_stages
        if (
            isinstance(trainable_layers, bool)
            or not isinstance(trainable_layers, int)
            or not 0 <= trainable_layers <= count
        ):
            raise ValueError(
                f"trainable_layers must be an int between 0 and {count} (the stages {model.stage_names[:count]}), "
                f"got {trainable_layers!r}"
            )
        model.freeze_stages(count - trainable_layers)
    if freeze_batch_norm:
        model.freeze_batch_norm()
    extra = _extra_blocks(extra_blocks, out_channels)
    if fpn:
        pyramid = FeaturePyramidNetwork(channels, out_channels, extra_blocks=extra)
        return DetectionBackbone(model, out_channels, pyramid, None)
    if any(width != out_channels for width in channels):
        raise ValueError(
            f"fpn=False returns the maps as they are, but their channels are {dict(zip(model.out_features, channels))}, "
            f"not out_channels={out_channels}; pass fpn=True, or out_channels={channels[0]} if they all have that width"
        )
    return DetectionBackbone(model, out_channels, None, extra)
