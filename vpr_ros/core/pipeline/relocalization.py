"""Relocalization for a 2-D localizer (Nav2's AMCL): when to hand it an initial pose from a place answer,
and which pose. Free of ROS: the node feeds it the robot's own localization and every processed frame's
answer, and publishes what it returns on /initialpose.

A frame's answer is *confident* when it is an accepted loop closure, geometrically verified, with a
calibrated probability of at least `min_probability` and a localised pose (metric, unless
`require_metric` is off); nothing else is ever published. Its pose is projected to the plane: the
camera's metric pose becomes the body's through the camera-in-body transform (the map's camera mounting
unless given), then x, y and the heading; the covariance comes with it (first order: the rotation's
doubt moves the body through the lever arm of the camera mount). A non-metric answer is the matched map
frame's body pose with the position spread of the hypotheses and a heading the image does not fix.

When it publishes (each trigger says why):
- `request`: someone asked (the node's vpr/relocalize service): the next confident answer, within a
  timeout;
- `on_start`: the first confident answer after activation;
- `doubtful`: the robot's own localization reports a position standard deviation above `max_std_m` or
  a heading one above `max_yaw_std_deg` (AMCL's covariance grows when it loses track);
- `disagree`: `disagree_frames` confident answers in a row put the robot more than `disagree_m` (or
  `disagree_deg`) from where its localization says it is (a kidnapped robot whose AMCL stays confident).
After an automatic publication the policy waits `cooldown_s` for the localizer to converge before it
triggers again by itself; a request is answered at any time. While the robot's localization is confident
and agrees, nothing is published. Without any report from it, only requests and `on_start` publish.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from vpr_ros.core.matching.transforms import compose, inverse, pose_matrices, skew
from vpr_ros.core.pipeline.results import FrameResult


@dataclass(frozen=True)
class RelocalizationSettings:
    min_probability: float = 0.9  # calibrated probability a published answer needs (NaN never passes)
    require_metric: bool = True  # only metric poses (depth) are published; else map-frame poses too
    max_std_m: float = 1.0  # the robot's localization is doubtful above this position standard deviation
    max_yaw_std_deg: float = 30.0  # ... or above this heading standard deviation
    disagree_m: float = 2.0  # a confident answer this far from the robot's localization disagrees with it
    disagree_deg: float = 45.0  # ... or this far in heading (metric answers only)
    disagree_frames: int = 3  # consecutive disagreeing confident answers that trigger a relocalization
    cooldown_s: float = 10.0  # after an automatic publication, no other automatic one for this long
    on_start: bool = False  # publish the first confident answer after activation


@dataclass
class PlanarPose:
    """The robot body's pose on the map plane and its 6 x 6 covariance (x y z roll pitch yaw; Nav2 reads x, y
    and yaw)."""

    x: float
    y: float
    yaw: float  # radians
    covariance: np.ndarray  # 6 x 6
    metric: bool
    stamp_ns: int = 0
    map_key: int = -1  # the matched map frame

    def quaternion(self) -> tuple[float, float, float, float]:
        return 0.0, 0.0, math.sin(self.yaw / 2), math.cos(self.yaw / 2)

    def std_m(self) -> float:
        return math.sqrt(max(self.covariance[0, 0] + self.covariance[1, 1], 0.0))


@dataclass
class Relocalization:
    """An initial pose to publish and why."""

    pose: PlanarPose
    trigger: str  # request, on_start, doubtful, disagree
    reason: str  # in words, for the log


def planar_pose(result: FrameResult, camera_in_body: np.ndarray | None) -> PlanarPose | None:
    """The body's planar pose from a frame's localised pose (None without one, or a metric one whose camera
    mounting is unknown)."""
    localized = result.localized
    if localized is None:
        return None
    cov = np.asarray(localized.covariance, np.float64)
    if localized.metric:  # the camera's pose: the body is inverse(camera_in_body) from it
        if camera_in_body is None:
            return None
        body_in_camera = inverse(camera_in_body)
        body = compose(localized.pose, body_in_camera)
        rotation, _ = pose_matrices(localized.pose)
        lever = rotation @ pose_matrices(body_in_camera)[1]  # camera -> body, in the map frame
        jacobian = np.zeros((6, 6))
        jacobian[:3, :3], jacobian[:3, 3:], jacobian[3:, 3:] = np.eye(3), -skew(lever), np.eye(3)
        cov = jacobian @ cov @ jacobian.T
    else:  # the matched map frame's stored pose is already the body's
        body = np.asarray(localized.pose, np.float64)
    rotation, translation = pose_matrices(body)
    yaw = math.atan2(rotation[1, 0], rotation[0, 0])
    key = result.loop.hypothesis.key if result.loop is not None else -1
    return PlanarPose(float(translation[0]), float(translation[1]), yaw, 0.5 * (cov + cov.T), localized.metric,
                      result.stamp_ns, key)


@dataclass
class RobotLocalization:
    """The robot's own 2-D localization (AMCL's amcl_pose): where it believes it is, and how sure it is."""

    x: float
    y: float
    yaw: float
    std_m: float
    yaw_std_deg: float
    time_s: float

    @classmethod
    def from_covariance(cls, x: float, y: float, yaw: float, covariance, time_s: float) -> "RobotLocalization":
        cov = np.asarray(covariance, np.float64).reshape(6, 6)
        return cls(x, y, yaw, math.sqrt(max(cov[0, 0] + cov[1, 1], 0.0)),
                   math.degrees(math.sqrt(max(cov[5, 5], 0.0))), time_s)


@dataclass
class Relocalizer:
    """The policy (module doc): fed the robot's localization and each frame's answer, it says when to publish."""

    settings: RelocalizationSettings = field(default_factory=RelocalizationSettings)
    camera_in_body: np.ndarray | None = None  # x y z qx qy qz qw of the camera's optical frame on the body

    def __post_init__(self):
        self.robot: RobotLocalization | None = None
        self.requested_until: float | None = None  # a request waits until this time
        self.pending_start = False
        self.disagreeing = 0
        self.last_auto_s = -math.inf
        self.last: Relocalization | None = None
        self.published = 0

    def activated(self) -> None:
        self.pending_start, self.disagreeing = self.settings.on_start, 0

    def request(self, now_s: float, timeout_s: float) -> None:
        """Publish the next confident answer arriving before now + timeout."""
        self.requested_until = now_s + timeout_s

    def request_open(self, now_s: float) -> bool:
        return self.requested_until is not None and now_s <= self.requested_until

    def update_robot(self, robot: RobotLocalization) -> None:
        self.robot = robot

    def confident(self, result: FrameResult) -> tuple[PlanarPose | None, str]:
        """The frame's planar pose when its answer may be published, else None and why not."""
        loop, s = result.loop, self.settings
        if loop is None:
            return None, "no accepted loop closure"
        if not loop.verified:
            return None, "the loop closure is not geometrically verified"
        if not np.isfinite(loop.probability):
            return None, "no calibrated probability (the map has no calibrator: vpr_train_uncertainty)"
        if loop.probability < s.min_probability:
            return None, f"probability {loop.probability:.2f} < {s.min_probability:.2f}"
        if result.localized is None:
            return None, "the matched map frame has no pose"
        if s.require_metric and not result.localized.metric:
            return None, f"no metric pose ({result.scale_note or 'no depth'})"
        pose = planar_pose(result, self.camera_in_body)
        if pose is None:
            return None, "the camera's mounting on the body is unknown (camera_in_base, or a map with TF)"
        return pose, ""

    def offer(self, result: FrameResult, now_s: float) -> Relocalization | None:
        """A processed frame's answer: the relocalization to publish now, or None."""
        pose, _ = self.confident(result)
        if pose is None:
            return None
        trigger, reason = self._trigger(pose, now_s)
        if not trigger:
            return None
        if trigger != "request":
            self.last_auto_s = now_s
        if trigger in ("request", "on_start"):
            self.requested_until, self.pending_start = None, False
        self.disagreeing = 0
        self.last = Relocalization(pose, trigger, reason)
        self.published += 1
        return self.last

    def _trigger(self, pose: PlanarPose, now_s: float) -> tuple[str, str]:
        s = self.settings
        if self.request_open(now_s):
            return "request", "relocalization was requested"
        if self.pending_start:
            return "on_start", "relocalize_on_start: the first confident answer"
        robot = self.robot
        if robot is None or now_s - self.last_auto_s < s.cooldown_s:
            return "", ""
        if robot.std_m > s.max_std_m or robot.yaw_std_deg > s.max_yaw_std_deg:
            return "doubtful", (f"the robot's localization is doubtful (position std {robot.std_m:.2f} m, heading std "
                                f"{robot.yaw_std_deg:.0f} deg; limits {s.max_std_m:g} m, {s.max_yaw_std_deg:g} deg)")
        distance = math.hypot(pose.x - robot.x, pose.y - robot.y)
        turn = abs(math.degrees(math.remainder(pose.yaw - robot.yaw, 2 * math.pi)))
        if distance > s.disagree_m or (pose.metric and turn > s.disagree_deg):
            self.disagreeing += 1
            if self.disagreeing >= s.disagree_frames:
                return "disagree", (f"{self.disagreeing} confident answers in a row disagree with the robot's "
                                    f"localization (now {distance:.1f} m, {turn:.0f} deg apart)")
        else:
            self.disagreeing = 0
        return "", ""
