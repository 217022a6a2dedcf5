"""The vpr_ros map: a directory of plain arrays, JSON and a faiss index; never pickle.

    <map>/map.json          format name and version, preset and its configuration, descriptor
                            fingerprint, dimension, index factory and search parameters, frame
                            count, coordinate frame, and the size and sha256 of every file below
    <map>/descriptors.npy   N x D float32 global descriptors (L2-normalised)
    <map>/frames.npz        stamp_ns (N), pose (N x 7: x y z qx qy qz qw), has_pose, gps (N x 3:
                            lat lon alt), has_gps
    <map>/sources.json      N image references (file path, or bag path:topic@stamp)
    <map>/descriptor.npz    the descriptor's fitted buffers (VLAD vocabulary, PCA)
    <map>/index.faiss       the faiss index (faiss binary format)

A map is written to a temporary sibling directory and renamed into place, so a half-written map
never appears under its name. Loading checks the format version, every file's size and checksum,
and that the map's preset, fingerprint and dimension match what the caller runs.
"""

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vpr_ros.core import LOGGER
from vpr_ros.core.descriptors import GlobalDescriptor
from vpr_ros.core.frames import FrameTable
from vpr_ros.core.index import DescriptorIndex

FORMAT = "vpr_ros.map"
FORMAT_VERSION = 1
FILES = ("descriptors.npy", "frames.npz", "sources.json", "descriptor.npz", "index.faiss")
FRAME_COLUMNS = ("stamp_ns", "pose", "has_pose", "gps", "has_gps")
# Buffers learned from the map; the backbone comes from the shipped weights (checked by fingerprint).
FITTED_BUFFERS = ("aggregation.centroids", "aggregation.p", "projection.mean", "projection.matrix")


