"""BoQ, Bag-of-Queries (Ali-bey et al., CVPR 2024): learned queries cross-attend to refined features.

The aggregator: a 3x3 conv projects the backbone's map to `proj` channels, LayerNorm per token;
then two blocks, each a transformer encoder layer over the tokens (torch's TransformerEncoderLayer:
post-norm, ReLU, feed-forward 4x, `proj`/64 heads), and 64 learned queries that self-attend (residual, LayerNorm) and cross-attend
to the refined tokens (LayerNorm). The 2 x 64 query outputs are concatenated, a Linear(128, 32)
mixes them per channel, and the `proj` x 32 result is flattened channel-major and L2-normalised.

Layouts of the released checkpoints (the attention keys are those of torch's modules, which BoQ uses):
- `resnet50_16384.pth`: `backbone.net.{0,1,4,5,6}.*` (torchvision ResNet-50's conv1, bn1, layer1-3
  in a Sequential), `aggregator.proj_c` Conv2d(1024, 512, 3), `aggregator.norm_input`,
  `aggregator.boqs.{0,1}.{encoder.*, queries (1 x 64 x 512), self_attn.*, norm_q, cross_attn.*,
  norm_out}`, `aggregator.fc` Linear(128, 32): 512 x 32 = 16384-d. Images 384 x 384.
- `dinov2_12288.pth`: `backbone.dino.*` (DINOv2 ViT-B/14 hub layout; its final norm is carried but
  BoQ uses the last block's tokens without it), proj 384: 384 x 32 = 12288-d. Images 322 x 322.
"""

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from vpr_ros.core.descriptors.models.base import VPRNet
from vpr_ros.core.descriptors.models.vit import DinoViT, tokens_to_map


class MultiheadAttention(nn.Module):
    """Attention with the state dict layout of torch.nn.MultiheadAttention (packed `in_proj_weight` and
    `in_proj_bias`, `out_proj`), batch first; written here so that an ONNX export keeps a dynamic batch
    (torch's own module traces its batch size into reshapes)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # B x heads x N x head_dim

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q, k, v = (self._heads(F.linear(x, w, b)) for x, w, b in ((query, wq, bq), (key, wk, bk), (value, wv, bv)))
        return self.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class EncoderLayer(nn.Module):
    """torch.nn.TransformerEncoderLayer's computation and layout (post-norm, ReLU, no dropout at inference)."""

    def __init__(self, dim: int, heads: int, feedforward: int):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads)
        self.linear1 = nn.Linear(dim, feedforward)
        self.linear2 = nn.Linear(feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x, x, x))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class BoQBlock(nn.Module):
    """Refine tokens B x N x C with a transformer layer; queries attend to them: -> (tokens, B x Q x C)."""

    def __init__(self, dim: int, queries: int):
        super().__init__()
        heads = dim // 64
        self.encoder = EncoderLayer(dim, heads, 4 * dim)
        self.queries = nn.Parameter(torch.randn(1, queries, dim))
        self.self_attn = MultiheadAttention(dim, heads)
        self.norm_q = nn.LayerNorm(dim)
        self.cross_attn = MultiheadAttention(dim, heads)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.encoder(tokens)
        q = tokens[:, :1, :1] * 0 + self.queries  # B x Q x C; an expand to tokens.shape[0] froze the ONNX batch
        q = self.norm_q(q + self.self_attn(q, q, q))
        return tokens, self.norm_out(self.cross_attn(q, tokens, tokens))


class BoQAggregator(nn.Module):
    """B x C x h x w -> B x (proj * rows), L2-normalised."""

    def __init__(self, in_channels: int, proj: int, queries: int = 64, layers: int = 2, rows: int = 32):
        super().__init__()
        self.proj_c = nn.Conv2d(in_channels, proj, kernel_size=3, padding=1)
        self.norm_input = nn.LayerNorm(proj)
        self.boqs = nn.ModuleList(BoQBlock(proj, queries) for _ in range(layers))
        self.fc = nn.Linear(layers * queries, rows)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        tokens = self.norm_input(self.proj_c(feats).flatten(2).transpose(1, 2))
        outs = []
        for block in self.boqs:
            tokens, out = block(tokens)
            outs.append(out)
        mixed = self.fc(torch.cat(outs, dim=1).transpose(1, 2))  # B x proj x rows
        return F.normalize(mixed.flatten(1), dim=-1)


class ResNetTrunk(nn.Module):
    """torchvision ResNet-50 up to layer3 held as `net`: B x 3 x H x W -> B x 1024 x H/16 x W/16."""

    def __init__(self):
        super().__init__()
        r = torchvision.models.resnet50(weights=None)
        self.net = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3)
        self.channels = 1024

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class DinoTrunk(nn.Module):
    """DINOv2 ViT held as `dino`: B x 3 x H x W -> the last block's patch tokens as B x C x H/14 x W/14."""

    def __init__(self, arch: str = "vitb14"):
        super().__init__()
        self.dino = DinoViT(arch)
        self.channels = self.dino.dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return tokens_to_map(self.dino(images)[:, 1:], *images.shape[-2:])


class BoQNet(VPRNet):
    """BoQ: images (normalised) -> B x (proj * rows) unit vectors; backbone `resnet50` or `dinov2`."""

    def __init__(self, backbone: str = "resnet50", rows: int = 32):
        super().__init__()
        if backbone == "resnet50":
            self.backbone, proj = ResNetTrunk(), 512
        elif backbone == "dinov2":
            self.backbone, proj = DinoTrunk(), 384
        else:
            raise ValueError(f"unknown BoQ backbone {backbone!r}; choose resnet50 or dinov2")
        self.aggregator = BoQAggregator(self.backbone.channels, proj, rows=rows)
        self.dim = proj * rows
