"""slam: the map a run builds as it goes.

Without a starting map, the first `bootstrap_frames` keyframes are kept (with their depth) to fit the
preset's vocabulary, then the online map starts from them. Every processed keyframe then joins it with
its descriptor, pose and local features (their keypoints' depth too). Queries ignore the map frames of
the last `exclude_recent_s` seconds and `exclude_recent_frames` keyframes of this session: they look
like the query because they were just seen.
"""

import numpy as np

from vpr_ros.core import LOGGER
from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.map.frames import FrameTable, Session
from vpr_ros.core.map.store import VPRMap
from vpr_ros.core.matching.local_features import LocalExtractor, LocalFeatures, LocalFeatureTable
from vpr_ros.core.pipeline.metric_step import with_depth
from vpr_ros.core.retrieval.recognizer import describe_map


class OnlineMap:
    """The slam run's keyframes: collected before the map exists, then added to it."""

    def __init__(self, config: LocalizerConfig, session: Session):
        self.config, self.session = config, session
        self._bootstrap: list[tuple] = []  # (rgb, stamp_ns, pose, (depth, camera_K, depth_K) or None)

    def collect(self, rgb: np.ndarray, stamp_ns: int, pose, depth) -> int:
        """Keep a keyframe for the vocabulary; returns how many are kept."""
        self._bootstrap.append((rgb, stamp_ns, pose, depth))
        return len(self._bootstrap)

    @property
    def ready(self) -> bool:
        return len(self._bootstrap) >= self.config.bootstrap_frames

    def start(self, frame_id: str, matcher_features: str | None) -> VPRMap:
        """The online map from the collected keyframes: the preset fitted on them, and the local features
        the matcher needs (`matcher_features`: its extractor's name; None without re-ranking)."""
        config, frames = self.config, self._bootstrap
        overrides = {"checkpoint": config.checkpoint} if config.checkpoint else {}
        descriptor = GlobalDescriptor(config.preset, **overrides).to(config.device)
        descriptors = describe_map(descriptor, list(range(len(frames))), lambda i: frames[i][0])
        table = FrameTable.build([f[1] for f in frames], [f"online:{f[1]}" for f in frames],
                                 pose=np.stack([_pose_or_nan(f[2]) for f in frames]), session=self.session)
        local, local_conf = None, None
        if matcher_features is not None:  # the online map stores what the matcher needs
            extractor = LocalExtractor(matcher_features, config.max_keypoints, device=config.device)
            extracted = extractor.extract([f[0] for f in frames])
            for features, frame in zip(extracted, frames):
                if frame[3] is not None:
                    with_depth(features, *frame[3])
            local = LocalFeatureTable.build(extracted, config.max_keypoints, extractor.dim)
            local_conf = extractor.config()
        vpr_map = VPRMap.create("online", descriptor, descriptors, table, frame_id=frame_id, local=local,
                                local_conf=local_conf)
        self._bootstrap = []
        LOGGER.info("slam: online map started from %d keyframes", len(vpr_map))
        return vpr_map

    def add(self, vpr_map: VPRMap, descriptor: np.ndarray, stamp_ns: int, pose,
            features: LocalFeatures | None) -> int:
        """A processed keyframe joins the map; returns its key."""
        key = len(vpr_map)
        local = None
        if vpr_map.local is not None:
            local = LocalFeatureTable.build([features], vpr_map.local_conf["max_keypoints"], vpr_map.local_conf["dim"],
                                            vpr_map.local.depth is not None)
        row = FrameTable.build([stamp_ns], [f"online:{stamp_ns}"], pose=_pose_or_nan(pose)[None], session=self.session)
        vpr_map.add(descriptor, row, local)
        return key

    def excluded_suffix(self, vpr_map: VPRMap, stamp_ns: int) -> int:
        """How many of the newest map frames a query must not match: recent ones of this session only (its
        frames are the map's last; an earlier session's frames are never excluded)."""
        if len(vpr_map) == 0:
            return 0
        stamps = vpr_map.frames.stamp_ns[vpr_map.frames.rows_of(self.session.id)]
        by_time = int(np.count_nonzero(stamps > stamp_ns - int(self.config.exclude_recent_s * 1e9)))
        return min(len(stamps), max(by_time, self.config.exclude_recent_frames))


def _pose_or_nan(pose) -> np.ndarray:
    return np.full(7, np.nan) if pose is None else np.asarray(pose, np.float64).reshape(7)
