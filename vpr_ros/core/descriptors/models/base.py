"""What every published architecture exposes to GlobalDescriptor."""

import torch
from torch import nn


class VPRNet(nn.Module):
    """`backbone` then `aggregator`, split in two so that a backend can run the backbone in fp16 and the
    aggregation in fp32; subclasses set `dim` and override a stage whose layout names it otherwise."""

    dim: int

    def features(self, images: torch.Tensor):
        return self.backbone(images)

    def aggregate(self, feats) -> torch.Tensor:
        return self.aggregator(feats)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.aggregate(self.features(images))
