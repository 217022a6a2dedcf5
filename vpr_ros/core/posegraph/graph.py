"""An incremental pose graph (GTSAM's iSAM2) over body keyframes from odometry, closed by the node's loop
closures and, in localize mode, anchored by its localised poses.

- Each odometry keyframe is a Pose3 variable; consecutive ones are joined by a between factor of the
  odometry increment with `increment_covariance` (given, or GraphSettings' drift model: sigma growing with
  the distance travelled).
- A loop closure becomes a between factor on the keyframes nearest its query and match stamps (within
  `max_stamp_offset_s`, else refused with the reason), its camera-frame pose and covariance carried into
  the body frame (factors.body_relative), under a robust kernel in the edge's own sigmas (GraphSettings.kernel):
  a false closure far outside its covariance is down-weighted instead of bending the graph.
- A localised pose (vpr/pose) is a prior factor on the keyframe nearest its stamp, under the same kernel.

Closures are optimised as they arrive (one iSAM2 update each); odometry keyframes between them are added in
the next update. Work in progress for issue 40: one session, direction-only closures used as rotation
constraints (their translation variance is the message's 1e6), no inter-session joins yet.
"""

import bisect
from dataclasses import dataclass, field

import gtsam
import numpy as np

from vpr_ros.core.matching.transforms import pose7
from vpr_ros.core.posegraph.factors import ROS_TO_GTSAM, body_relative, pose_matrix, world_covariance_to_right

KERNELS = ("cauchy", "huber", "none")


@dataclass
class GraphSettings:
    """How the graph weighs what it is given."""

    kernel: str = "cauchy"  # robust kernel of loop closures and localised poses: cauchy, huber or none
    kernel_sigmas: float = 3.0  # its scale, in the edge's own standard deviations (whitened error)
    odometry_sigma_per_m: float = 0.02  # drift model: translation sigma per metre travelled (2 %)
    odometry_yaw_sigma_per_m: float = 0.002  # ... and rotation sigma (rad) per metre
    odometry_sigma_floor: float = 1e-3  # the least sigma of an increment (m, rad): a standstill is not exact
    max_stamp_offset_s: float = 0.25  # a closure or fix further than this from every keyframe is refused
    first_pose_sigma: float = 1e-4  # the first keyframe anchors the graph (m, rad)

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown kernel {self.kernel!r}; choose one of {KERNELS}")


@dataclass
class GraphCounts:
    """What the graph took and refused, for diagnostics."""

    keyframes: int = 0
    closures: int = 0
    fixes: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def refuse(self, why: str) -> str:
        self.refused[why] = self.refused.get(why, 0) + 1
        return why


