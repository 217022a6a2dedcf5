"""Build a map from frames (image folder or bag): keyframe selection, descriptor fitting, index."""

import csv
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vpr_ros.core import LOGGER
from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.descriptors.presets import camera_input_size
from vpr_ros.core.inputs.depth import DepthError, check_depth, keypoint_depth
from vpr_ros.core.inputs.images import IMAGE_SUFFIXES, read_image
from vpr_ros.core.maps.frames import POSE_FIELDS, FrameTable, Session
from vpr_ros.core.maps.map_camera import MapCamera
from vpr_ros.core.maps.map_store import VPRMap
from vpr_ros.core.maps.recognizer import describe_map
from vpr_ros.core.maps.shards import FIT_SAMPLE, SHARD_FRAMES, ShardStore, ShardWorker, fit_sample, sources_digest
from vpr_ros.core.matching.local_features import LocalExtractor, LocalFeatureTable


@dataclass
class KeyframePolicy:
    """Which frames become map frames. A frame is a motion candidate when it moved at least
    `min_distance_m` (needs poses) or `min_interval_s` passed since the last keyframe (either
    threshold at 0 is off; both off keeps every frame). A candidate is then dropped when its
    descriptor is more similar than `max_similarity` to the last keyframe's (1.0 is off)."""

    min_distance_m: float = 0.0
    min_interval_s: float = 0.0
    max_similarity: float = 1.0

    def __post_init__(self):
        if self.min_distance_m < 0 or self.min_interval_s < 0:
            raise ValueError(f"keyframe thresholds must be >= 0: {self}")
        if not -1.0 <= self.max_similarity <= 1.0:
            raise ValueError(f"max_similarity must lie in [-1, 1], got {self.max_similarity}")

    def motion_candidates(self, frames: FrameTable) -> np.ndarray:
        """Row indices that pass the distance/time gate, in order."""
        if self.min_distance_m == 0 and self.min_interval_s == 0:
            return np.arange(len(frames))
        if self.min_distance_m > 0 and not frames.has_pose.any() and self.min_interval_s == 0:
            raise ValueError("keyframes by distance need poses, and these frames have none")
        keep, last = [0], 0
        for i in range(1, len(frames)):
            moved = (self.min_distance_m > 0 and frames.has_pose[i] and frames.has_pose[last]
                     and np.linalg.norm(frames.pose[i, :3] - frames.pose[last, :3]) >= self.min_distance_m)
            waited = (self.min_interval_s > 0
                      and frames.stamp_ns[i] - frames.stamp_ns[last] >= self.min_interval_s * 1e9)
            if moved or waited:
                keep.append(i)
                last = i
        return np.asarray(keep)

    def appearance_keyframes(self, descriptors: np.ndarray) -> np.ndarray:
        """Rows whose descriptor differs enough from the previous keyframe's."""
        if self.max_similarity >= 1.0 or len(descriptors) == 0:
            return np.arange(len(descriptors))
        keep = [0]
        for i in range(1, len(descriptors)):
            if float(descriptors[i] @ descriptors[keep[-1]]) <= self.max_similarity:
                keep.append(i)
        return np.asarray(keep)


