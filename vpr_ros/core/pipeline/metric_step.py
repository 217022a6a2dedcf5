"""The metric step: an accepted, verified loop closure gets a metric relative pose (matching/metric.py)
when the map frame's keypoints have depth or the frame came with an aligned depth image, and camera
intrinsics are known; otherwise the result's `scale_note` says why its translation stays a direction.

A frame's depth image is resolved once, when the frame first needs it (FrameDepth), so that a depth image
on its own topic has the frame's processing time to arrive, and checked against the image it serves: an
unusable one is reported in the result (`depth_rejected`), never raised. A fault of the metric step costs
the metric pose, never the frame.
"""

import time
from collections.abc import Callable

import numpy as np

from vpr_ros.core import LOGGER
from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.inputs.depth import DepthError, check_depth, keypoint_depth
from vpr_ros.core.matching.local_features import LocalFeatures, LocalFeatureTable
from vpr_ros.core.matching.metric import MetricEstimator, MetricSettings, agrees_with_two_view
from vpr_ros.core.pipeline.results import FrameResult

NO_DEPTH = "no depth: the map frame's keypoints have none and no depth image came with the frame"

DepthSource = Callable[[], tuple[np.ndarray | None, np.ndarray | None, str]]  # (depth, its own K, why none)


class FrameDepth:
    """A frame's depth image, resolved once, when first asked for, and checked against the image it serves
    (inputs/depth.check_depth): an unusable one is reported in the result (`depth_rejected`), never raised."""

    def __init__(self, source, depth_K, note: str, image, camera_K, result: FrameResult):
        self._source, self._depth_K, self._note = source, depth_K, note
        self._image, self._camera_K, self._result = image, camera_K, result
        self._resolved: tuple | None = None

    def get(self) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        """(depth in metres or None, its own K or None, why there is none)."""
        if self._resolved is None:
            depth, depth_K, note = (self._source() if callable(self._source)
                                    else (self._source, self._depth_K, self._note))
            image, result = self._image, self._result
            if depth is not None and hasattr(image, "shape") and len(image.shape) >= 2:
                try:
                    check_depth(depth, (image.shape[1], image.shape[0]), self._camera_K, depth_K)
                except DepthError as exc:
                    result.depth_rejected, result.scale_note = exc.reason, f"depth image rejected: {exc}"
                    depth, depth_K, note = None, None, result.scale_note
            elif depth is not None:
                depth = None
            self._resolved = (depth, depth_K, note)
        return self._resolved


def with_depth(features: LocalFeatures | None, depth: np.ndarray | None, camera_K, depth_K) -> None:
    """Give `features` their keypoints' depth from the frame's depth image, once (no-op without either)."""
    if features is not None and depth is not None and features.depth is None:
        features.depth = keypoint_depth(depth, features.keypoints, camera_K, depth_K)


class MetricStep:
    """The loop closure's metric pose from the depth of its matches, or why there is none."""

    def __init__(self, config: LocalizerConfig):
        self.estimator = MetricEstimator(MetricSettings(config.metric_pixel_sigma, config.depth_sigma_m,
                                                        config.depth_sigma_per_m2,
                                                        min_inliers=config.metric_min_inliers))

    def __call__(self, result: FrameResult, image: np.ndarray, features: LocalFeatures | None,
                 camera_K: np.ndarray | None, map_K: np.ndarray | None, local: LocalFeatureTable | None,
                 frame_depth: FrameDepth, match_here: Callable[[np.ndarray, LocalFeatures], tuple]) -> None:
        """Into result.metric and result.scale_note. local: the map's local features (a verified loop closure
        has them); match_here(image, its features) -> (query features, matches): for a pair matched on the
        device."""
        place = result.loop
        if not place.verified:
            result.scale_note = "the loop closure is not geometrically verified"
            return
        if camera_K is None:
            result.scale_note = "no camera intrinsics (camera_info_topic): no relative pose"
            return
        t0 = time.perf_counter()
        map_features = local[place.hypothesis.key]
        depth, depth_K, depth_note = frame_depth.get()
        result.query_depth_note = depth_note if depth is None else ""
        if map_features.depth is None and depth is None:
            result.scale_note = result.scale_note or depth_note or NO_DEPTH
            return
        if place.matches is None or features is None:  # matched on the device: match this one pair here
            features, place.matches = match_here(image, map_features)
        with_depth(features, depth, camera_K, depth_K)
        query_idx, map_idx = place.matches.query_idx, place.matches.map_idx  # PnP RANSAC picks its own inliers
        map_depth = map_features.depth[map_idx] if map_features.depth is not None else None
        query_depth = features.depth[query_idx] if features.depth is not None else None
        try:
            metric, note = self.estimator.estimate(features.keypoints[query_idx], map_features.keypoints[map_idx],
                                                   camera_K, map_K, features.image_size, map_features.image_size,
                                                   map_depth, query_depth)
        except Exception as exc:  # noqa: BLE001: a fault of the metric step costs the metric pose, never the frame
            LOGGER.error("metric pose of frame %d failed (%s: %s); its loop closure keeps a translation direction",
                         result.frame_id, type(exc).__name__, exc)
            metric, note = None, f"the metric step failed ({type(exc).__name__}: {str(exc)[:120]}): direction only"
        if metric is not None and place.verification.rotation is not None:
            metric, note = agrees_with_two_view(metric, place.verification.rotation, place.verification.model)
        result.metric, result.scale_note = metric, note
        result.timings_ms["metric"] = (time.perf_counter() - t0) * 1e3
