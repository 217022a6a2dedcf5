"""faiss index over L2-normalised global descriptors (inner product = cosine similarity).

The index is described by a faiss `index_factory` string: "Flat" (exact, the default),
"IVF<n>,PQ<m>" (compressed, for very large maps; needs training) or "HNSW<M>" (graph), or by the name
of one of INDEX_PRESETS (a factory with its search parameters, sized for a map's frame count). Search-time
parameters (`nprobe` for IVF, `efSearch` for HNSW) are applied by name; `refine` (ours, not faiss's)
re-ranks `refine` x k candidates by the exact inner product with the map's own descriptors. Indexes are
saved with faiss's own binary format (faiss.write_index), never with pickle.

City-scale maps (the `ivfpq-*` presets) are built shard by shard and merged into faiss's on-disk inverted
lists (faiss.contrib.ondisk.merge_ondisk): `index.faiss` keeps the quantisers (a few MB) and
`index.ivfdata` the compressed codes, memory-mapped when the map loads.

Search on a GPU (`device="cuda"`): faiss's own GPU index where the installed faiss has GPU support;
otherwise, for a "Flat" index, the map's vectors as one float32 matrix on the GPU and an exact
matrix-vector product with top-k in torch (100k x 256-d is 100 MB; the product reads it once). A
quantised or graph index without faiss-gpu is refused with what to install. The CPU index stays the
map's own (training, adding, writing); the GPU copy mirrors it.
"""

import errno
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import torch

from vpr_ros.core import LOGGER
from vpr_ros.core.runtime.devices import resolve_device


# name -> (faiss factory, search parameters, on-disk inverted lists). nlist follows faiss's guideline of
# 4..16 x sqrt(N) lists; 32-byte PQ codes (+ 8-byte ids) keep the index near 45 B per frame; nprobe is what
# 1-recall@10 >= 0.9 took on descriptors with PCA-whitened statistics; refine 10 re-ranks the 10 x k best
# codes with the exact descriptors, which maps of near-duplicate frames need (docs/benchmarks.md,
# "City-scale maps").
INDEX_PRESETS = {
    "flat": ("Flat", {}, False),
    "hnsw": ("HNSW32", {"efSearch": 128}, False),
    "ivfpq-100k": ("IVF1024,PQ32", {"nprobe": 64, "refine": 10}, True),
    "ivfpq-1m": ("IVF4096,PQ32", {"nprobe": 256, "refine": 10}, True),
    "ivfpq-10m": ("IVF16384,PQ32", {"nprobe": 256, "refine": 10}, True),
}
IVFDATA_SUFFIX = ".ivfdata"  # the on-disk inverted lists beside index.faiss
TRAIN_POINTS_PER_LIST = 40  # k-means sample per inverted list (faiss asks for 39 at least)


def index_preset(name: str, search_params: dict | None = None) -> tuple[str, dict, bool]:
    """(factory, search parameters, on disk) of a preset name, or of a faiss factory string as given;
    `search_params` override the preset's."""
    factory, params, ondisk = INDEX_PRESETS.get(name, (name, {}, False))
    return factory, {**params, **(search_params or {})}, ondisk


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


_FAISS_PREFIX = re.compile(r"^Error in .*? at [^\s]+:\d+: (?:Error: '.*?' failed: )?")
_FAISS_READ = re.compile(r"read error in (?P<file>.+?): (?P<got>\d+) != (?P<want>\d+) \(.*\)$")
_ERRNO_TEXTS = {"Success", *(os.strerror(code) for code in errno.errorcode)}


