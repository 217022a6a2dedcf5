"""GlobalDescriptor: one preset as one torch module (backbone + aggregation + PCA-whitening).

It maps B x 3 x H x W images in [0, 1] (H, W from the preset) to B x D L2-normalised vectors.
Everything learned from the map (VLAD vocabulary, PCA) is a buffer of the module, so the whole
descriptor exports to ONNX/TensorRT as one graph and is saved as one state dict. PCA-whitening is
fitted only when the map has at least the preset's `min_frames_for_pca` frames.
"""

import hashlib
import itertools
import json
import math
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np
import torch
from torch import nn

from vpr_ros.core import LOGGER
from vpr_ros.core.descriptors.models import RELEASED_FILES, build_model
from vpr_ros.core.descriptors.models.checkpoints import load_checkpoint
from vpr_ros.core.descriptors.nets import AGGREGATIONS, BACKBONES, VLAD, Projection
from vpr_ros.core.descriptors.presets import WEIGHT_SOURCE_KEYS, preset_config
from vpr_ros.core.inputs.images import to_float_nchw

KMEANS_MIN_POINTS_PER_CLUSTER = 39  # faiss's own minimum: below it k-means warns and its centroids are noise


def _by_name(registry: dict, kind: str, name: str):
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(registry)}")
    return registry[name]


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
            self.backbone = _by_name(BACKBONES, "backbone", self.conf["backbone"])()
            self.aggregation = _by_name(AGGREGATIONS, "aggregation", self.conf["aggregation"])(self.conf,
                                                                                              self.backbone.dim)
        self.projection = Projection()
        self.eval()

    @property
    def published(self) -> bool:
        """A published architecture run from a checkpoint (models/), not one of vpr_ros's own presets."""
        return "model" in self.conf

    @property
    def device(self) -> torch.device:
        """Where its weights and buffers live (a thumbnail descriptor has only buffers)."""
        return next(itertools.chain(self.parameters(), self.buffers())).device

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
        return getattr(self.aggregation, "dim", self.backbone.dim)

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
        device = self.device
        out = self(to_float_nchw(images.to(device))).float().cpu().numpy()
        if not np.isfinite(out).all():
            raise ValueError("descriptor is not finite (NaN or infinity); the input image is unusable")
        return out

    @torch.inference_mode()
    def local_features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's dense features flattened: B x N x D (vpr_ros's own presets)."""
        if self.published:
            raise ValueError(f"preset {self.preset!r} learns nothing from the map's local features")
        device = self.device
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
        needed = clusters * KMEANS_MIN_POINTS_PER_CLUSTER
        if len(data) < needed:  # faiss would warn and fit centroids to a handful of points each: a useless vocabulary
            raise ValueError(f"{len(samples)} map image(s) gave {len(data)} local features for the VLAD vocabulary; its "
                             f"{clusters} clusters need at least {needed} ({KMEANS_MIN_POINTS_PER_CLUSTER} per cluster), "
                             f"that is at least {math.ceil(needed / per_image)} images of {per_image} features each: "
                             "map more (or more textured) images")
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
