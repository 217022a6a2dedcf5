"""The vpr_ros map: a directory of plain arrays, JSON and a faiss index; never pickle.

    <map>/map.json          format name and version, preset and its configuration, descriptor
                            fingerprint, dimension, index factory and search parameters, frame
                            count, coordinate frame, and the size and sha256 of every file below
    <map>/descriptors.npy   N x D float32 global descriptors (L2-normalised)
    <map>/frames.npz        stamp_ns (N), pose (N x 7: x y z qx qy qz qw), has_pose, gps (N x 3:
                            lat lon alt), has_gps, session (N: row of map.json's `sessions`, each
                            {"id", "robot"}: the recording and robot a frame comes from)
    <map>/sources.json      N image references (file path, or bag path:topic@stamp)
    <map>/descriptor.npz    the descriptor's fitted buffers (VLAD vocabulary, PCA)
    <map>/index.faiss       the faiss index (faiss binary format)
    <map>/index.ivfdata     optional, a city-scale (ivfpq-*) index's on-disk inverted lists, memory-mapped;
                            map.json's `index_ondisk` is true
    <map>/local_*.npy       optional, for re-ranking: the map frames' local features, padded to M
                            keypoints (local_keypoints N x M x 2 float32, local_descriptors N x M x D
                            float16, local_scores N x M float16, local_counts N, local_image_size
                            N x 2); map.json's `local_features` names the extractor and M
    <map>/local_depth.npy   optional, with local features from a camera with depth: each keypoint's depth
                            (N x M float32 metres, NaN unknown); map.json's `local_depth` is true
    <map>/uncertainty.*     optional: the BayesCap head and calibrators (uncertainty.py); map.json's
                            `uncertainty` is true when they are present

A map is written to a temporary sibling directory and renamed into place, so a half-written map
never appears under its name. Format version 2 added sessions; a version 1 map loads as one session
named after the map, robot unknown. Loading checks the format version, every file's size and checksum,
and that the map's preset, fingerprint and dimension match what the caller runs. A large map opens without
reading its bulk: descriptors, local features and on-disk inverted lists are memory-mapped, and the
checksums of a map over CHECKSUM_IN_BACKGROUND_BYTES are verified in a background thread; a mismatch found
there makes every later query raise MapDamaged (sizes are always checked before the map opens). With
`recheck_s`, the files read from disk while the map serves (the memory-mapped ones) are verified again on
that schedule and on request, with the same consequence. map.json's optional
`camera` (map/camera.py MapCamera) records the intrinsics, optical frame and body mounting of the camera.
"""

import errno
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vpr_ros.core import LOGGER
from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.map.frames import FrameTable, Session
from vpr_ros.core.map.index import IVFDATA_SUFFIX, DescriptorIndex, faiss_error_text
from vpr_ros.core.map.camera import MapCamera
from vpr_ros.core.matching.local_features import LocalFeatureTable
from vpr_ros.core.uncertainty.model import HEAD_FILE, META_FILE, UncertaintyModel

FORMAT = "vpr_ros.map"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before sessions
FILES = ("descriptors.npy", "frames.npz", "sources.json", "descriptor.npz", "index.faiss")
FRAME_COLUMNS = ("stamp_ns", "pose", "has_pose", "gps", "has_gps", "session")
LOCAL_FILES = {f"local_{c}.npy": c for c in LocalFeatureTable.COLUMNS}
DEPTH_FILE = "local_depth.npy"
IVFDATA_FILE = "index" + IVFDATA_SUFFIX
CHECKSUM_IN_BACKGROUND_BYTES = 256 << 20  # "auto": larger maps open first and verify their checksums after
MMAP_DESCRIPTORS_BYTES = 256 << 20  # "auto": larger descriptor files are memory-mapped, not read
# Buffers learned from the map; the backbone comes from the shipped weights (checked by fingerprint).
FITTED_BUFFERS = ("aggregation.centroids", "aggregation.p", "projection.mean", "projection.matrix")


class MapError(ValueError):
    """A map directory that cannot be used; the message names the file and the problem."""


