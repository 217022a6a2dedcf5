"""Build a map from frames (image folder or bag): keyframe selection, descriptor fitting, index."""

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
from vpr_ros.core.build.distributed import describe_on_ray
from vpr_ros.core.build.shards import FIT_SAMPLE, SHARD_FRAMES, ShardStore, ShardWorker, fit_sample, sources_digest
from vpr_ros.core.inputs.depth import DepthError, check_depth, keypoint_depth
from vpr_ros.core.map.camera import MapCamera
from vpr_ros.core.map.frames import FrameTable, Session
from vpr_ros.core.map.store import VPRMap
from vpr_ros.core.matching.local_features import LocalExtractor, LocalFeatureTable
from vpr_ros.core.retrieval.recognizer import describe_map


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
