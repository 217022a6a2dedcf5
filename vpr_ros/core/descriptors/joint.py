"""The global descriptor and XFeat's sparse local features from one pass of the backbone.

The default preset's descriptor (dense XFeat features + VLAD) and the `xfeat` local features that
re-ranking matches run the same network on the same image. When a map's local features were
extracted at the descriptor's input size, `DescriptorWithKeypoints` runs XFeat once and derives both:
the aggregation (VLAD, PCA) from the dense features, and the keypoints, scores and descriptors from
its heads (xfeat_sparse.py, static shapes). It is one torch module, so it exports as one ONNX graph
with both outputs and can be captured as one CUDA graph.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.descriptors.nets import XFeatBackbone
from vpr_ros.core.descriptors.xfeat_sparse import XFeatKeypoints

# what the one graph returns, in order (also the ONNX output names)
OUTPUTS = ("descriptors", "keypoints", "local_descriptors", "keypoint_scores")


@dataclass
class Encoded:
    """A batch's global descriptors and, from the joint graph, its XFeat local features (padded to N
    slots; a slot whose score is not positive is empty)."""

    descriptors: np.ndarray  # B x D float32 unit vectors
    keypoints: np.ndarray | None = None  # B x N x 2, x y in pixels of the network input
    local_descriptors: np.ndarray | None = None  # B x N x 64 unit vectors
    scores: np.ndarray | None = None  # B x N

    @property
    def has_local(self) -> bool:
        return self.keypoints is not None


def shares_backbone(descriptor: GlobalDescriptor, local_conf: dict | None) -> bool:
    """Whether `descriptor` and local features configured as `local_conf` (a map's) can share one XFeat pass:
    an XFeat backbone, xfeat local features at the same input size, a size XFeat needs no resizing for."""
    if not local_conf or local_conf.get("extractor") != "xfeat" or descriptor.published:
        return False
    width, height = descriptor.input_size
    return (isinstance(descriptor.backbone, XFeatBackbone) and tuple(local_conf["input_size"]) == (width, height)
            and width % 32 == 0 and height % 32 == 0)


class DescriptorWithKeypoints(nn.Module):
    """B x 3 x H x W images in [0, 1] -> (B x D global descriptors, B x N x 2 keypoints, B x N x 64 local
    descriptors, B x N scores), N = `max_keypoints`; slots with a score <= 0 are padding."""

    def __init__(self, descriptor: GlobalDescriptor, max_keypoints: int):
        super().__init__()
        if not isinstance(getattr(descriptor, "backbone", None), XFeatBackbone):
            raise ValueError(f"preset {descriptor.preset!r} has no XFeat backbone to share with local features")
        self.descriptor = descriptor
        width, height = descriptor.input_size
        self.keypoints = XFeatKeypoints(max_keypoints, height, width)
        self.eval()

    def dense(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The backbone's pass (the part a GPU may run in half precision)."""
        return self.descriptor.backbone.dense(images)

    def heads(self, feats: torch.Tensor, logits: torch.Tensor, reliability: torch.Tensor):
        """The aggregation and the sparse head on the backbone's outputs (float32)."""
        global_descriptor = self.descriptor.aggregate(F.normalize(feats, dim=1))
        return (global_descriptor, *self.keypoints(feats, logits, reliability))

    def forward(self, images: torch.Tensor):
        return self.heads(*self.dense(images))
