"""Query API: images -> top-K map candidates with per-stage timings; and describing a map's images."""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.inputs.images import batch_to_tensor, batch_to_uint8
from vpr_ros.core.map.index import DescriptorIndex
from vpr_ros.core.descriptors.joint import Encoded


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def describe_map(descriptor: GlobalDescriptor, sources: Sequence, load: Callable[[object], np.ndarray],
                 batch_size: int = 8, progress: bool = False, fit: bool = True) -> np.ndarray:
    """Fit what the preset learns from the map (vocabulary, PCA) and return the map's N x D descriptors.
    fit=False: `descriptor` is already fitted (another map's descriptor space); describe only.

    sources: one entry per map frame; load(source) returns its image (any format images.py accepts).
    The images are read twice when the preset has a vocabulary (once to cluster, once to describe).
    """
    if len(sources) == 0:
        raise ValueError("a map needs at least one image")
    size = descriptor.input_size

    def tensors(desc: str):
        for batch in tqdm(list(_batches(sources, batch_size)), desc=desc, unit="batch", disable=not progress):
            yield batch_to_tensor([load(s) for s in batch], size)

    if not fit:
        return np.concatenate([descriptor.describe(t) for t in tensors("describe")])
    if descriptor.needs_vocabulary:
        descriptor.fit_vocabulary(tensors("vocabulary"))
    raw = np.concatenate([descriptor.describe(t) for t in tensors("describe")])
    if descriptor.fit_projection(raw):
        with torch.inference_mode():
            raw = descriptor.projection(torch.from_numpy(raw)).numpy()
    return raw


@dataclass
class QueryResult:
    """Top-K candidates of each query image, best first, and how long each stage took."""

    similarities: np.ndarray  # Q x K cosine similarities (-inf where the map has fewer than K)
    ids: np.ndarray  # Q x K map frame indices (-1 where the map has fewer than K)
    descriptors: np.ndarray  # Q x D query descriptors
    timings_ms: dict[str, float] = field(default_factory=dict)  # stage -> ms for the whole batch
    encoded: Encoded | None = None  # the backend's whole output (with a joint graph, local features too)


class PlaceRecognizer:
    """A fitted descriptor and the index of a map's descriptors."""

    def __init__(self, descriptor, index: DescriptorIndex):
        """descriptor: a GlobalDescriptor or a backend running one (anything with describe, input_size, dim)."""
        if descriptor.dim != index.dim:
            raise ValueError(f"descriptor dimension {descriptor.dim} does not match the index's {index.dim}")
        self.descriptor, self.index = descriptor, index

    def query(self, images: Sequence[np.ndarray], k: int = 10, subset: np.ndarray | None = None) -> QueryResult:
        """Images (batched) -> top-k candidates; timings for preprocess, descriptor, search, total."""
        t0 = time.perf_counter()
        tensor = batch_to_uint8(list(images), self.descriptor.input_size)  # converted where the model runs
        t1 = time.perf_counter()
        encode = getattr(self.descriptor, "encode", None)  # a backend; a bare GlobalDescriptor only describes
        encoded = encode(tensor) if encode is not None else None
        desc = encoded.descriptors if encoded is not None else self.descriptor.describe(tensor)
        t2 = time.perf_counter()
        sims, ids = self.index.search(desc, k, subset)
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "descriptor": (t2 - t1) * 1e3, "search": (t3 - t2) * 1e3,
                   "total": (t3 - t0) * 1e3}
        return QueryResult(sims, ids, desc, timings, encoded=encoded)


def search(vpr_map, images: Sequence[np.ndarray], k: int = 10, subset: np.ndarray | None = None) -> QueryResult:
    """Images -> the top-k frames of `vpr_map` (map.store.VPRMap) by its own descriptor module: for tools, tests
    and benchmarks (the Localizer runs its configured backend). Raises MapDamaged when a background checksum
    found the map damaged."""
    vpr_map.check_intact()
    return PlaceRecognizer(vpr_map.descriptor, vpr_map.index).query(images, k, subset)
