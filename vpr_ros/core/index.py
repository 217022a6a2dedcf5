"""faiss index over L2-normalised global descriptors (inner product = cosine similarity).

The index is described by a faiss `index_factory` string: "Flat" (exact, the default),
"IVF<n>,PQ<m>" (compressed, for very large maps; needs training) or "HNSW<M>" (graph). Search-time
parameters (`nprobe` for IVF, `efSearch` for HNSW) are applied by name. Indexes are saved with
faiss's own binary format (faiss.write_index), never with pickle.
"""

import faiss
import numpy as np

from vpr_ros.core import LOGGER


def _as_matrix(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{what} must be N x {dim}, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return vectors


class DescriptorIndex:
    """A faiss index with growing add, top-k search and optional GPU placement."""

    def __init__(self, dim: int, factory: str = "Flat", search_params: dict | None = None,
                 use_gpu: bool = False):
        if dim <= 0:
            raise ValueError(f"descriptor dimension must be positive, got {dim}")
        self.dim, self.factory = dim, factory
        self.search_params = dict(search_params or {})
        try:
            self.index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValueError(f"invalid faiss index_factory string {factory!r}: {exc}") from exc
        self.use_gpu = False
        if use_gpu:
            self.to_gpu()

    def to_gpu(self) -> None:
        """Move the index to GPU 0; a clear error where faiss has no GPU."""
        if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
            raise RuntimeError("faiss GPU search was asked for but faiss has no GPU here "
                               "(install faiss-gpu on a machine with CUDA, or set use_gpu false)")
        self._gpu_resources = faiss.StandardGpuResources()
        self.index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self.index)
        self.use_gpu = True

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def train(self, vectors: np.ndarray) -> None:
        """Train a quantising index (IVF, PQ) on representative vectors; no-op for Flat/HNSW."""
        if self.index.is_trained:
            return
        vectors = _as_matrix(vectors, self.dim, "training vectors")
        LOGGER.info("training faiss %s on %d vectors", self.factory, len(vectors))
        self.index.train(vectors)

    def add(self, vectors: np.ndarray) -> None:
        """Append vectors; their ids continue from len(self)."""
        vectors = _as_matrix(vectors, self.dim, "descriptors")
        if not self.index.is_trained:
            raise RuntimeError(f"faiss index {self.factory!r} must be trained before adding vectors")
        self.index.add(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: (Q x k similarities, Q x k ids), id -1 where the map has fewer."""
        queries = _as_matrix(queries, self.dim, "query descriptors")
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if len(self) == 0:
            return (np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64))
        self._apply_search_params()
        sims, ids = self.index.search(queries, k)
        sims[ids < 0] = -np.inf
        return sims, ids

    def _apply_search_params(self) -> None:
        for name, value in self.search_params.items():
            faiss.ParameterSpace().set_index_parameter(self.index, name, value)

    def write(self, path) -> None:
        index = faiss.index_gpu_to_cpu(self.index) if self.use_gpu else self.index
        faiss.write_index(index, str(path))

    @classmethod
    def read(cls, path, dim: int, factory: str, search_params: dict | None = None,
             use_gpu: bool = False) -> "DescriptorIndex":
        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"index {path} has dimension {index.d}, expected {dim}")
        obj = cls.__new__(cls)
        obj.dim, obj.factory, obj.search_params, obj.index, obj.use_gpu = dim, factory, dict(search_params or {}), index, False
        if use_gpu:
            obj.to_gpu()
        return obj