class MapDamaged(MapError):
    """A loaded map whose files failed the checksum verified in the background: it must not answer."""


class ChecksumCheck:
    """The sha256 of a map's files, verified on a daemon thread while the map is already in use.

    `verify_first`: check every file of `files` once at start (a map loaded with background checksums).
    `recheck_s` > 0: afterwards, check the `lazy` files (those read from disk while the map serves: memory-
    mapped local features, depths, descriptors and inverted lists) again every recheck_s seconds, and at once
    on `recheck_now()` (the node's SIGUSR1). A mismatch, or a file that can no longer be read, sets `error`
    (MapDamaged); every later query raises it. The lazy files are rechecked through handles opened now, so
    that what is verified is what the map has mapped: a map saved over the same path later (vpr/save_map,
    a slam session appended) replaces the files under the name, not the ones in use."""

    def __init__(self, path: Path, files: dict[str, str], verify_first: bool = True, recheck_s: float = 0.0,
                 lazy: tuple[str, ...] = ()):
        self.path, self.error, self._done = path, None, threading.Event()
        self.recheck_s, self.rechecks = float(recheck_s), 0
        self._lazy = {name: files[name] for name in lazy if name in files}
        self._handles = {name: (path / name).open("rb") for name in self._lazy}
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, args=(files if verify_first else {},),
                                        name="vpr_map_checksums", daemon=True)
        self._thread.start()

    def _verify(self, files: dict[str, str], handles: dict | None = None) -> bool:
        """True when every file matches (read through `handles` where given, else by name); else sets `error`."""
        try:
            for name, sha256 in files.items():
                if self._stop.is_set():
                    return True
                digest = _sha256_of(handles[name]) if handles else _sha256(self.path / name)
                if digest != sha256:
                    self.error = MapDamaged(f"map file {self.path / name} does not match its checksum (corrupt or "
                                            "modified); the map is refused")
                    LOGGER.error("%s", self.error)
                    return False
        except OSError as exc:
            self.error = MapDamaged(f"map {self.path}: checksums cannot be verified: {exc}")
            LOGGER.error("%s", self.error)
            return False
        return True

    def _run(self, files: dict[str, str]) -> None:
        try:
            try:
                if files and not self._verify(files):
                    return
                if files:
                    LOGGER.info("map %s: checksums of %d files verified", self.path, len(files))
            finally:
                self._done.set()
            while self._lazy and not self._stop.is_set():
                self._wake.wait(self.recheck_s if self.recheck_s > 0 else None)
                if self._stop.is_set():
                    return
                self._wake.clear()
                if not self._verify(self._lazy, self._handles):
                    return
                self.rechecks += 1
                LOGGER.info("map %s: checksums of the %d files read from disk verified again (%d)", self.path,
                            len(self._lazy), self.rechecks)
        finally:
            for handle in self._handles.values():  # here, not in stop(): a hash may be running
                handle.close()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the first verification finished (whatever its outcome)."""
        return self._done.wait(timeout)

    def recheck_now(self) -> None:
        """Verify the files read from disk again now (on the checker's thread)."""
        self._wake.set()

    def stop(self) -> None:
        """End the rechecks (the map no longer serves); the thread closes its handles when it ends."""
        self._stop.set()
        self._wake.set()

    def raise_if_damaged(self) -> None:
        if self.error is not None:
            raise self.error


class MapWriteError(OSError):
    """A map that cannot be written where asked; its text names the path and the reason (no errno prefix)."""

    def __str__(self) -> str:
        return str(self.strerror)


def _writable_folder_in(path: Path) -> Path:
    """A new temporary folder beside `path` (its parents made), or MapWriteError saying which path cannot be
    written and why, instead of the temporary folder's errno text."""
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise MapWriteError(errno.ENOTDIR, f"cannot save the map to {path}: {existing} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MapWriteError(exc.errno, f"cannot save the map to {path}: the folder {path.parent} cannot be created "
                                       f"under {existing} ({exc.strerror or exc})") from exc
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    try:
        tmp.mkdir()
    except OSError as exc:
        raise MapWriteError(exc.errno, f"cannot save the map to {path}: the folder {path.parent} is not writable "
                                       f"({exc.strerror or exc})") from exc
    return tmp


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return _sha256_of(handle)


def _sha256_of(handle) -> str:
    """sha256 of an open binary file from its start."""
    digest = hashlib.sha256()
    handle.seek(0)
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
    local: LocalFeatureTable | None = None  # per-frame local features for re-ranking (optional)
    local_conf: dict | None = None  # LocalExtractor.config() of `local`
    uncertainty: UncertaintyModel | None = None  # BayesCap head and calibrators (optional)
    camera: MapCamera | None = None  # the recording camera (None: unknown; the query's is assumed)
    checksums: ChecksumCheck | None = None  # verification still running or done in the background (load)

    @classmethod
    def create(cls, name: str, descriptor: GlobalDescriptor, descriptors: np.ndarray, frames: FrameTable,
               frame_id: str = "map", search_params: dict | None = None, device: str = "cpu",
               local: LocalFeatureTable | None = None, local_conf: dict | None = None,
               camera: MapCamera | None = None, work_dir: str | Path | None = None) -> "VPRMap":
        """work_dir: where an on-disk (ivfpq-*) index writes its shards and inverted lists (default: a
        temporary folder, removed with the map object)."""
        if not isinstance(descriptors, np.memmap):  # a memory-mapped N x D stays on disk
            descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
        if len(descriptors) != len(frames):
            raise MapError(f"{len(descriptors)} descriptors for {len(frames)} frames")
        if (local is None) != (local_conf is None):
            raise MapError("local features need their extractor configuration (local_conf), and vice versa")
        if local is not None:
            try:
                local.validate(len(frames), local_conf["max_keypoints"], local_conf["dim"])
            except ValueError as exc:
                raise MapError(f"local features do not fit the map: {exc}") from exc
        index = DescriptorIndex(descriptor.dim, descriptor.conf["index"], search_params, device)
        vpr_map = cls(name, descriptor, descriptors.reshape(len(frames), descriptor.dim), frames, index, frame_id,
                      local, local_conf, camera=camera)
        if len(descriptors):
            index.train(descriptors)
            if index.ondisk:
                if work_dir is None:
                    work_dir = tempfile.mkdtemp(prefix="vpr_index_")
                    weakref.finalize(vpr_map, shutil.rmtree, work_dir, True)
                index.add_sharded(vpr_map.descriptors, work_dir)
            else:
                index.add(descriptors)
        index.refine_vectors = vpr_map.descriptors
        return vpr_map

    def __len__(self) -> int:
        return len(self.frames)

    def add(self, descriptors: np.ndarray, frames: FrameTable, local: LocalFeatureTable | None = None) -> None:
        """Append frames (online maps); their keys continue from len(self). A map that stores local
        features needs theirs too."""
        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32).reshape(len(frames), self.index.dim)
        if (self.local is None) != (local is None):
            raise MapError("this map " + ("stores local features: pass the new frames' too" if self.local is not None
                                          else "has no local features; add frames without them"))
        if local is not None:
            try:
                local.validate(len(frames), self.local_conf["max_keypoints"], self.local_conf["dim"])
            except ValueError as exc:
                raise MapError(f"local features do not fit the map: {exc}") from exc
        if not self.index.is_trained:
            self.index.train(descriptors)
        self.index.add(descriptors)
        self.descriptors = np.concatenate([self.descriptors, descriptors])
        self.index.refine_vectors = self.descriptors
        self.frames.extend(frames)
        if local is not None:
            self.local.extend(local)

    def check_intact(self) -> None:
        """Raise MapDamaged when a background checksum found a file of this map damaged (answers from it
        would be wrong)."""
        if self.checksums is not None:
            self.checksums.raise_if_damaged()

    @property
    def space(self) -> str:
        """The descriptor space the map lives in (its descriptor's fingerprint): maps in one space can be
        merged, appended to and searched together."""
        return self.descriptor.fingerprint()

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the map directory atomically; returns its absolute path (`..` resolved).

        With `overwrite`, only an existing vpr_ros map directory is replaced; anything else at the path
        (a plain file, a directory that is not a map) raises FileExistsError and is left untouched."""
        path = Path(os.path.normpath(Path(path).expanduser().absolute()))
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise FileExistsError(f"map directory {path} exists; pass overwrite to replace it")
            if path.is_symlink() or not path.is_dir():
                raise FileExistsError(f"{path} exists and is not a map directory; refusing to replace it")
            try:
                read_metadata(path)
            except MapError as exc:
                raise FileExistsError(f"{path} exists and is not a vpr_ros map ({exc}); refusing to replace "
                                      "it, choose another path") from exc
        tmp = _writable_folder_in(path)
        try:
            try:
                self._write_files(tmp)
            except OSError as exc:
                raise MapWriteError(exc.errno, f"cannot write the map to {path}: writing {Path(exc.filename or tmp).name} "
                                         f"failed: {exc.strerror or exc} (nothing at {path} was changed)") from exc
            if path.exists():
                old = path.parent / f".{path.name}.old-{os.getpid()}-{time.monotonic_ns()}"
                path.rename(old)
                try:
                    tmp.rename(path)
                except OSError:
                    old.rename(path)  # put the previous map back
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        LOGGER.info("saved map %s (%d frames) to %s", self.name, len(self), path)
        return path

    def _write_files(self, folder: Path) -> None:
        np.save(folder / "descriptors.npy", self.descriptors, allow_pickle=False)
        np.savez(folder / "frames.npz", **{c: getattr(self.frames, c) for c in FRAME_COLUMNS})
        sessions = [{**s.to_json(), "frames": int(np.count_nonzero(self.frames.session == i))}
                    for i, s in enumerate(self.frames.sessions)]
        (folder / "sources.json").write_text(json.dumps(self.frames.sources))
        state = self.descriptor.state_dict()
        np.savez(folder / "descriptor.npz", **{k: state[k].cpu().numpy() for k in FITTED_BUFFERS if k in state})
        files = list(FILES)
        ondisk = [p.name for p in self.index.write(folder / "index.faiss")][1:]
        files += ondisk
        if self.local is not None:
            for name, column in LOCAL_FILES.items():
                np.save(folder / name, np.ascontiguousarray(getattr(self.local, column)), allow_pickle=False)
            files += list(LOCAL_FILES)
            if self.local.depth is not None:
                np.save(folder / DEPTH_FILE, np.ascontiguousarray(self.local.depth, np.float32), allow_pickle=False)
                files.append(DEPTH_FILE)
        if self.uncertainty is not None:
            files += self.uncertainty.save(folder)
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name,
            "preset": self.descriptor.preset, "preset_conf": self.descriptor.conf,
            "fingerprint": self.descriptor.fingerprint(), "dim": self.descriptor.dim,
            "index_factory": self.index.factory, "search_params": self.index.search_params,
            "index_ondisk": bool(ondisk),
            "num_frames": len(self), "sessions": sessions, "frame_id": self.frame_id,
            "local_features": self.local_conf,
            "local_depth": self.local is not None and self.local.depth is not None,
            "camera": self.camera.to_json() if self.camera is not None else None,
            "uncertainty": self.uncertainty is not None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {name: {"bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
                      for name in files},
        }
        (folder / "map.json").write_text(json.dumps(meta, indent=2, default=list) + "\n")
        for name in (*files, "map.json"):  # on disk before the rename makes the map visible
            with (folder / name).open("rb") as handle:
                os.fsync(handle.fileno())

    @classmethod
    def load(cls, path: str | Path, preset: str | None = None, fingerprint: str | None = None,
             verify_checksums: bool | str = "auto", search_params: dict | None = None,
             device: str = "cpu", checkpoint: str | Path | None = None,
             with_uncertainty: bool = True, mmap: bool | str = "auto", recheck_s: float | None = None) -> "VPRMap":
        """Read and check a map directory; preset/fingerprint, when given, must match the map's. Raises
        MapError naming the file or field at fault.

        checkpoint: for a map of a published model, its weights file when it is no longer where the map
        records it (the fingerprint still checks that the weights are the ones the map was built with).
        with_uncertainty: False skips the map's uncertainty model (to retrain one that no longer loads).
        verify_checksums: True (before the map opens), "background" (sizes now, checksums on a thread while
        the map answers; a mismatch makes it refuse: MapDamaged), False, or "auto": "background" for maps
        over CHECKSUM_IN_BACKGROUND_BYTES, True for the rest.
        mmap: memory-map descriptors.npy instead of reading it (True, False, or "auto": over
        MMAP_DESCRIPTORS_BYTES). Local features and on-disk inverted lists are always memory-mapped.
        recheck_s: watch the files read from disk while the map serves (memory-mapped ones) for damage after
        the first check: every recheck_s seconds when > 0, and on `checksums.recheck_now()` (0: only then);
        None (the default) does not watch them.
        """
        path = Path(path)
        meta = read_metadata(path)
        if preset is not None and meta["preset"] != preset:
            raise MapError(f"map {path} was built with preset {meta['preset']!r}, not {preset!r}; "
                           "rebuild the map or run with its preset")
        if verify_checksums == "auto":
            total = sum(entry["bytes"] for entry in meta["files"].values())
            verify_checksums = "background" if total > CHECKSUM_IN_BACKGROUND_BYTES else True
        if verify_checksums not in (True, False, "background"):
            raise ValueError(f"verify_checksums must be True, False, 'background' or 'auto', got {verify_checksums!r}")
        files = _check_files(path, meta, verify_checksums is True)
        if mmap == "auto":
            mmap = meta["files"]["descriptors.npy"]["bytes"] > MMAP_DESCRIPTORS_BYTES
        descriptor = _build_descriptor(path, meta, checkpoint)
        descriptors, frames, local = _read_arrays(path, meta, descriptor, bool(mmap))
        if descriptor.fingerprint() != meta["fingerprint"]:
            raise MapError(f"map {path}: the descriptor rebuilt from its files has another fingerprint than "
                           "the map records (different weights: another checkpoint or shipped version, or a "
                           "modified map)")
        if fingerprint is not None and meta["fingerprint"] != fingerprint:
            raise MapError(f"map {path} has descriptor fingerprint {meta['fingerprint'][:12]}, "
                           f"expected {fingerprint[:12]}: it was built with another vocabulary or weights")
        if descriptors.shape != (meta["num_frames"], meta["dim"]) or descriptor.dim != meta["dim"]:
            raise MapError(f"map {path}: descriptors have shape {descriptors.shape}, expected "
                           f"({meta['num_frames']}, {meta['dim']})")
        index = _read_index(path, meta, search_params, device)
        uncertainty = None
        if meta.get("uncertainty") and with_uncertainty:
            try:
                uncertainty = UncertaintyModel.load(path, meta["dim"], meta["fingerprint"])
            except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
                raise MapError(f"map {path}: its uncertainty model cannot be used: {exc}") from exc
        camera = None
        if meta.get("camera") is not None:
            try:
                camera = MapCamera.from_json(meta["camera"])
            except ValueError as exc:
                raise MapError(f"map {path}: map.json's camera cannot be used: {exc}") from exc
        if "refine" in index.search_params:
            index.refine_vectors = descriptors
        lazy = (*LOCAL_FILES, DEPTH_FILE, IVFDATA_FILE) + (("descriptors.npy",) if mmap else ())
        checksums = None
        if verify_checksums == "background" or (recheck_s is not None and any(name in lazy for name in files)):
            checksums = ChecksumCheck(path, {name: meta["files"][name]["sha256"] for name in files},
                                      verify_first=verify_checksums == "background", recheck_s=recheck_s or 0.0,
                                      lazy=lazy if recheck_s is not None else ())
        return cls(meta["name"], descriptor, descriptors, frames, index, meta.get("frame_id", "map"), local,
                   meta.get("local_features") or None, uncertainty, camera=camera, checksums=checksums)


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
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise MapError(f"{meta_path} has format version {meta.get('format_version')}; this vpr_ros "
                       f"reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    _check_fields(meta, meta_path)
    return meta


# map.json field -> (accepted types, required); bool is excluded where an int is meant
_FIELDS = {
    "name": (str, True), "preset": (str, True), "preset_conf": (dict, True), "fingerprint": (str, True),
    "dim": (int, True), "index_factory": (str, True), "num_frames": (int, True), "files": (dict, True),
    "search_params": ((dict, type(None)), False), "frame_id": (str, False),
    "local_features": ((dict, type(None)), False), "uncertainty": (bool, False),
    "local_depth": (bool, False), "camera": ((dict, type(None)), False), "sessions": (list, False),
    "index_ondisk": (bool, False),
}
_LOCAL_FIELDS = {"max_keypoints": int, "dim": int, "extractor": str}


def _type_names(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {"str": "a string", "dict": "an object", "int": "an integer", "bool": "true or false",
             "NoneType": "null"}
    return " or ".join(names.get(t.__name__, t.__name__) for t in types)


def _check_fields(meta: dict, meta_path: Path) -> None:
    """Every field the loader reads is present and of the right type, before anything uses it."""
    missing = sorted(name for name, (_, required) in _FIELDS.items() if required and name not in meta)
    if missing:
        raise MapError(f"{meta_path} lacks {missing}")
    for name, (types, _) in _FIELDS.items():
        if name not in meta:
            continue
        value = meta[name]
        if not isinstance(value, types) or (types is int and isinstance(value, bool)):
            raise MapError(f"{meta_path}: field {name!r} must be {_type_names(types)}, got {json.dumps(value)[:60]}")
    if meta["dim"] <= 0 or meta["num_frames"] < 0:
        raise MapError(f"{meta_path}: dim must be > 0 and num_frames >= 0 (got {meta['dim']}, {meta['num_frames']})")
    for file, entry in meta["files"].items():
        if (not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int) or isinstance(entry["bytes"], bool)
                or not isinstance(entry.get("sha256"), str)):
            raise MapError(f"{meta_path}: files[{file!r}] must be an object with an integer 'bytes' and a string "
                           f"'sha256', got {json.dumps(entry)[:80]}")
    if meta["format_version"] >= 2 and not isinstance(meta.get("sessions"), list):
        raise MapError(f"{meta_path}: format version 2 needs a 'sessions' list")
    for entry in meta.get("sessions", []):
        try:
            Session.from_json(entry)
        except ValueError as exc:
            raise MapError(f"{meta_path}: {exc}") from exc
    local = meta.get("local_features")
    if local:
        for name, kind in _LOCAL_FIELDS.items():
            if not isinstance(local.get(name), kind) or isinstance(local.get(name), bool):
                raise MapError(f"{meta_path}: local_features.{name} must be {_type_names(kind)}, "
                               f"got {json.dumps(local.get(name))}")


def _check_files(path: Path, meta: dict, verify_checksums: bool) -> list[str]:
    """Every file the map needs is there with the size (and checksum) map.json records; returns their names."""
    names = list(FILES) + (list(LOCAL_FILES) if meta.get("local_features") else []) + (
        [DEPTH_FILE] if meta.get("local_features") and meta.get("local_depth") else []) + (
        [HEAD_FILE, META_FILE] if meta.get("uncertainty") else []) + ([IVFDATA_FILE] if meta.get("index_ondisk") else [])
    for name in names:
        file = path / name
        if not file.is_file():
            raise MapError(f"map {path} is missing {name}")
        if name not in meta["files"]:
            raise MapError(f"map {path}: map.json records no size and checksum for {name}")
        want = meta["files"][name]
        if file.stat().st_size != want["bytes"]:
            raise MapError(f"map file {file} has {file.stat().st_size} bytes, expected {want['bytes']} "
                           "(truncated or modified)")
        if verify_checksums and _sha256(file) != want["sha256"]:
            raise MapError(f"map file {file} does not match its checksum (corrupt or modified)")
    if not meta.get("index_ondisk") and (path / IVFDATA_FILE).exists():
        raise MapError(f"map {path} has an {IVFDATA_FILE} that map.json does not record")
    return names


def _build_descriptor(path: Path, meta: dict, checkpoint: str | Path | None) -> GlobalDescriptor:
    """The map's preset with its recorded configuration (and a moved checkpoint), not yet fitted."""
    conf = dict(meta["preset_conf"])
    if checkpoint:
        if "checkpoint" not in conf:
            raise MapError(f"map {path} uses preset {meta['preset']!r}, which takes no checkpoint "
                           f"(given {checkpoint})")
        conf["checkpoint"] = str(checkpoint)
    try:
        return GlobalDescriptor(meta["preset"], **conf)
    except (OSError, ValueError, TypeError, KeyError) as exc:  # a moved or unfitting checkpoint, a bad preset_conf
        raise MapError(f"map {path}: its {meta['preset']} descriptor cannot be built: {exc}"
                       + ("" if checkpoint or "checkpoint" not in conf else
                          "; pass the weights file as checkpoint (--checkpoint)")) from exc


