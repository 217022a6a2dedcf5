"""CosPlace and EigenPlaces: a torchvision ResNet trunk, GeM pooling and a fully connected layer.

Both papers release the same network (Berton et al., CVPR 2022 and ICCV 2023; only the training
differs). The state dict layout of their released `.pth` files:
- `backbone.{0,1,4,5,6,7}.*`: the ResNet's children without average pooling and fc, renumbered
  by a Sequential (0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7 layer1-4);
- `aggregation.1.p` (1,): the GeM exponent, learned;
- `aggregation.3.{weight,bias}`: the fc to the descriptor dimension.
Forward: L2-normalise every location's channels, GeM (eps 1e-6), fc, L2-normalise.
Input: ImageNet-normalised RGB at any size (the papers test at full resolution, 512 px shorter side
for SF-XL).
"""

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from vpr_ros.core.descriptors.models.base import VPRNet

TRUNK_CHANNELS = {"resnet18": 512, "resnet50": 2048, "resnet101": 2048}
RELEASED_DIMS = {  # what the authors released per backbone (their hubconf files)
    "cosplace": {"resnet18": (32, 64, 128, 256, 512), "resnet50": (32, 64, 128, 256, 512, 1024, 2048),
                 "resnet101": (32, 64, 128, 256, 512, 1024, 2048)},
    "eigenplaces": {"resnet18": (256, 512), "resnet50": (128, 256, 512, 1024, 2048),
                    "resnet101": (128, 256, 512, 1024, 2048)},
}


class ChannelNorm(nn.Module):
    """L2-normalise along the channel axis (dim 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


class LearnedGeM(nn.Module):
    """GeM pooling B x C x h x w -> B x C x 1 x 1 with a learned exponent `p` (shape (1,))."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), p))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3), keepdim=True).pow(1.0 / self.p)


def resnet_trunk(depth: str) -> nn.Sequential:
    """torchvision's ResNet without average pooling and fc, as a Sequential (random weights)."""
    if depth not in TRUNK_CHANNELS:
        raise ValueError(f"unknown ResNet {depth!r}; choose one of {sorted(TRUNK_CHANNELS)}")
    resnet = getattr(torchvision.models, depth)(weights=None)
    return nn.Sequential(*list(resnet.children())[:-2])


class GeMFCNet(VPRNet):
    """CosPlace/EigenPlaces network: images B x 3 x H x W (normalised) -> B x out_dim unit vectors."""

    def __init__(self, backbone: str = "resnet50", out_dim: int = 2048):
        super().__init__()
        self.backbone = resnet_trunk(backbone)
        self.aggregation = nn.Sequential(ChannelNorm(), LearnedGeM(), nn.Flatten(),
                                         nn.Linear(TRUNK_CHANNELS[backbone], out_dim), ChannelNorm())
        self.dim = out_dim

    def aggregate(self, feats: torch.Tensor) -> torch.Tensor:
        return self.aggregation(feats)  # the released files name this stage `aggregation`