class MapError(ValueError):
    """A map directory that cannot be used; the message names the file and the problem."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class VPRMap:
    """A fitted descriptor, the map frames' descriptors and metadata, and their index."""

    name: str
    descriptor: GlobalDescriptor
    descriptors: np.ndarray  # N x D float32
    frames: FrameTable
    index: DescriptorIndex
    frame_id: str = "map"  # coordinate frame of the poses

    @classmethod
    def create(cls, name: str, descriptor: GlobalDescriptor, descriptors: np.ndarray, frames: FrameTable,
               frame_id: str = "map", search_params: dict | None = None, use_gpu: bool = False) -> "VPRMap":
        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
        if len(descriptors) != len(frames):
            raise MapError(f"{len(descriptors)} descriptors for {len(frames)} frames")
        index = DescriptorIndex(descriptor.dim, descriptor.conf["index"], search_params, use_gpu)
        if len(descriptors):
            index.train(descriptors)
            index.add(descriptors)
        return cls(name, descriptor, descriptors.reshape(len(frames), descriptor.dim), frames, index, frame_id)

    def __len__(self) -> int:
        return len(self.frames)

    def add(self, descriptors: np.ndarray, frames: FrameTable) -> None:
        """Append frames (online maps); their keys continue from len(self)."""
        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32).reshape(len(frames), self.index.dim)
        if not self.index.is_trained:
            self.index.train(descriptors)
        self.index.add(descriptors)
        self.descriptors = np.concatenate([self.descriptors, descriptors])
        self.frames.extend(frames)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the map directory atomically; returns its absolute path."""
        path = Path(path).absolute()
        if path.exists() and not overwrite:
            raise FileExistsError(f"map directory {path} exists; pass overwrite to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir()
        try:
            self._write_files(tmp)
            if path.exists():
                old = path.parent / f".{path.name}.old-{os.getpid()}-{time.monotonic_ns()}"
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old)
            else:
                tmp.rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        LOGGER.info("saved map %s (%d frames) to %s", self.name, len(self), path)
        return path

    def _write_files(self, folder: Path) -> None:
        np.save(folder / "descriptors.npy", self.descriptors, allow_pickle=False)
        np.savez(folder / "frames.npz", **{c: getattr(self.frames, c) for c in FRAME_COLUMNS})
        (folder / "sources.json").write_text(json.dumps(self.frames.sources))
        state = self.descriptor.state_dict()
        np.savez(folder / "descriptor.npz", **{k: state[k].cpu().numpy() for k in FITTED_BUFFERS if k in state})
        self.index.write(folder / "index.faiss")
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name,
            "preset": self.descriptor.preset, "preset_conf": self.descriptor.conf,
            "fingerprint": self.descriptor.fingerprint(), "dim": self.descriptor.dim,
            "index_factory": self.index.factory, "search_params": self.index.search_params,
            "num_frames": len(self), "frame_id": self.frame_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {name: {"bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
                      for name in FILES},
        }
        (folder / "map.json").write_text(json.dumps(meta, indent=2, default=list) + "\n")
        for name in (*FILES, "map.json"):  # on disk before the rename makes the map visible
            with (folder / name).open("rb") as handle:
                os.fsync(handle.fileno())

    @classmethod
    def load(cls, path: str | Path, preset: str | None = None, fingerprint: str | None = None,
             verify_checksums: bool = True, search_params: dict | None = None,
             use_gpu: bool = False) -> "VPRMap":
        """Read and check a map directory; preset/fingerprint, when given, must match the map's."""
        path = Path(path)
        meta = read_metadata(path)
        if preset is not None and meta["preset"] != preset:
            raise MapError(f"map {path} was built with preset {meta['preset']!r}, not {preset!r}; "
                           "rebuild the map or run with its preset")
        for name in FILES:
            file = path / name
            if not file.is_file():
                raise MapError(f"map {path} is missing {name}")
            want = meta["files"][name]
            if file.stat().st_size != want["bytes"]:
                raise MapError(f"map file {file} has {file.stat().st_size} bytes, expected {want['bytes']} "
                               "(truncated or modified)")
            if verify_checksums and _sha256(file) != want["sha256"]:
                raise MapError(f"map file {file} does not match its checksum (corrupt or modified)")

        descriptor = GlobalDescriptor(meta["preset"], **meta["preset_conf"])
        try:
            with np.load(path / "descriptor.npz", allow_pickle=False) as buffers:
                state = descriptor.state_dict()
                state.update({k: torch.from_numpy(buffers[k]) for k in buffers.files})
            descriptor.load_fitted(state)
            with np.load(path / "frames.npz", allow_pickle=False) as columns:
                frames = FrameTable(**{c: columns[c] for c in FRAME_COLUMNS},
                                    sources=json.loads((path / "sources.json").read_text()))
            descriptors = np.load(path / "descriptors.npy", allow_pickle=False)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise MapError(f"map {path} cannot be read: {exc}") from exc
        frames.validate()
        if descriptor.fingerprint() != meta["fingerprint"]:
            raise MapError(f"map {path}: the descriptor rebuilt from its files has another fingerprint than "
                           "the map records (different shipped weights or a modified map)")
        if fingerprint is not None and meta["fingerprint"] != fingerprint:
            raise MapError(f"map {path} has descriptor fingerprint {meta['fingerprint'][:12]}, "
                           f"expected {fingerprint[:12]}: it was built with another vocabulary or weights")
        if descriptors.shape != (meta["num_frames"], meta["dim"]) or descriptor.dim != meta["dim"]:
            raise MapError(f"map {path}: descriptors have shape {descriptors.shape}, expected "
                           f"({meta['num_frames']}, {meta['dim']})")
        index = DescriptorIndex.read(path / "index.faiss", meta["dim"], meta["index_factory"],
                                     search_params if search_params is not None else meta["search_params"],
                                     use_gpu)
        if len(index) != meta["num_frames"]:
            raise MapError(f"map {path}: index holds {len(index)} vectors for {meta['num_frames']} frames")
        return cls(meta["name"], descriptor, descriptors, frames, index, meta["frame_id"])


def read_metadata(path: Path) -> dict:
    """map.json of a map directory, checked for format and version."""
    meta_path = Path(path) / "map.json"
    if not meta_path.is_file():
        raise MapError(f"{path} is not a vpr_ros map: {meta_path.name} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MapError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MapError(f"{meta_path} is not a vpr_ros map description")
    if meta.get("format_version") != FORMAT_VERSION:
        raise MapError(f"{meta_path} has format version {meta.get('format_version')}; this vpr_ros "
                       f"reads version {FORMAT_VERSION}")
    missing = {"preset", "preset_conf", "fingerprint", "dim", "index_factory", "num_frames", "files"} - set(meta)
    if missing:
        raise MapError(f"{meta_path} lacks {sorted(missing)}")
    return meta
