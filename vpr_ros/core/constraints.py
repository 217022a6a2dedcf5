"""What an accepted hypothesis means for a pose graph: the loop-closure constraint between the query
camera and the matched map frame, and the covariance of the map pose the robot is localised at.

Covariances are 6 x 6 over (x, y, z, roll, pitch, yaw) as in geometry_msgs; a degree of freedom the
measurement does not constrain gets UNKNOWN_VARIANCE. The node publishes these; replays and
evaluation get the same constraint from the same functions.
"""

import math
from dataclasses import dataclass

import numpy as np

from vpr_ros.core.localizer import PlaceResult
from vpr_ros.core.uncertainty.features import position_covariance

UNKNOWN_VARIANCE = 1e6  # covariance entry for a degree of freedom the measurement does not constrain
ROTATION_SIGMA_RAD_AT_100 = math.radians(1.0)  # rotation std at 100 inliers, growing as 1/sqrt(inliers)


@dataclass
class LoopConstraint:
    """T_query_match in the query camera's optical frame, as far as the verification determined it."""

    method: str  # "global_descriptor", or the verified model: "fundamental", "homography", "essential"
    detail: str  # human-readable: matcher, model, inliers, verification note
    rotation_xyzw: np.ndarray  # 4; identity when unknown
    translation: np.ndarray  # 3; a unit direction (scale unknown), zeros when unknown
    covariance: np.ndarray  # 6 x 6
    inlier_count: int = 0


def quaternion_xyzw(rotation: np.ndarray) -> np.ndarray:
    """3 x 3 rotation matrix -> unit quaternion (x, y, z, w)."""
    m = np.asarray(rotation, np.float64)
    w = math.sqrt(max(0.0, 1.0 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1.0 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    q = np.array([x, y, z, w])
    return q / np.linalg.norm(q)


def loop_constraint(place: PlaceResult, matcher: str | None) -> LoopConstraint:
    """The constraint of an accepted hypothesis: the verified relative rotation (and translation
    direction) with a rotation variance that shrinks with the inlier count; the rest unknown."""
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