def _array_file(file: Path, mmap: bool = False):
    """np.load of one map file (plain arrays only, never pickles), or MapError naming the file and what is wrong."""
    try:
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        text = str(exc)
        if "pickle" in text:  # numpy's own text suggests allow_pickle=True: a map file never needs it
            text = "it is not a NumPy array file (damaged, or not written by vpr_ros)"
        raise MapError(f"map file {file} cannot be read: {text}; rebuild the map or restore the file") from exc


def _read_arrays(path: Path, meta: dict, descriptor: GlobalDescriptor, mmap: bool = False):
    """The fitted buffers into `descriptor`; returns (descriptors N x D, frames, local features or None)."""
    local_conf = meta.get("local_features")
    try:
        with _array_file(path / "descriptor.npz") as buffers:
            state = descriptor.state_dict()
            state.update({k: torch.from_numpy(buffers[k]) for k in buffers.files})
        descriptor.load_fitted(state)
        with _array_file(path / "frames.npz") as columns:
            version_2 = meta["format_version"] >= 2
            frames = FrameTable(**{c: columns[c] for c in FRAME_COLUMNS if version_2 or c != "session"},
                                sources=json.loads((path / "sources.json").read_text()),
                                sessions=([Session.from_json(s) for s in meta["sessions"]] if version_2
                                          else [Session(meta["name"])]))
        descriptors = _array_file(path / "descriptors.npy", mmap)
        local = None
        if local_conf:  # memory-mapped: a large map's local features stay on disk until matched
            local = LocalFeatureTable(**{c: _array_file(path / name, mmap=True) for name, c in LOCAL_FILES.items()})
            if meta.get("local_depth"):
                local.depth = _array_file(path / DEPTH_FILE, mmap=True)
            local.validate(meta["num_frames"], local_conf["max_keypoints"], local_conf["dim"])
    except MapError:  # a file _array_file named
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise MapError(f"map {path} cannot be read: {exc}") from exc
    try:
        frames.validate()
    except ValueError as exc:
        raise MapError(f"map {path}: frames.npz: {exc}") from exc
    return descriptors, frames, local


def _read_index(path: Path, meta: dict, search_params: dict | None, device: str) -> DescriptorIndex:
    try:
        index = DescriptorIndex.read(path / "index.faiss", meta["dim"], meta["index_factory"],
                                     search_params if search_params is not None else meta["search_params"], device)
    except (RuntimeError, ValueError, TypeError) as exc:  # faiss raises RuntimeError on a file it cannot parse
        raise MapError(f"map {path}: index.faiss cannot be read: {faiss_error_text(exc)}") from exc
    if len(index) != meta["num_frames"]:
        raise MapError(f"map {path}: index holds {len(index)} vectors for {meta['num_frames']} frames")
    return index
