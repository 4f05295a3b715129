"""backbones.reparam: the folding arithmetic, the walk, and what a folded backbone refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from backbones import ReparameterizedError
from backbones.layers import FrozenBatchNorm2d
from backbones.reparam import Reparameterizable, branch_kernel, conv_from_kernel, fuse_conv_bn, reparameterize


def _randomise_norm(norm: nn.BatchNorm2d) -> nn.BatchNorm2d:
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
        norm.running_mean.uniform_(-0.5, 0.5)  # type: ignore[union-attr]
        norm.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]
    return norm


class _RepBlock(nn.Module):
    """RepVGG-style: 3x3 conv+BN, 1x3 conv+BN, 1x1 conv+BN and a BN identity, summed."""

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1, groups=groups, bias=False)
        self.norm3 = _randomise_norm(nn.BatchNorm2d(channels))
        self.conv13 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1), groups=groups, bias=False)
        self.norm13 = _randomise_norm(nn.BatchNorm2d(channels))
        self.conv1 = nn.Conv2d(channels, channels, 1, groups=groups, bias=True)
        self.norm1 = _randomise_norm(nn.BatchNorm2d(channels))
        self.identity = _randomise_norm(nn.BatchNorm2d(channels))
        self.groups = groups
        self.folded: nn.Conv2d | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.folded is not None:
            return self.folded(x)
        return self.norm3(self.conv3(x)) + self.norm13(self.conv13(x)) + self.norm1(self.conv1(x)) + self.identity(x)

    def reparameterize(self) -> None:
        size = (3, 3)
        parts = [
            branch_kernel(self.conv3, self.norm3, kernel_size=size),
            branch_kernel(self.conv13, self.norm13, kernel_size=size),
            branch_kernel(self.conv1, self.norm1, kernel_size=size),
            branch_kernel(None, self.identity, kernel_size=size, channels=self.conv3.in_channels, groups=self.groups),
        ]
        weight = sum(part[0] for part in parts)
        bias = sum(part[1] for part in parts)
        self.folded = conv_from_kernel(self.conv3, weight, bias)  # type: ignore[arg-type]
        del self.conv3, self.norm3, self.conv13, self.norm13, self.conv1, self.norm1, self.identity


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_multi_branch_block_folds_to_one_conv(groups: int) -> None:
    torch.manual_seed(0)
    block = _RepBlock(4, groups).eval()
    x = torch.randn(2, 4, 9, 7)
    expected = block(x)
    assert isinstance(block, Reparameterizable)
    assert reparameterize(block) == 1
    assert isinstance(block.folded, nn.Conv2d) and block.folded.groups == groups
    assert [name for name, _ in block.named_children()] == ["folded"]
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frozen", [False, True])
def test_fuse_conv_bn_keeps_stride_dilation_and_groups(frozen: bool) -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, bias=frozen)
    norm: nn.BatchNorm2d | FrozenBatchNorm2d = _randomise_norm(nn.BatchNorm2d(6)).eval()
    if frozen:
        norm = FrozenBatchNorm2d.from_batch_norm(norm)  # type: ignore[arg-type]
    x = torch.randn(2, 4, 11, 10)
    fused = fuse_conv_bn(conv, norm)
    assert (fused.stride, fused.dilation, fused.groups) == ((2, 2), (2, 2), 2)
    torch.testing.assert_close(fused(x), norm(conv(x)), rtol=1e-5, atol=1e-5)


def test_branch_kernel_refuses_what_cannot_be_centred() -> None:
    with pytest.raises(ValueError, match=r"a 2x2 kernel cannot be centred in 3x3"):
        branch_kernel(nn.Conv2d(1, 1, 2), None, kernel_size=(3, 3))
    with pytest.raises(ValueError, match="dilated"):
        branch_kernel(nn.Conv2d(1, 1, 3, dilation=2), None, kernel_size=(3, 3))
    with pytest.raises(ValueError, match="identity branch needs channels"):
        branch_kernel(None, None, kernel_size=(3, 3))


def test_walk_refuses_training_mode() -> None:
    block = _RepBlock(2).train()
    with pytest.raises(ReparameterizedError, match=r"training mode; .*call model.eval\(\)"):
        reparameterize(block)
    assert block.folded is None


def test_folded_backbone_refuses_training_and_saving(tmp_path: Path) -> None:
    from backbones_resnet import ResNetBackbone, ResNetConfig

    model = ResNetBackbone(ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1], out_indices=[2]))
    model.train()
    assert not model.is_reparameterized
    pixels = torch.randn(1, 3, 32, 32)
    assert model.reparameterize() > 0
    assert model.is_reparameterized and not model.training
    with torch.no_grad():
        folded = model(pixels).feature_maps[0]
    assert model.reparameterize() == 0  # a second call folds nothing and changes nothing
    with torch.no_grad():
        assert torch.equal(model(pixels).feature_maps[0], folded)
    with pytest.raises(ReparameterizedError, match="cannot train; load the checkpoint again"):
        model.train()
    model.eval()  # evaluation mode stays allowed
    with pytest.raises(ReparameterizedError, match="save the model before calling reparameterize"):
        model.save_pretrained(tmp_path)
    assert list(tmp_path.iterdir()) == []