def build_map(name: str, frames: FrameTable, load: Callable[[str], np.ndarray], preset: str = "default",
              policy: KeyframePolicy | None = None, frame_id: str = "map", batch_size: int = 8,
              progress: bool = False, local_features: str | None = None, max_keypoints: int = 512,
              input_size: tuple[int, int] | str = "auto", camera: MapCamera | None = None,
              depth: Callable[[int], np.ndarray | None] | None = None, session: Session | None = None,
              space: VPRMap | None = None, work_dir: str | Path | None = None, ray: str | None = None,
              ray_workers: int | None = None, shard_frames: int = SHARD_FRAMES, fit_sample_size: int = FIT_SAMPLE,
              **preset_overrides) -> VPRMap:
    """Select keyframes, fit the preset on them, describe them and index them; with `local_features`
    (an extractor name), also store each keyframe's local features for re-ranking. `input_size`: (width,
    height) the network sees, or "auto": the first image's aspect ratio (presets.camera_input_size), so
    that a wide or tall camera's frames are not stretched. `camera`: the recording camera, kept with the
    map. `depth(stamp_ns)`: the aligned depth image (metres, NaN unknown) of a frame, or None; with local
    features, each keypoint's depth is stored (metric loop closures). `session`: the recording's id and robot
    (default: the map's name, robot unknown). `space`: a map whose descriptor (vocabulary, PCA, input size) and
    local feature settings are used as they are, so that this map can be merged with it (sessions.py).

    The vocabulary and PCA are fitted on `fit_sample_size` frames spread over the map (all of a smaller map),
    then every frame is described in shards of `shard_frames` (shards.py): here, or with `ray` ("auto": a
    local Ray runtime; or a cluster's address) on `ray_workers` Ray workers. `work_dir`: the shards' folder
    (on storage every worker shares), kept after the build for the caller to remove; an interrupted build
    given the same folder resumes from its finished shards. Without one, a temporary folder is used."""
    if space is not None:  # its local features (or none), as a map in its space must store
        local_features = space.local_conf["extractor"] if space.local_conf else None
        max_keypoints = space.local_conf["max_keypoints"] if space.local_conf else max_keypoints
    if depth is not None and (local_features is None or camera is None):
        raise ValueError("keypoint depths need local features and the camera's intrinsics (its CameraInfo)")
    policy = policy or KeyframePolicy()
    if len(frames) == 0:
        raise ValueError("no frames to build a map from")
    candidates = frames.select(policy.motion_candidates(frames))
    if input_size == "auto" or local_features is not None:  # the camera's shape
        height, width = load(candidates.sources[0]).shape[:2]
    if space is not None:
        descriptor = space.descriptor
    else:
        if input_size == "auto":
            input_size = camera_input_size(preset, width, height)
        descriptor = GlobalDescriptor(preset, input_size=tuple(input_size), **preset_overrides)
    extractor = None
    if local_features is not None:
        # local features at the default preset's resolution and the camera's aspect (the joint graph shares it)
        extractor = (LocalExtractor.for_config(space.local_conf) if space is not None else
                     LocalExtractor(local_features, max_keypoints, input_size=camera_input_size("default", width, height)))
    plan = json.loads(json.dumps({
        "frames": len(candidates), "sources_sha256": sources_digest(candidates.sources), "preset": descriptor.preset,
        "conf": descriptor.conf, "space": space.space if space is not None else None,
        "local": extractor.config() if extractor is not None else None, "shard_frames": shard_frames,
        "fit_sample": fit_sample_size}, default=list))
    own_work_dir = work_dir is None
    store = ShardStore(work_dir or tempfile.mkdtemp(prefix="vpr_build_"), plan,
                       [_portable(source) for source in candidates.sources])
    try:
        descriptors = _describe(store, descriptor, space is not None, extractor, candidates.sources, load,
                                batch_size, progress, ray, ray_workers)
        rows = policy.appearance_keyframes(descriptors)
        LOGGER.info("map %s: %d frames -> %d motion candidates -> %d keyframes", name, len(frames),
                    len(candidates), len(rows))
        keyframes = candidates.select(rows)
        local = local_conf = None
        if extractor is not None:
            # with a work folder (vpr_build_map's), gathered into memory-mapped files there, shard by shard
            on_disk = None if own_work_dir else store.folder / "local"
            local, local_conf = _gather_local(store, rows, extractor, on_disk), extractor.config()
            if depth is not None:
                _attach_depth(local, keyframes.stamp_ns, depth, on_disk)
    finally:
        if own_work_dir:
            shutil.rmtree(store.folder, ignore_errors=True)
    if len(keyframes.sessions) == 1:  # one recording; frames from many bags keep a session each
        keyframes.name_session(session or Session(name))
    search_params = space.index.search_params if space is not None else None
    return VPRMap.create(name, descriptor, descriptors[rows], keyframes, frame_id, search_params, local=local,
                         local_conf=local_conf, camera=camera, work_dir=work_dir and Path(work_dir) / "index")


def _describe(store: ShardStore, descriptor: GlobalDescriptor, fitted: bool, extractor: LocalExtractor | None,
              sources: list[str], load: Callable[[str], np.ndarray], batch_size: int, progress: bool,
              ray: str | None, ray_workers: int | None) -> np.ndarray:
    """Fit `descriptor` on a sample of the frames (unless `fitted`, or fitted in the work folder by an
    interrupted build), describe every frame shard by shard (on Ray with `ray`, else here) and gather
    the shards' global descriptors (N x D; their local features stay in the shards: _gather_local)."""
    known = None  # descriptors already computed here while fitting (a map no larger than the sample)
    resumed = store.fitted_descriptor() if not fitted else None
    if fitted:
        store.save_fitted(descriptor)
    elif resumed is not None:
        descriptor.load_fitted(resumed.state_dict())
        LOGGER.info("resuming in %s: the fitted descriptor and %d of %d shards are there", store.folder,
                    len(store.shards) - len(store.pending()), len(store.shards))
    else:
        sample = fit_sample(len(sources), store.plan["fit_sample"])
        described = describe_map(descriptor, [sources[i] for i in sample], load, batch_size, progress)
        store.save_fitted(descriptor)
        known = described if len(sample) == len(sources) else None
    pending = store.pending()
    if pending and ray:
        from vpr_ros.core.maps.distributed import describe_on_ray

        describe_on_ray(store.folder, pending, ray, ray_workers, batch_size, progress)
    elif pending:
        worker = ShardWorker(store.folder, batch_size, load=load, descriptor=descriptor)
        for start, stop in tqdm(pending, desc="describe", unit="shard", disable=not progress):
            worker.describe(start, stop, None if known is None else known[start:stop])
    return np.concatenate([store.read(start, stop, ["descriptors"])["descriptors"] for start, stop in store.shards])


