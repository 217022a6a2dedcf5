"""Build a map from frames (image folder or bag): keyframe selection, descriptor fitting, index."""

import csv
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
from vpr_ros.core.inputs.images import list_images, read_image
from vpr_ros.core.maps.frames import POSE_FIELDS, FrameTable, Session
from vpr_ros.core.maps.map_camera import MapCamera
from vpr_ros.core.maps.map_store import VPRMap
from vpr_ros.core.maps.recognizer import describe_map
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
              space: VPRMap | None = None, **preset_overrides) -> VPRMap:
    """Select keyframes, fit the preset on them, describe them and index them; with `local_features`
    (an extractor name), also store each keyframe's local features for re-ranking. `input_size`: (width,
    height) the network sees, or "auto": the first image's aspect ratio (presets.camera_input_size), so
    that a wide or tall camera's frames are not stretched. `camera`: the recording camera, kept with the
    map. `depth(stamp_ns)`: the aligned depth image (metres, NaN unknown) of a frame, or None; with local
    features, each keypoint's depth is stored (metric loop closures). `session`: the recording's id and robot
    (default: the map's name, robot unknown). `space`: a map whose descriptor (vocabulary, PCA, input size) and
    local feature settings are used as they are, so that this map can be merged with it (sessions.py)."""
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
    descriptors = describe_map(descriptor, candidates.sources, load, batch_size, progress, fit=space is None)
    rows = policy.appearance_keyframes(descriptors)
    LOGGER.info("map %s: %d frames -> %d motion candidates -> %d keyframes", name, len(frames),
                len(candidates), len(rows))
    keyframes = candidates.select(rows)
    keyframes.name_session(session or Session(name))
    local, local_conf = None, None
    if local_features is not None:
        # local features at the default preset's resolution and the camera's aspect (the joint graph shares it)
        extractor = (LocalExtractor.for_config(space.local_conf) if space is not None else
                     LocalExtractor(local_features, max_keypoints, input_size=camera_input_size("default", width, height)))
        extracted = []
        for batch in tqdm([keyframes.sources[i:i + batch_size] for i in range(0, len(keyframes), batch_size)],
                          desc="local features", unit="batch", disable=not progress):
            extracted += extractor.extract([load(source) for source in batch])
        if depth is not None:
            _attach_depth(extracted, keyframes.stamp_ns, depth)
        local, local_conf = LocalFeatureTable.build(extracted, max_keypoints, extractor.dim,
                                                    depth is not None), extractor.config()
    search_params = space.index.search_params if space is not None else None
    return VPRMap.create(name, descriptor, descriptors[rows], keyframes, frame_id, search_params, local=local,
                         local_conf=local_conf, camera=camera)


def _attach_depth(features: list, stamps: np.ndarray, depth: Callable[[int], np.ndarray | None]) -> None:
    """Each keyframe's keypoint depths from its depth image; frames without one (or with a broken one)
    keep none, said once with a count."""
    missing: Counter = Counter()
    for f, stamp in zip(features, stamps):
        image = depth(int(stamp))
        if image is None:
            missing["no depth image near its stamp"] += 1
            continue
        try:
            check_depth(image, f.image_size)
        except DepthError as exc:
            missing[str(exc)] += 1
            continue
        f.depth = keypoint_depth(image, f.keypoints)
    with_depth = [f for f in features if f.depth is not None]
    share = float(np.mean([np.isfinite(f.depth).mean() for f in with_depth])) if with_depth else 0.0
    LOGGER.info("keypoint depths: %d of %d keyframes, %.0f%% of their keypoints have a reading", len(with_depth),
                len(features), 100 * share)
    for reason, count in missing.items():
        LOGGER.warning("%d keyframes have no keypoint depths: %s", count, reason)


def frames_from_folder(folder: str | Path, poses_csv: str | Path | None = None) -> FrameTable:
    """The images of a folder (sorted by name) and, optionally, their stamps, poses and GPS from a CSV.

    CSV columns: `image` (file name in the folder) and any of `stamp_ns` or `timestamp` (seconds),
    `x y z qx qy qz qw` (pose; `qx..qw` default to identity when only x y z are given), and
    `latitude longitude altitude`. Images missing from the CSV get no pose; without stamps every stamp is 0
    (and keyframes by time are meaningless).
    """
    images = list_images(Path(folder))
    if not images:
        raise ValueError(f"no images in {folder}")
    n = len(images)
    stamps, pose, gps = np.zeros(n, np.int64), np.full((n, 7), np.nan), np.full((n, 3), np.nan)
    if poses_csv is not None:
        row_of = {p.name: i for i, p in enumerate(images)}
        with open(poses_csv, newline="") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or ())
            if "image" not in columns:
                raise ValueError(f"{poses_csv} needs an 'image' column; found {sorted(columns)}")
            for line, row in enumerate(reader, start=2):
                i = row_of.get(row["image"])
                if i is None:
                    raise ValueError(f"{poses_csv}:{line}: image {row['image']!r} is not in {folder}")
                try:
                    if "stamp_ns" in columns:
                        stamps[i] = int(row["stamp_ns"])
                    elif "timestamp" in columns:
                        stamps[i] = round(float(row["timestamp"]) * 1e9)
                    if {"x", "y", "z"} <= columns:
                        values = [float(row[f]) if row.get(f) not in (None, "") else default
                                  for f, default in zip(POSE_FIELDS, (np.nan,) * 3 + (0.0, 0.0, 0.0, 1.0))]
                        pose[i] = values
                    if {"latitude", "longitude"} <= columns:
                        gps[i] = [float(row["latitude"] or "nan"), float(row["longitude"] or "nan"),
                                  float(row.get("altitude") or 0.0)]
                except ValueError as exc:
                    raise ValueError(f"{poses_csv}:{line}: {exc}") from exc
        norms = np.linalg.norm(pose[:, 3:], axis=1)
        if (np.isfinite(norms) & (np.abs(norms - 1.0) > 1e-3)).any():
            raise ValueError(f"{poses_csv}: quaternions (qx qy qz qw) must have unit norm")
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
