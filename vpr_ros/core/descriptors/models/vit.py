"""A DINOv2 vision transformer (ViT-S/B/L with 14-pixel patches), written for vpr_ros.

Its state dict has the layout of Meta's DINOv2 hub backbones (`dinov2_vitb14` and friends:
`cls_token`, `pos_embed` (1 x 1370 x C for the 518-pixel pre-training grid), `mask_token`,
`patch_embed.proj`, `blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2,
ls2.gamma}`, `norm`), so the backbones inside SALAD, BoQ and MegaLoc checkpoints load strictly.
The computation follows that definition too: pre-norm blocks with LayerScale, LayerNorm eps 1e-6,
exact GELU, and the learned 37 x 37 position grid resized bicubically with DINOv2's scale factor
`(grid + 0.1) / 37` for other input sizes.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

ARCHS = {  # name: (embed_dim, depth, heads)
    "vits14": (384, 12, 6),
    "vitb14": (768, 12, 12),
    "vitl14": (1024, 24, 16),
}
PATCH = 14
PRETRAIN_GRID = 37  # 518 / 14: the position grid the checkpoints carry
INTERPOLATE_OFFSET = 0.1  # DINOv2's scale-factor offset when resizing the position grid


class PatchEmbed(nn.Module):
    """B x 3 x H x W -> B x (H/14 * W/14) x C, row-major over the patch grid."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # batch-agnostic reshapes, so that an ONNX export keeps its batch dynamic
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head dim), as DINOv2
        return self.proj(out.transpose(1, 2).flatten(2))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoViT(nn.Module):
    """DINOv2 ViT: images B x 3 x H x W (ImageNet-normalised, H and W multiples of 14) -> tokens
    B x (1 + H/14 * W/14) x C after the last block (class token first), before the final `norm`.

    `mask_token`: whether the state dict carries DINOv2's (unused at inference) mask token; the hub
    backbones do, MegaLoc's self-contained release does not.
    """

    def __init__(self, arch: str = "vitb14", mask_token: bool = True):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown ViT {arch!r}; choose one of {sorted(ARCHS)}")
        dim, depth, heads = ARCHS[arch]
        self.dim = dim
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + PRETRAIN_GRID ** 2, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        if mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self._init_random()

    def _init_random(self) -> None:
        """A well-conditioned random start (as DINOv2 initialises); checkpoints overwrite all of it."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def position_embedding(self, rows: int, cols: int) -> torch.Tensor:
        """1 x (1 + rows * cols) x C: the class position and the patch grid resized to rows x cols."""
        grid = int(math.isqrt(self.pos_embed.shape[1] - 1))
        if rows == cols == grid:
            return self.pos_embed
        pos = self.pos_embed.float()
        patches = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        scale = ((rows + INTERPOLATE_OFFSET) / grid, (cols + INTERPOLATE_OFFSET) / grid)
        patches = F.interpolate(patches, scale_factor=scale, mode="bicubic", align_corners=False)
        if patches.shape[-2:] != (rows, cols):
            raise ValueError(f"position grid resized to {tuple(patches.shape[-2:])}, expected {(rows, cols)}")
        patches = patches.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([pos[:, :1], patches], dim=1).to(self.pos_embed.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = (int(size) for size in images.shape[-2:])  # constants in a trace: a preset's size is fixed
        if height % PATCH or width % PATCH:
            raise ValueError(f"ViT input {height}x{width} is not a multiple of {PATCH} pixels")
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embedding(height // PATCH, width // PATCH).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return x


def tokens_to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Patch tokens B x N x C (row-major) -> feature map B x C x H/14 x W/14."""
    return tokens.transpose(1, 2).unflatten(2, (int(height) // PATCH, int(width) // PATCH))