def faiss_error_text(exc: BaseException) -> str:
    """What a faiss exception says, without its C++ location and without the errno text faiss appends from
    whatever call last set errno (a short read of a damaged file ends in "(Success)" or "(No such file or
    directory)" although the file is there)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = _FAISS_PREFIX.sub("", text)
    read = _FAISS_READ.search(text)
    if read:
        return (f"{read['file']} ends early or is damaged (read {read['got']} of the {read['want']} items "
                "the index needs)")
    if "could not open" in text:  # here the errno is the open's own
        return text
    stray = re.search(r" \(([^()]*)\)$", text)
    return text[:stray.start()] if stray and stray.group(1) in _ERRNO_TEXTS else text


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
        """factory: a faiss index_factory string or an INDEX_PRESETS name (its factory and search parameters,
        which `search_params` override)."""
        if dim <= 0:
            raise ValueError(f"descriptor dimension must be positive, got {dim}")
        self.dim = dim
        self.factory, self.search_params, self.ondisk = index_preset(factory, search_params)
        try:
            self.index = faiss.index_factory(dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValueError(f"invalid faiss index_factory string {factory!r}: {exc}") from exc
        if self.ondisk and faiss.try_extract_index_ivf(self.index) is None:
            raise ValueError(f"on-disk inverted lists need an IVF index, not {self.factory!r}")
        self.refine_vectors = None  # N x D exact descriptors for `refine` (the map's, often memory-mapped)
        self._ivfdata: Path | None = None
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
    def read_only(self) -> bool:
        """An index whose inverted lists live on disk (ivfpq-* presets): searched, never added to."""
        return self._ivfdata is not None

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def train(self, vectors: np.ndarray) -> None:
        """Train a quantising index (IVF, PQ) on representative vectors; no-op for Flat/HNSW."""
        if self.index.is_trained:
            return
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None and len(vectors) < ivf.nlist:
            raise ValueError(f"the {self.factory} index needs at least {ivf.nlist} frames to train its inverted lists, "
                             f"the map has {len(vectors)}: use a smaller index (flat, or an ivfpq preset for fewer frames)")
        if ivf is not None and len(vectors) > TRAIN_POINTS_PER_LIST * ivf.nlist:  # an evenly spread sample
            vectors = vectors[np.linspace(0, len(vectors) - 1, TRAIN_POINTS_PER_LIST * ivf.nlist).astype(np.int64)]
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
        if self._ivfdata is not None:
            raise ValueError(f"the map's on-disk {self.factory!r} index is read-only: rebuild the map to add frames")
        if self.ondisk:  # first filled in memory; add_sharded writes the on-disk lists
            raise ValueError("an on-disk index is filled with add_sharded")
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
            if name != "refine":
                faiss.ParameterSpace().set_index_parameter(index, name, value)
        refine = int(self.search_params.get("refine", 1)) if self.refine_vectors is not None else 1
        candidates = k * refine
        if subset is None:
            sims, ids = index.search(queries, candidates)
        else:
            bits = np.packbits(subset, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(subset), faiss.swig_ptr(bits))
            sims, ids = index.search(queries, candidates, params=_selector_parameters(index, selector))
        if refine > 1:
            sims, ids = self._refined(queries, ids, k)
        sims[ids < 0] = -np.inf
        return sims, ids

    def _refined(self, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top k of each row of candidate `ids` by the exact inner product with `refine_vectors`."""
        sims = np.full((len(queries), k), -np.inf, np.float32)
        best = np.full((len(queries), k), -1, np.int64)
        for row, (query, found) in enumerate(zip(queries, ids)):
            found = np.unique(found[found >= 0])  # sorted: the memory-mapped rows are read in file order
            exact = np.asarray(self.refine_vectors[found], np.float32) @ query
            order = np.argsort(-exact, kind="stable")[:k]
            sims[row, :len(order)], best[row, :len(order)] = exact[order], found[order]
        return sims, best

    def add_sharded(self, vectors: np.ndarray, work_dir: str | Path, shard_size: int = 100_000,
                    threads: int | None = None) -> None:
        """Fill a trained, empty on-disk IVF index with N x D `vectors` (an array or a memory map): each
        shard is added to a copy of the trained index and written to `work_dir` (a shard already there from
        an interrupted build is kept), then faiss merges the shards' inverted lists into
        `work_dir`/index.ivfdata."""
        from faiss.contrib.ondisk import merge_ondisk

        if not self.ondisk or not self.is_trained or len(self):
            raise ValueError("add_sharded fills a trained, empty on-disk IVF index")
        work_dir = Path(work_dir).absolute()
        work_dir.mkdir(parents=True, exist_ok=True)
        starts = range(0, len(vectors), shard_size)

        def add_shard(start: int) -> str:
            path = work_dir / f"shard_{start:012d}_{min(start + shard_size, len(vectors)):012d}.faiss"
            if not path.exists():
                shard = faiss.clone_index(self.index)
                stop = min(start + shard_size, len(vectors))
                shard.add_with_ids(_as_matrix(vectors[start:stop], self.dim, "descriptors"),
                                   np.arange(start, stop, dtype=np.int64))
                faiss.write_index(shard, f"{path}.tmp")
                os.replace(f"{path}.tmp", path)
            return str(path)

        with ThreadPoolExecutor(threads or min(4, os.cpu_count() or 1)) as pool:  # faiss frees the GIL
            shards = list(pool.map(add_shard, starts))
        ivfdata = work_dir / f"index{IVFDATA_SUFFIX}"
        ivfdata.unlink(missing_ok=True)
        merge_ondisk(self.index, shards, str(ivfdata))
        self._ivfdata = ivfdata
        for shard in shards:
            Path(shard).unlink()
        LOGGER.info("faiss %s: %d vectors in %d shards merged into %s", self.factory, len(self), len(shards), ivfdata)

    def write(self, path) -> list[Path]:
        """Write the index to `path` (and, for on-disk inverted lists, their data beside it as
        <path stem>.ivfdata); returns the files written."""
        path = Path(path)
        if self._ivfdata is None:
            faiss.write_index(self.index, str(path))
            return [path]
        ivfdata = path.with_suffix(IVFDATA_SUFFIX)
        if ivfdata.name != self._ivfdata.name:
            raise ValueError(f"an on-disk index is written as index.faiss beside {self._ivfdata.name}, not {path.name}")
        shutil.copyfile(self._ivfdata, ivfdata)
        faiss.write_index(self.index, str(path))
        return [path, ivfdata]

    @classmethod
    def read(cls, path, dim: int, factory: str, search_params: dict | None = None,
             device: str = "cpu") -> "DescriptorIndex":
        """Read an index written by `write`; on-disk inverted lists are memory-mapped from beside it."""
        path = Path(path)
        ivfdata = path.with_suffix(IVFDATA_SUFFIX)
        flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY if ivfdata.exists() else 0
        index = faiss.read_index(str(path), flags)
        if index.d != dim:
            raise ValueError(f"index {path} has dimension {index.d}, expected {dim}")
        obj = cls.__new__(cls)
        obj.dim, obj.factory, obj.search_params, obj.index = dim, factory, dict(search_params or {}), index
        obj.ondisk, obj._ivfdata, obj.refine_vectors = ivfdata.exists(), ivfdata if ivfdata.exists() else None, None
        obj._init_device(device)
        return obj
