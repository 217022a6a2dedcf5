"""SALAD (Izquierdo and Civera, CVPR 2024) and MegaLoc (Berton and Masone, 2025): a DINOv2 ViT-B/14
and optimal-transport aggregation of its patch tokens into clusters, plus the class token.

The aggregation: per patch token, an MLP gives a cluster_dim feature and a score for each of m
clusters; a dustbin row (one learned scalar) is appended to the m x n score matrix and three
log-domain Sinkhorn iterations find a transport plan whose clusters each receive 1/(n+m) of the
mass and the dustbin the rest ((n-m)/(n+m)); the dustbin row is then dropped. Each cluster's
features are the plan-weighted sum over tokens, L2-normalised per cluster; the class token goes
through another MLP and is L2-normalised; both are concatenated (token first, then the
cluster_dim x m matrix flattened row-major) and L2-normalised.

Layouts of the released checkpoints:
- SALAD `dino_salad.ckpt`: `backbone.model.*` (DINOv2 hub layout, vit.py) and
  `aggregator.{token_features.{0,2}, cluster_features.{0,3}, score.{0,3}, dust_bin}`; m=64 clusters
  of 128, token 256, hidden 512: 8448-d. Images 322 x 322.
- MegaLoc `model.safetensors`: `backbone.*` (the same ViT, no mask token) and
  `aggregator.agg.*` (as SALAD's aggregator but clusters of 256: 16640-d) followed by
  `aggregator.linear` Linear(16640, 8448), then L2 normalisation. Its first release
  (`megaloc.torch`) held the backbone as `backbone.model.*` with a mask token;
  checkpoints.py renames that layout on load.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from vpr_ros.core.descriptors.models.base import VPRNet
from vpr_ros.core.descriptors.models.vit import DinoViT, tokens_to_map

SINKHORN_ITERATIONS = 3


def sinkhorn_with_dustbin(scores: torch.Tensor, dustbin: torch.Tensor,
                          iterations: int = SINKHORN_ITERATIONS) -> torch.Tensor:
    """Transport plan B x m x n for scores B x m x n (m clusters, n tokens, n > m) with a dustbin row."""
    m, n = scores.shape[1:]
    if n <= m:
        raise ValueError(f"optimal-transport aggregation needs more tokens ({n}) than clusters ({m})")
    # rows shaped from the input (x * 0) rather than by zeros_like, which an ONNX trace freezes to the export batch
    cost = torch.cat([scores, scores[:, :1] * 0 + dustbin.to(scores.dtype)], dim=1)
    log_norm = -math.log(n + m)
    log_rows = torch.tensor([log_norm] * m + [log_norm + math.log(n - m)],  # the dustbin takes the rest
                            dtype=scores.dtype, device=scores.device)
    log_cols = torch.full((n,), log_norm, dtype=scores.dtype, device=scores.device)
    u, v = cost[:, :, 0] * 0, cost[:, 0] * 0
    for _ in range(iterations):
        u = log_rows - torch.logsumexp(cost + v.unsqueeze(1), dim=2)
        v = log_cols - torch.logsumexp(cost + u.unsqueeze(2), dim=1)
    log_plan = cost + u.unsqueeze(2) + v.unsqueeze(1) - log_norm
    return log_plan[:, :m].exp()


class OptimalTransportAggregator(nn.Module):
    """(B x C x h x w patch map, B x C class token) -> B x (token_dim + cluster_dim * clusters), unit norm."""

    def __init__(self, channels: int = 768, clusters: int = 64, cluster_dim: int = 128, token_dim: int = 256,
                 hidden: int = 512):
        super().__init__()
        self.token_features = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, token_dim))
        # index 1 is the training-time dropout of the released models (no weights): kept for the layout
        self.cluster_features = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.Identity(), nn.ReLU(),
                                              nn.Conv2d(hidden, cluster_dim, 1))
        self.score = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.Identity(), nn.ReLU(),
                                   nn.Conv2d(hidden, clusters, 1))
        self.dust_bin = nn.Parameter(torch.tensor(1.0))
        self.dim = token_dim + cluster_dim * clusters

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        patches, token = inputs
        local = self.cluster_features(patches).flatten(2)  # B x l x n
        plan = sinkhorn_with_dustbin(self.score(patches).flatten(2), self.dust_bin)  # B x m x n
        clusters = F.normalize(torch.einsum("bln,bmn->blm", local, plan), dim=1).flatten(1)
        token = F.normalize(self.token_features(token), dim=-1)
        return F.normalize(torch.cat([token, clusters], dim=-1), dim=-1)


class DinoFeatures(nn.Module):
    """A DINOv2 ViT held as `model`, giving the final-normed (patch map, class token)."""

    def __init__(self, arch: str = "vitb14"):
        super().__init__()
        self.model = DinoViT(arch)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.model.norm(self.model(images))
        return tokens_to_map(tokens[:, 1:], *images.shape[-2:]), tokens[:, 0]


class SaladNet(VPRNet):
    """DINOv2-SALAD: images B x 3 x H x W (normalised, multiples of 14) -> B x 8448 unit vectors."""

    def __init__(self, arch: str = "vitb14", clusters: int = 64, cluster_dim: int = 128, token_dim: int = 256):
        super().__init__()
        self.backbone = DinoFeatures(arch)
        self.aggregator = OptimalTransportAggregator(self.backbone.model.dim, clusters, cluster_dim, token_dim)
        self.dim = self.aggregator.dim



class MegaLocAggregator(nn.Module):
    """SALAD aggregation to 16640-d, then a linear map to `out_dim` (not yet normalised)."""

    def __init__(self, channels: int, clusters: int, cluster_dim: int, token_dim: int, out_dim: int):
        super().__init__()
        self.agg = OptimalTransportAggregator(channels, clusters, cluster_dim, token_dim)
        self.linear = nn.Linear(self.agg.dim, out_dim)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.linear(self.agg(inputs))


class MegaLocNet(VPRNet):
    """MegaLoc: images B x 3 x H x W (normalised, multiples of 14) -> B x 8448 unit vectors."""

    def __init__(self, out_dim: int = 8448, clusters: int = 64, cluster_dim: int = 256, token_dim: int = 256):
        super().__init__()
        self.backbone = DinoViT("vitb14", mask_token=False)
        self.aggregator = MegaLocAggregator(self.backbone.dim, clusters, cluster_dim, token_dim, out_dim)
        self.dim = out_dim

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.backbone.norm(self.backbone(images))
        return tokens_to_map(tokens[:, 1:], *images.shape[-2:]), tokens[:, 0]

    def aggregate(self, feats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.normalize(self.aggregator(feats), dim=-1)
