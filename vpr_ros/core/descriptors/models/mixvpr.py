"""MixVPR (Ali-bey et al., WACV 2023): a ResNet-50 cut after layer3 and a stack of feature mixers.

Layout of the released `resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt` state dict:
- `backbone.model.{conv1,bn1,layer1,layer2,layer3}.*`: torchvision's ResNet-50 held whole with
  layer4, avgpool and fc removed;
- `aggregator.mix.{0..3}.mix.{0,1,3}.*`: four mixers, each LayerNorm(400), Linear(400, 400), ReLU,
  Linear(400, 400) over the flattened 20 x 20 map, added residually;
- `aggregator.channel_proj` Linear(1024, 1024) and `aggregator.row_proj` Linear(400, 4).
Output: 1024 channels x 4 rows = 4096-d, L2-normalised. The mixers have fixed weights per map
location, so the input must be 320 x 320 (ImageNet normalisation).
"""

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from vpr_ros.core.descriptors.models.base import VPRNet


class ResNetWithoutHead(nn.Module):
    """torchvision ResNet-50 with layer4, avgpool and fc removed: B x 3 x H x W -> B x 1024 x H/16 x W/16."""

    def __init__(self):
        super().__init__()
        self.model = torchvision.models.resnet50(weights=None)
        self.model.layer4 = None
        self.model.avgpool = None
        self.model.fc = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(images))))
        return m.layer3(m.layer2(m.layer1(x)))


class FeatureMixer(nn.Module):
    """x + MLP(LayerNorm(x)) along the last (spatial) axis."""

    def __init__(self, size: int, ratio: float = 1.0):
        super().__init__()
        hidden = int(size * ratio)
        self.mix = nn.Sequential(nn.LayerNorm(size), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class MixVPRAggregator(nn.Module):
    """B x C x h x w -> B x (out_channels * out_rows), L2-normalised."""

    def __init__(self, in_channels: int = 1024, grid: tuple[int, int] = (20, 20), out_channels: int = 1024,
                 depth: int = 4, ratio: float = 1.0, out_rows: int = 4):
        super().__init__()
        size = grid[0] * grid[1]
        self.grid = tuple(grid)
        self.mix = nn.Sequential(*[FeatureMixer(size, ratio) for _ in range(depth)])
        self.channel_proj = nn.Linear(in_channels, out_channels)
        self.row_proj = nn.Linear(size, out_rows)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if tuple(feats.shape[-2:]) != self.grid:
            raise ValueError(f"MixVPR needs a {self.grid} feature map (320x320 images), got {tuple(feats.shape[-2:])}")
        x = self.mix(feats.flatten(2))  # B x C x hw
        x = self.channel_proj(x.transpose(1, 2)).transpose(1, 2)  # B x C' x hw
        return F.normalize(self.row_proj(x).flatten(1), dim=1)  # B x C' x rows -> channel-major


class MixVPRNet(VPRNet):
    """MixVPR: images B x 3 x 320 x 320 (normalised) -> B x 4096 unit vectors."""

    def __init__(self, out_channels: int = 1024, out_rows: int = 4, depth: int = 4):
        super().__init__()
        self.backbone = ResNetWithoutHead()
        self.aggregator = MixVPRAggregator(1024, (20, 20), out_channels, depth, 1.0, out_rows)
        self.dim = out_channels * out_rows
