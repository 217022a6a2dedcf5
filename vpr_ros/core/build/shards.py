"""A map build in shards: the plan, the fitted descriptor and every finished shard of frames in a work
folder, so that the frames can be described by many workers (a Ray cluster, distributed.py, or this
process) and an interrupted build resumes from its finished shards.

    <work>/plan.json        what is built: the frames' sources (sha256), preset and configuration, local
                            features, shard size and fitting sample; another plan discards the folder's shards
    <work>/sources.json     the frames' image references (files by absolute path, or bag references)
    <work>/descriptor.npz   the descriptor's fitted buffers (vocabulary, PCA), fitted once on the sample
    <work>/shard_<a>_<b>.npz  frames a..b-1: their global descriptors (and local features), written atomically

On a cluster the work folder must be on storage every worker reads and writes (NFS, a shared volume).
"""

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from vpr_ros.core import LOGGER
from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.build.sources import SourceLoader
from vpr_ros.core.inputs.images import batch_to_tensor
from vpr_ros.core.matching.local_features import LocalExtractor, LocalFeatureTable

SHARD_FRAMES = 256  # frames per shard: the unit of work, of progress and of resuming
FIT_SAMPLE = 5000  # frames the vocabulary and PCA are fitted on (evenly spread); smaller maps use them all
FITTED_FILE, PLAN_FILE, SOURCES_FILE = "descriptor.npz", "plan.json", "sources.json"


def fit_sample(count: int, size: int = FIT_SAMPLE) -> np.ndarray:
    """The rows of `count` frames the descriptor is fitted on: all of them, or `size` spread evenly."""
    if count <= size:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, size).round().astype(np.int64))


def sources_digest(sources: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sources).encode()).hexdigest()


class ShardStore:
    """The work folder of one build (see the module docstring)."""

    def __init__(self, folder: str | Path, plan: dict, sources: Sequence[str] | None = None):
        """Open `folder` for `plan`; a folder left by another plan loses its fitted descriptor and shards.
        `sources` (written for the workers) are needed when the store is created, not when a worker opens it."""
        self.folder = Path(folder).absolute()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.plan = plan
        plan_path = self.folder / PLAN_FILE
        if sources is not None:
            previous = json.loads(plan_path.read_text()) if plan_path.is_file() else None
            if previous != plan:
                if previous is not None:
                    LOGGER.warning("work folder %s holds another build (%s); starting it afresh", self.folder,
                                   ", ".join(k for k in plan if previous.get(k) != plan[k]) or "its plan")
                for stale in [*self.folder.glob("shard_*.npz"), self.folder / FITTED_FILE]:
                    stale.unlink(missing_ok=True)
                _write_atomic(self.folder / SOURCES_FILE, json.dumps(list(sources)).encode())
                _write_atomic(plan_path, json.dumps(plan, indent=1).encode())

    @property
    def shards(self) -> list[tuple[int, int]]:
        size, count = self.plan["shard_frames"], self.plan["frames"]
        return [(start, min(start + size, count)) for start in range(0, count, size)]

    def path(self, start: int, stop: int) -> Path:
        return self.folder / f"shard_{start:010d}_{stop:010d}.npz"

    def pending(self) -> list[tuple[int, int]]:
        return [shard for shard in self.shards if not self.path(*shard).is_file()]

    def write(self, start: int, stop: int, arrays: dict[str, np.ndarray]) -> None:
        tmp = self.path(start, stop).with_suffix(f".tmp-{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, self.path(start, stop))

    def read(self, start: int, stop: int, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """A shard's arrays (only `keys`, when given: the others are not read)."""
        with np.load(self.path(start, stop), allow_pickle=False) as shard:
            return {k: shard[k] for k in (shard.files if keys is None else keys)}

    def save_fitted(self, descriptor: GlobalDescriptor) -> None:
        state = descriptor.state_dict()
        tmp = self.folder / f".{FITTED_FILE}.tmp-{os.getpid()}.npz"
        np.savez(tmp, **{k: v.cpu().numpy() for k, v in state.items()})
        os.replace(tmp, self.folder / FITTED_FILE)

    def fitted_descriptor(self, device: str = "cpu") -> GlobalDescriptor | None:
        """The plan's descriptor with the fitted buffers saved here, or None before fitting."""
        if not (self.folder / FITTED_FILE).is_file():
            return None
        descriptor = GlobalDescriptor(self.plan["preset"], **self.plan["conf"])
        with np.load(self.folder / FITTED_FILE, allow_pickle=False) as buffers:
            descriptor.load_fitted({k: torch.from_numpy(buffers[k]) for k in buffers.files})
        return descriptor.to(device)

    def sources(self) -> list[str]:
        return json.loads((self.folder / SOURCES_FILE).read_text())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def describe_shard(descriptor: GlobalDescriptor, extractor: LocalExtractor | None, sources: Sequence[str],
                   load: Callable[[str], np.ndarray], batch_size: int,
                   descriptors: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One shard's global descriptors (unless given) and local features, as the arrays a shard file holds."""
    described, features = [], []
    for start in range(0, len(sources), batch_size):
        images = [load(source) for source in sources[start:start + batch_size]]
        if descriptors is None:
            described.append(descriptor.describe(batch_to_tensor(images, descriptor.input_size)))
        if extractor is not None:
            features += extractor.extract(images)
    out = {"descriptors": (np.ascontiguousarray(descriptors, np.float32) if descriptors is not None
                           else np.concatenate(described))}
    if extractor is not None:
        table = LocalFeatureTable.build(features, extractor.max_keypoints, extractor.dim, with_depth=False)
        out.update({f"local_{c}": getattr(table, c) for c in LocalFeatureTable.COLUMNS})
    return out


class ShardWorker:
    """Describes shards of a work folder: the per-actor state of a Ray Data actor pool (distributed.py), or
    the build's own process. Built from the work folder alone, so that it can start on any machine that
    mounts it."""

    def __init__(self, folder: str, batch_size: int = 8, device: str = "cpu",
                 load: Callable[[str], np.ndarray] | None = None, threads: int | None = None,
                 descriptor: GlobalDescriptor | None = None):
        """descriptor: the fitted descriptor when the caller holds it (else rebuilt from the folder)."""
        if threads:
            torch.set_num_threads(threads)
        plan = json.loads((Path(folder) / PLAN_FILE).read_text())
        self.store = ShardStore(folder, plan)
        self.descriptor = descriptor or self.store.fitted_descriptor(device)
        if self.descriptor is None:
            raise RuntimeError(f"work folder {folder} has no fitted descriptor yet")
        self.extractor = (LocalExtractor.for_config(plan["local"], device) if plan["local"] else None)
        self.sources, self.load, self.batch_size = self.store.sources(), load or SourceLoader(), batch_size

    def describe(self, start: int, stop: int, descriptors: np.ndarray | None = None) -> int:
        """Describe frames start..stop-1 into their shard (kept when already there); returns their count."""
        if not self.store.path(start, stop).is_file():
            self.store.write(start, stop, describe_shard(self.descriptor, self.extractor, self.sources[start:stop],
                                                         self.load, self.batch_size, descriptors))
        return stop - start

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A Ray Data batch of shards ({"start": [...], "stop": [...]}) -> their frame counts."""
        frames = [self.describe(int(a), int(b)) for a, b in zip(batch["start"], batch["stop"])]
        return {"start": np.asarray(batch["start"]), "frames": np.asarray(frames),
                "pid": np.full(len(frames), os.getpid())}  # which process described them (the driver reports it)