class PoseGraph:
    """Body keyframes X_i = T_world_body_i from odometry, optimised with loop closures and fixes (iSAM2)."""

    def __init__(self, settings: GraphSettings | None = None):
        self.settings = settings or GraphSettings()
        self.isam = gtsam.ISAM2()
        self.counts = GraphCounts()
        self._stamps: list[int] = []
        self._odometry: list[np.ndarray] = []  # the odometry's own pose of each keyframe, 4 x 4
        self._factors, self._values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        self._estimate = gtsam.Values()

    def __len__(self) -> int:
        return len(self._stamps)

    # ---- inputs -------------------------------------------------------------------------------
    def add_odometry(self, stamp_ns: int, pose, increment_covariance: np.ndarray | None = None) -> int:
        """A keyframe at the odometry's pose (x y z qx qy qz qw); returns its key. Stamps must increase.
        increment_covariance: 6 x 6 (geometry_msgs order, right-perturbed body frame) of the increment from
        the previous keyframe (None: the drift model)."""
        pose = pose_matrix(pose)
        if not np.isfinite(pose).all():
            raise ValueError("an odometry pose must be finite")
        if self._stamps and stamp_ns <= self._stamps[-1]:
            raise ValueError(f"odometry stamp {stamp_ns} is not after the last keyframe's {self._stamps[-1]}")
        key = len(self._stamps)
        if key == 0:
            noise = gtsam.noiseModel.Isotropic.Sigma(6, self.settings.first_pose_sigma)
            self._factors.add(gtsam.PriorFactorPose3(key, gtsam.Pose3(pose), noise))
            self._values.insert(key, gtsam.Pose3(pose))
        else:
            increment = np.linalg.inv(self._odometry[-1]) @ pose
            covariance = (self._drift(increment) if increment_covariance is None else
                          np.asarray(increment_covariance, np.float64).reshape(6, 6)[np.ix_(ROS_TO_GTSAM, ROS_TO_GTSAM)])
            self._factors.add(gtsam.BetweenFactorPose3(key - 1, key, gtsam.Pose3(increment),
                                                       gtsam.noiseModel.Gaussian.Covariance(covariance)))
            self._values.insert(key, self._pose(key - 1).compose(gtsam.Pose3(increment)))
        self._stamps.append(int(stamp_ns))
        self._odometry.append(pose)
        self.counts.keyframes += 1
        return key

    def add_loop(self, query_stamp_ns: int, match_stamp_ns: int, relative_pose, covariance: np.ndarray,
                 camera_in_body: np.ndarray | None = None) -> str:
        """A LoopClosure (relative_pose: T_query_match as 4 x 4 or x y z qx qy qz qw, camera frame; covariance
        6 x 6 as published); optimised at once. Returns "" when added, else why it was refused."""
        query, why = self._keyframe(query_stamp_ns, "query")
        match, why_match = self._keyframe(match_stamp_ns, "match")
        if why or why_match:
            return self.counts.refuse(why or why_match)
        if query == match:
            return self.counts.refuse("query and match are the same keyframe")
        relative = np.asarray(relative_pose, np.float64)
        relative = relative if relative.shape == (4, 4) else pose_matrix(relative)
        try:
            body, body_covariance = body_relative(relative, covariance, np.eye(4) if camera_in_body is None
                                                  else camera_in_body)
            noise = self._robust(gtsam.noiseModel.Gaussian.Covariance(body_covariance))
        except (ValueError, RuntimeError) as exc:
            return self.counts.refuse(f"unusable closure: {exc}")
        self._factors.add(gtsam.BetweenFactorPose3(query, match, gtsam.Pose3(body), noise))
        self.counts.closures += 1
        self.update()
        return ""

    def add_fix(self, stamp_ns: int, pose, covariance: np.ndarray) -> str:
        """A localised pose of the body in the map frame (vpr/pose; covariance 6 x 6 over the world position and
        rotation about the world axes) as a prior on the nearest keyframe. Returns "" or why it was refused."""
        key, why = self._keyframe(stamp_ns, "fix")
        if why:
            return self.counts.refuse(why)
        pose = pose_matrix(pose)
        try:
            noise = self._robust(gtsam.noiseModel.Gaussian.Covariance(world_covariance_to_right(pose, covariance)))
        except (ValueError, RuntimeError) as exc:
            return self.counts.refuse(f"unusable fix: {exc}")
        self._factors.add(gtsam.PriorFactorPose3(key, gtsam.Pose3(pose), noise))
        self.counts.fixes += 1
        self.update()
        return ""

    def update(self) -> None:
        """Optimise what was added since the last update (iSAM2)."""
        if self._factors.size() == 0 and self._values.size() == 0:
            return
        self.isam.update(self._factors, self._values)
        self._factors, self._values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        self._estimate = self.isam.calculateEstimate()

    # ---- outputs ------------------------------------------------------------------------------
    def trajectory(self) -> tuple[np.ndarray, np.ndarray]:
        """(stamps N, poses N x 7: x y z qx qy qz qw) of every keyframe, optimised."""
        self.update()
        poses = np.array([_pose7(self._estimate.atPose3(key).matrix()) for key in range(len(self))]).reshape(-1, 7)
        return np.asarray(self._stamps, np.int64), poses

    def odometry(self) -> np.ndarray:
        """N x 7: the odometry's own pose of each keyframe."""
        return np.array([_pose7(p) for p in self._odometry]).reshape(-1, 7)

    def correction(self) -> np.ndarray:
        """4 x 4 T_map_odom at the newest keyframe: what the optimisation moved the odometry frame by."""
        self.update()
        newest = len(self) - 1
        return self._estimate.atPose3(newest).matrix() @ np.linalg.inv(self._odometry[newest])

    # ---- helpers ------------------------------------------------------------------------------
    def _pose(self, key: int) -> gtsam.Pose3:
        return self._values.atPose3(key) if self._values.exists(key) else self._estimate.atPose3(key)

    def _keyframe(self, stamp_ns: int, what: str) -> tuple[int, str]:
        if not self._stamps:
            return -1, "no odometry keyframe yet"
        at = bisect.bisect_left(self._stamps, stamp_ns)
        nearest = min((i for i in (at - 1, at) if 0 <= i < len(self._stamps)),
                      key=lambda i: abs(self._stamps[i] - stamp_ns))
        offset = abs(self._stamps[nearest] - stamp_ns) * 1e-9
        if offset > self.settings.max_stamp_offset_s:
            side = "after the newest" if stamp_ns > self._stamps[-1] else "away from every"
            return -1, f"the {what} stamp is {offset:.2f} s {side} keyframe (max_stamp_offset_s " \
                       f"{self.settings.max_stamp_offset_s:g})"
        return nearest, ""

    def _drift(self, increment: np.ndarray) -> np.ndarray:
        """Covariance (gtsam order) of an odometry increment under the drift model."""
        s, distance = self.settings, float(np.linalg.norm(increment[:3, 3]))
        rotation = max(s.odometry_yaw_sigma_per_m * distance, s.odometry_sigma_floor)
        translation = max(s.odometry_sigma_per_m * distance, s.odometry_sigma_floor)
        return np.diag([rotation ** 2] * 3 + [translation ** 2] * 3)

    def _robust(self, noise):
        k = self.settings.kernel_sigmas
        if self.settings.kernel == "cauchy":
            return gtsam.noiseModel.Robust.Create(gtsam.noiseModel.mEstimator.Cauchy.Create(k), noise)
        if self.settings.kernel == "huber":
            return gtsam.noiseModel.Robust.Create(gtsam.noiseModel.mEstimator.Huber.Create(k), noise)
        return noise


def _pose7(matrix: np.ndarray) -> np.ndarray:
    return pose7(matrix[:3, :3], matrix[:3, 3])

