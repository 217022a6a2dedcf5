"""What an accepted hypothesis means for a pose graph: the loop-closure constraint between the query
camera and the matched map frame, and the pose (with covariance) the robot is localised at.

With a metric relative pose (depth, matching/metric.py) the constraint is a full 6-DoF edge with the
refinement's covariance, and the localised pose is the query camera's metric pose in the map: the map
frame's pose, composed with the camera's mounting on the body (the map's camera), composed with the
relative pose, its covariance carried through that composition (the map poses taken as exact).

Covariances are 6 x 6 over (x, y, z, roll, pitch, yaw) as in geometry_msgs; a degree of freedom the
measurement does not constrain gets UNKNOWN_VARIANCE. `finish` puts both into the frame's result once;
the node publishes them and the evaluation scores them as they are.
"""

import math
import re
import numpy as np

from vpr_ros.core.map.camera import MapCamera
from vpr_ros.core.matching.metric import MetricPose, propagate
from vpr_ros.core.matching.transforms import compose, invert, pose7, pose_matrices, quaternion_xyzw
from vpr_ros.core.pipeline.results import FrameResult, LocalizedPose, LoopConstraint, PlaceResult
from vpr_ros.core.uncertainty.features import position_covariance

UNKNOWN_VARIANCE = 1e6  # covariance entry for a degree of freedom the measurement does not constrain
ROTATION_SIGMA_RAD_AT_100 = math.radians(1.0)  # rotation std at 100 inliers, growing as 1/sqrt(inliers)


_DEPTH_USED = re.compile(r"with (map and query|map|query) depth")


def depth_used(detail: str) -> str:
    """Whose depth a metric constraint's `detail` (LoopClosure.method_detail) says its PnP used: "map",
    "query", "map and query", or "unknown" (a detail not written by loop_constraint)."""
    found = _DEPTH_USED.search(detail)
    return found.group(1) if found else "unknown"


def loop_constraint(place: PlaceResult, matcher: str | None, metric: MetricPose | None = None,
                    scale_note: str = "", query_depth_note: str = "") -> LoopConstraint:
    """The constraint of an accepted hypothesis: the metric pose and its covariance when depth gave one;
    else the verified relative rotation (and translation direction) with a rotation variance that shrinks
    with the inlier count, the rest unknown, and `scale_note` saying why. query_depth_note: why the frame's
    own depth image was not used (said in the detail of a metric pose from the map's depth alone)."""
    v = place.verification
    if metric is not None and place.verified:
        detail = (f"{matcher}, PnP on {metric.inlier_count} of {metric.points} matches with {metric.depth_from} "
                  f"depth, variance factor {metric.variance_factor:.2f}")
        if metric.depth_from == "map" and query_depth_note:
            detail += f"; the frame's depth image was not used: {query_depth_note}"
        return LoopConstraint("pnp_depth", detail, quaternion_xyzw(metric.rotation), metric.translation.copy(),
                              metric.covariance.copy(), v.inlier_count, True, "")
    constraint = _direction_only(place, matcher)
    constraint.scale_note = scale_note or ("the loop closure is not geometrically verified" if not place.verified
                                           else "no depth")
    return constraint


def _direction_only(place: PlaceResult, matcher: str | None) -> LoopConstraint:
    v = place.verification
    cov = np.diag([UNKNOWN_VARIANCE] * 6)
    rotation, translation = np.array([0.0, 0.0, 0.0, 1.0]), np.zeros(3)
    if v is None or not v.verified:
        return LoopConstraint("global_descriptor", "global descriptor only", rotation, translation, cov,
                              v.inlier_count if v is not None else 0)
    if v.rotation is not None:
        rotation = quaternion_xyzw(v.rotation)
        cov[3:, 3:] = np.eye(3) * ROTATION_SIGMA_RAD_AT_100 ** 2 * 100.0 / max(v.inlier_count, 1)
    if v.translation is not None:  # a unit direction: the scale stays unconstrained
        translation = np.asarray(v.translation, np.float64).reshape(3)
    detail = f"{matcher}, {v.model}, {v.inlier_count} inliers" + (f"; {v.note}" if v.note else "")
    return LoopConstraint(v.model, detail, rotation, translation, cov, v.inlier_count)


def camera_pose(place: PlaceResult, metric: MetricPose | None, camera: MapCamera | None
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """The query camera's metric pose in the map (7: x y z qx qy qz qw) and its 6 x 6 covariance (position in
    the map frame, rotation about the map's axes), or None without a metric pose, a posed map frame or the
    camera's mounting on the body."""
    if metric is None or place.hypothesis.pose is None or camera is None or camera.camera_in_body is None:
        return None
    map_camera = compose(place.hypothesis.pose, camera.camera_in_body)  # T_map_matchcamera
    r_mc, t_mc = pose_matrices(map_camera)

    def query_in_map(rotation, translation):  # T_map_query = T_map_match (T_query_match)^-1
        r, t = invert(rotation, translation)
        return r_mc @ r, r_mc @ t + t_mc

    rotation, translation = query_in_map(metric.rotation, metric.translation)
    return pose7(rotation, translation), propagate(metric.covariance, metric.rotation, metric.translation,
                                                   query_in_map)


def pose_covariance(places: list[PlaceResult], sigma_m: float) -> np.ndarray:
    """6 x 6 covariance of the best hypothesis's map pose as the query's pose: position sigma_m² I,
    widened by the calibrated doubt among the posed hypotheses when probabilities exist
    (uncertainty.features.position_covariance); orientation unknown (the map frame's is not the query's)."""
    cov = np.diag([UNKNOWN_VARIANCE] * 6)
    posed = [p for p in places if p.hypothesis.pose is not None]
    if not posed or posed[0] is not places[0] or not np.isfinite(places[0].probability):
        cov[:3, :3] = sigma_m ** 2 * np.eye(3)
    else:
        cov[:3, :3] = position_covariance(np.array([p.hypothesis.pose[:3] for p in posed]),
                                          np.array([p.probability for p in posed]), sigma_m)
    return cov


def finish(result: FrameResult, matcher: str | None, camera: MapCamera | None, sigma_m: float) -> None:
    """The accepted loop closure's constraint and, when its map frame has a pose, the localised pose: the
    query camera's metric pose when there is one (and the map knows its camera's mounting), else the map
    frame's pose with pose_covariance(sigma_m)."""
    place = result.loop
    if place is None:
        return
    result.constraint = loop_constraint(place, matcher, result.metric, result.scale_note, result.query_depth_note)
    metric = camera_pose(place, result.metric, camera)
    if metric is not None:
        result.localized = LocalizedPose(metric[0], metric[1], True)
    elif place.hypothesis.pose is not None:
        result.localized = LocalizedPose(np.asarray(place.hypothesis.pose, np.float64),
                                         pose_covariance(result.places, sigma_m), False)
