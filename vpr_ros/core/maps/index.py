"""faiss index over L2-normalised global descriptors (inner product = cosine similarity).

The index is described by a faiss `index_factory` string: "Flat" (exact, the default),
"IVF<n>,PQ<m>" (compressed, for very large maps; needs training) or "HNSW<M>" (graph). Search-time
parameters (`nprobe` for IVF, `efSearch` for HNSW) are applied by name. Indexes are saved with
faiss's own binary format (faiss.write_index), never with pickle.

Search on a GPU (`device="cuda"`): faiss's own GPU index where the installed faiss has GPU support;
otherwise, for a "Flat" index, the map's vectors as one float32 matrix on the GPU and an exact
matrix-vector product with top-k in torch (100k x 256-d is 100 MB; the product reads it once). A
quantised or graph index without faiss-gpu is refused with what to install. The CPU index stays the
map's own (training, adding, writing); the GPU copy mirrors it.
"""

import faiss
import numpy as np
import torch

from vpr_ros.core import LOGGER
from vpr_ros.core.runtime.devices import resolve_device


def _as_matrix(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{what} must be N x {dim}, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return vectors


def _selector_parameters(index, selector):
    """faiss search parameters restricting `index` to `selector`'s ids, keeping the index's own nprobe/efSearch."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        params = faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe)
    elif hasattr(faiss.downcast_index(index), "hnsw"):
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=faiss.downcast_index(index).hnsw.efSearch)
    else:
        params = faiss.SearchParameters(sel=selector)
    if isinstance(faiss.downcast_index(index), faiss.IndexPreTransform):
        params = faiss.SearchParametersPreTransform(index_params=params)
    return params


def faiss_has_gpu() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class TorchFlatSearch:
    """Exact inner-product top-k over float32 vectors held on a torch device, growable."""

    def __init__(self, vectors: np.ndarray, device: str):
        self.device = torch.device(device)
        self.size = len(vectors)
        self.matrix = torch.empty((max(2 * len(vectors), 1024), vectors.shape[1]), dtype=torch.float32,
                                  device=self.device)
        self.matrix[:self.size] = torch.from_numpy(vectors).to(self.device)

    def add(self, vectors: np.ndarray) -> None:
        need = self.size + len(vectors)
        if need > len(self.matrix):  # double the capacity: online maps grow one keyframe at a time
            grown = torch.empty((2 * need, self.matrix.shape[1]), dtype=torch.float32, device=self.device)
            grown[:self.size] = self.matrix[:self.size]
            self.matrix = grown
        self.matrix[self.size:need] = torch.from_numpy(vectors).to(self.device)
        self.size = need

    def search_tensors(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Q x D device tensor -> (Q x min(k, N) similarities, ids) on the device, nothing read back."""
        top = torch.topk(queries.float() @ self.matrix[:self.size].T, min(k, self.size), dim=1)
        return top.values, top.indices

    @torch.inference_mode()
    def search(self, queries: np.ndarray, k: int, subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if subset is not None:  # only the subset's rows: the product over them alone
            rows = torch.from_numpy(np.flatnonzero(subset)).to(self.device)
            q = torch.from_numpy(queries).to(self.device)
            top = torch.topk(q @ self.matrix[rows].T, min(k, len(rows)), dim=1)
            return self._padded(top.values, rows[top.indices], k)
        values, ids = self.search_tensors(torch.from_numpy(queries).to(self.device, non_blocking=True), k)
        return self._padded(values, ids, k)

    @staticmethod
    def _padded(values: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        values, ids = values.cpu().numpy(), ids.cpu().numpy()
        if values.shape[1] < k:  # fewer map frames than k: pad as faiss does
            pad = k - values.shape[1]
            values = np.pad(values, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return values.astype(np.float32), ids.astype(np.int64)


class DescriptorIndex:
    """A faiss index with growing add, top-k search and optional GPU placement."""

    def __init__(self, dim: int, factory: str = "Flat", search_params: dict | None = None, device: str = "cpu"):
        if dim <= 0:
            raise ValueError(f"descriptor dimension must be positive, got {dim}")
        self.dim, self.factory = dim, factory
        self.search_params = dict(search_params or {})
        try:
            self.index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValueError(f"invalid faiss index_factory string {factory!r}: {exc}") from exc
        self._init_device(device)

    def _init_device(self, device: str) -> None:
        self.device, self.search_backend, self._gpu = "cpu", "faiss", None
        if device != "cpu":
            self.to_device(device)

    def to_device(self, device: str) -> None:
        """Search on `device` ("cpu", "cuda[:N]" or "auto"); see the module docstring for how. The CPU
        index stays the map's own (train, add, write); a GPU search copy mirrors it."""
        device = resolve_device(device)
        self.device, self.search_backend, self._gpu = "cpu", "faiss", None
        if device == "cpu":
            return
        if faiss_has_gpu():
            self._gpu_resources = faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_resources, int(device.partition(":")[2] or 0), self.index)
            self.search_backend = "faiss-gpu"
        elif self.factory == "Flat":
            self._gpu = TorchFlatSearch(self._vectors(self.index), device)
            self.search_backend = "torch-matmul"
        else:
            raise ValueError(f"GPU search with index {self.factory!r} needs faiss with GPU support (faiss-gpu), "
                             "which is not installed here; use a Flat index or search on the cpu")
        self.device = device

    def torch_search(self, device: str) -> TorchFlatSearch:
        """Exact search whose results stay on `device` (the GPU copy when the index searches there; for a
        Flat index elsewhere, a torch copy of its vectors made here); a quantised or graph index has none."""
        if isinstance(self._gpu, TorchFlatSearch) and self._gpu.device == torch.device(device):
            return self._gpu
        if self.factory != "Flat":
            raise ValueError(f"the {self.factory!r} index cannot search on the device in torch; use a Flat index")
        return TorchFlatSearch(self._vectors(self.index), device)

    @staticmethod
    def _vectors(index) -> np.ndarray:
        return index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), np.float32)

    @property
    def label(self) -> str:
        """e.g. "faiss Flat/cpu", "torch-matmul Flat/cuda"."""
        return f"{self.search_backend} {self.factory}/{self.device}"

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
        if self._gpu is not None:  # the GPU copy was made of the untrained index: copy it again
            self.to_device(self.device)

    def add(self, vectors: np.ndarray) -> None:
        """Append vectors; their ids continue from len(self)."""
        vectors = _as_matrix(vectors, self.dim, "descriptors")
        if not self.index.is_trained:
            raise RuntimeError(f"faiss index {self.factory!r} must be trained before adding vectors")
        self.index.add(vectors)
        if self._gpu is not None:
            self._gpu.add(vectors)

    def search(self, queries: np.ndarray, k: int, subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: (Q x k similarities, Q x k ids), id -1 where the map has fewer. `subset`: a
        boolean mask over the ids; only those are searched (faiss's ID selector: the index skips the rest)."""
        queries = _as_matrix(queries, self.dim, "query descriptors")
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if subset is not None and (subset.shape != (len(self),) or subset.dtype != bool):
            raise ValueError(f"subset must be a boolean mask of the index's {len(self)} ids, got {subset.dtype} "
                             f"{subset.shape}")
        if len(self) == 0 or (subset is not None and not subset.any()):
            return (np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64))
        if isinstance(self._gpu, TorchFlatSearch):
            return self._gpu.search(queries, k, subset)
        # faiss's GPU indexes take no ID selector: a subset search runs on the CPU index
        index = self._gpu if self._gpu is not None and subset is None else self.index
        for name, value in self.search_params.items():
            faiss.ParameterSpace().set_index_parameter(index, name, value)
        if subset is None:
            sims, ids = index.search(queries, k)
        else:
            bits = np.packbits(subset, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(subset), faiss.swig_ptr(bits))
            sims, ids = index.search(queries, k, params=_selector_parameters(index, selector))
        sims[ids < 0] = -np.inf
        return sims, ids

    def write(self, path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def read(cls, path, dim: int, factory: str, search_params: dict | None = None,
             device: str = "cpu") -> "DescriptorIndex":
        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"index {path} has dimension {index.d}, expected {dim}")
        obj = cls.__new__(cls)
        obj.dim, obj.factory, obj.search_params, obj.index = dim, factory, dict(search_params or {}), index
        obj._init_device(device)
        return obj