def _gather_local(store: ShardStore, rows: np.ndarray, extractor: LocalExtractor,
                  folder: Path | None) -> LocalFeatureTable:
    """The local features of the described frames `rows` (the keyframes), read shard by shard: into memory,
    or, with `folder`, into memory-mapped .npy files there (a city's outgrow memory: 64 GB at a million
    frames with 512 keypoints), which the map's save then copies without reading them into memory."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    empty = LocalFeatureTable.empty(extractor.max_keypoints, extractor.dim)  # the columns' shapes and types
    table = LocalFeatureTable(**{c: _local_column(folder, c, (len(rows), *getattr(empty, c).shape[1:]),
                                                  getattr(empty, c).dtype) for c in LocalFeatureTable.COLUMNS})
    keys = [f"local_{c}" for c in LocalFeatureTable.COLUMNS]
    order = np.argsort(rows, kind="stable")  # the positions in `rows` of each shard's frames, by bisection
    ordered = rows[order]
    for start, stop in store.shards:
        where = order[np.searchsorted(ordered, start):np.searchsorted(ordered, stop)]
        if len(where) == 0:
            continue
        shard = store.read(start, stop, keys)
        for column in LocalFeatureTable.COLUMNS:
            getattr(table, column)[where] = shard[f"local_{column}"][rows[where] - start]
    return table


def _local_column(folder: Path | None, name: str, shape: tuple, dtype, fill=0) -> np.ndarray:
    """An array for one column of a table of local features: in memory, or a memory-mapped .npy in `folder`."""
    if folder is None:
        return np.full(shape, fill, dtype)
    array = np.lib.format.open_memmap(folder / f"local_{name}.npy", mode="w+", dtype=dtype, shape=shape)
    if fill != 0:  # a new file reads as zeros
        array[:] = fill
    return array


def _portable(source: str) -> str:
    """A source as any worker that mounts the same storage can open it: files and bags by absolute path."""
    path = Path(source)
    if path.is_file():
        return str(path.absolute())
    head, at, stamp = source.rpartition("@")
    split = head.rfind(":/")
    if at and split > 0 and Path(head[:split]).exists():
        return f"{Path(head[:split]).absolute()}{head[split:]}@{stamp}"
    return source


def _attach_depth(table: LocalFeatureTable, stamps: np.ndarray, depth: Callable[[int], np.ndarray | None],
                  folder: Path | None = None) -> None:
    """Each keyframe's keypoint depths (table.depth, NaN unknown; memory-mapped in `folder` when given)
    from its depth image; frames without one (or with a broken one) keep none, said once with a count."""
    missing: Counter = Counter()
    table.depth = _local_column(folder, "depth", (len(table), table.keypoints.shape[1]), np.float32, np.nan)
    shares = []
    for row, stamp in enumerate(stamps):
        image = depth(int(stamp))
        if image is None:
            missing["no depth image near its stamp"] += 1
            continue
        f = table[row]
        try:
            check_depth(image, f.image_size)
        except DepthError as exc:
            missing[str(exc)] += 1
            continue
        values = keypoint_depth(image, f.keypoints)
        table.depth[row, :len(values)] = values
        shares.append(float(np.isfinite(values).mean()) if len(values) else 0.0)
    LOGGER.info("keypoint depths: %d of %d keyframes, %.0f%% of their keypoints have a reading", len(shares),
                len(table), 100 * (float(np.mean(shares)) if shares else 0.0))
    for reason, count in missing.items():
        LOGGER.warning("%d keyframes have no keypoint depths: %s", count, reason)


# CSV column spellings: position in a metric frame (x y z, or UTM easting northing) and GPS
_EASTING, _NORTHING = ("easting", "utm_easting", "utm_e"), ("northing", "utm_northing", "utm_n")
_LATITUDE, _LONGITUDE = ("latitude", "lat"), ("longitude", "lon", "lng")
_ALTITUDE = ("altitude", "alt", "elevation")


def _column(columns: set[str], names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in columns), None)


def frames_from_folder(folder: str | Path, poses_csv: str | Path | None = None) -> FrameTable:
    """The images of a folder and its subfolders (sorted by path) and, optionally, their stamps, poses
    and GPS from a CSV.

    CSV columns: `image` (path relative to the folder, or the file name when it is unique) and any of
    `stamp_ns` or `timestamp` (seconds); a position: `x y z qx qy qz qw` (`qx..qw` default to identity when
    only x y z are given) or UTM `easting northing` (also utm_easting/utm_northing; z from `altitude`, else
    0; one zone per map: the frame is the caller's, e.g. --frame-id utm_32N); and GPS: `latitude longitude`
    (also lat/lon/lng) with an optional `altitude`. Images missing from the CSV get no pose; without stamps
    every stamp is 0 (and keyframes by time are meaningless).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    images = sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                    key=lambda p: p.relative_to(folder).as_posix())
    if not images:
        raise ValueError(f"no images in {folder}")
    n = len(images)
    stamps, pose, gps = np.zeros(n, np.int64), np.full((n, 7), np.nan), np.full((n, 3), np.nan)
    if poses_csv is not None:
        row_of = {p.relative_to(folder).as_posix(): i for i, p in enumerate(images)}
        names = Counter(p.name for p in images)
        row_of.update({p.name: i for i, p in enumerate(images) if names[p.name] == 1})
        with open(poses_csv, newline="") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or ())
            if "image" not in columns:
                raise ValueError(f"{poses_csv} needs an 'image' column; found {sorted(columns)}")
            east, north = _column(columns, _EASTING), _column(columns, _NORTHING)
            lat, lon, alt = _column(columns, _LATITUDE), _column(columns, _LONGITUDE), _column(columns, _ALTITUDE)
            if {"x", "y", "z"} <= columns and east:
                raise ValueError(f"{poses_csv}: give positions as x y z or as UTM easting northing, not both")
            for line, row in enumerate(reader, start=2):
                i = row_of.get(row["image"])
                if i is None:
                    raise ValueError(f"{poses_csv}:{line}: image {row['image']!r} is not in {folder}"
                                     + (" (its name is not unique there: give its path in the folder)"
                                        if names[Path(row["image"]).name] > 1 else ""))
                try:
                    if "stamp_ns" in columns:
                        stamps[i] = int(row["stamp_ns"])
                    elif "timestamp" in columns:
                        stamps[i] = round(float(row["timestamp"]) * 1e9)
                    if {"x", "y", "z"} <= columns:
                        values = [float(row[f]) if row.get(f) not in (None, "") else default
                                  for f, default in zip(POSE_FIELDS, (np.nan,) * 3 + (0.0, 0.0, 0.0, 1.0))]
                        pose[i] = values
                    elif east and north:
                        pose[i] = [float(row[east] or "nan"), float(row[north] or "nan"),
                                   float((row.get(alt) if alt else "") or 0.0), 0.0, 0.0, 0.0, 1.0]
                    if lat and lon:
                        gps[i] = [float(row[lat] or "nan"), float(row[lon] or "nan"), float((row.get(alt) if alt else "") or 0.0)]
                except ValueError as exc:
                    raise ValueError(f"{poses_csv}:{line}: {exc}") from exc
        norms = np.linalg.norm(pose[:, 3:], axis=1)
        if (np.isfinite(norms) & (np.abs(norms - 1.0) > 1e-3)).any():
            raise ValueError(f"{poses_csv}: quaternions (qx qy qz qw) must have unit norm")
        usable = np.isfinite(gps[:, :2]).all(axis=1)
        if (usable & ((np.abs(gps[:, 0]) > 90) | (np.abs(gps[:, 1]) > 180))).any():
            raise ValueError(f"{poses_csv}: latitudes must lie in [-90, 90] and longitudes in [-180, 180] "
                             "(UTM coordinates go in easting/northing columns)")
    return FrameTable.build(stamps, [str(p) for p in images], pose=pose, gps=gps)


def load_image_file(source: str) -> np.ndarray:
    """`load` for frames_from_folder sources."""
    return read_image(Path(source))


class SourceLoader:
    """`load(source)` for any map source: an image file path, or a bag reference `bag:topic@log_ns`.

    Used to re-read a map's images after it was built (e.g. to train its uncertainty model); raises
    FileNotFoundError when the file or bag is no longer there.
    """

    def __init__(self):
        self._bags = {}

    def __call__(self, source: str) -> np.ndarray:
        path = Path(source)
        if path.is_file():
            return read_image(path)
        head, at, stamp = source.rpartition("@")
        split = head.rfind(":/")
        if at and stamp.isdigit() and split > 0 and Path(head[:split]).exists():
            from vpr_ros.core.maps.bag_source import BagFrames

            key = (head[:split], head[split + 1:])
            if key not in self._bags:
                self._bags[key] = BagFrames(Path(key[0]), key[1], FrameTable()).loader()
            return self._bags[key](source)
        raise FileNotFoundError(f"map image {source} is not available (file or bag moved or deleted)")
