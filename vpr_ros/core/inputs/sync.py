"""What the node's input streams are worth when a frame is processed, free of ROS: odometry that is fresh
enough, a position prior that can be used (and why one cannot, said at most every few seconds), and the
checks that decide it. The node converts messages to these calls; depth pairing is in depth_pairing.py.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PositionPrior:
    """Where the robot is believed to be at `stamp_ns`."""

    position: tuple[float, float, float]  # x y z in the map's frame ("pose"), or lat lon alt ("gps")
    covariance: np.ndarray  # 3 x 3, m^2 (x y z; for GPS east north up)
    stamp_ns: int
    kind: str = "pose"  # "pose" or "gps"

    def __post_init__(self):
        if self.kind not in ("pose", "gps"):
            raise ValueError(f"a prior is a 'pose' or a 'gps' prior, got {self.kind!r}")
        covariance = np.asarray(self.covariance, np.float64)
        if covariance.shape != (3, 3):
            raise ValueError(f"a prior's covariance is 3 x 3, got shape {covariance.shape}")
        if not (np.isfinite(self.position).all() and np.isfinite(covariance).all()):
            raise ValueError("a prior's position and covariance must be finite")
        if self.kind == "gps" and not (-90.0 <= self.position[0] <= 90.0 and -180.0 <= self.position[1] <= 180.0):
            raise ValueError(f"latitude {self.position[0]:g} / longitude {self.position[1]:g} lie outside -90..90 / "
                             "-180..180 degrees (a NavSatFix gives degrees; are latitude and longitude swapped or in "
                             "radians?)")
        if np.linalg.eigvalsh((covariance[:2, :2] + covariance[:2, :2].T) / 2).min() < 0:
            raise ValueError("a prior's horizontal covariance must be positive semi-definite")

    @property
    def sigma_m(self) -> float:
        """The largest horizontal standard deviation (metres)."""
        block = np.asarray(self.covariance, np.float64)[:2, :2]
        return float(np.sqrt(max(np.linalg.eigvalsh((block + block.T) / 2).max(), 0.0)))


class Throttle:
    """Says each key at most every `period_s` seconds (a driver that sends the same bad message every cycle
    must not flood the log, and a second reason must not hide behind the first)."""

    def __init__(self, period_s: float = 10.0):
        self.period_s, self._last = period_s, {}

    def due(self, key: str, now: float) -> bool:
        """Whether `key` may be said at monotonic time `now` (and, if so, it counts as said)."""
        if now - self._last.get(key, -float("inf")) < self.period_s:
            return False
        self._last[key] = now
        return True


class OdometryInput:
    """The last valid odometry pose, and whether it is fresh enough to give a frame its pose."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._last: tuple[np.ndarray, float, str] | None = None  # (pose 7, arrival, frame id)

    @property
    def frame_id(self) -> str | None:
        """The coordinate frame of the last valid pose (None before one)."""
        return self._last[2] if self._last is not None else None

    def update(self, pose: np.ndarray, frame_id: str, now: float) -> str:
        """Keep `pose` (x y z qx qy qz qw, arrived at monotonic `now`); returns why it is refused ("" when kept)."""
        pose = np.asarray(pose, np.float64).reshape(7)
        if not np.isfinite(pose).all():
            return "NaN or infinite pose"
        norm = float(np.linalg.norm(pose[3:]))
        if abs(norm - 1.0) > 1e-3:
            return f"quaternion of norm {norm:.4f}"
        self._last = (pose, now, frame_id or "odom")
        return ""

    def fresh(self, now: float) -> tuple[np.ndarray | None, str]:
        """(a copy of the last pose, "") when it arrived within timeout_s of `now`, else (None, why)."""
        if self._last is None:
            return None, "none received"
        age = now - self._last[1]
        if age > self.timeout_s:
            return None, f"the last is {age:.1f} s old"
        return self._last[0].copy(), ""


class PriorInput:
    """The last usable position prior, from a pose (an EKF, a relocalisation) or a GPS fix."""

    def __init__(self):
        self.prior: PositionPrior | None = None

    def from_pose(self, position, covariance: np.ndarray, stamp_ns: int, frame_id: str, map_frame: str) -> str:
        """A pose prior (covariance: 6 x 6 of a PoseWithCovariance); returns why it is refused ("" when kept)."""
        if frame_id and frame_id != map_frame:
            return f"it is in frame {frame_id!r}, the map's poses in {map_frame!r}"
        return self._set(position, np.asarray(covariance, np.float64).reshape(6, 6)[:3, :3], stamp_ns, "pose")

    def from_gps(self, position, covariance: np.ndarray, covariance_type: int, status: int, stamp_ns: int) -> str:
        """A GPS prior (NavSatFix's latitude, longitude, altitude, 3 x 3 covariance, its type and the fix
        status); returns why it is refused ("" when kept)."""
        if status < 0:  # STATUS_NO_FIX (-1), or STATUS_UNKNOWN (-2: the default of newer sensor_msgs)
            return ("the receiver has no fix" if status == -1 else
                    f"its fix status is {status} (unknown: the driver does not fill status)")
        if covariance_type == 0:  # COVARIANCE_TYPE_UNKNOWN: no region can be drawn
            return "its covariance is unknown (position_covariance_type 0)"
        return self._set(position, np.asarray(covariance, np.float64).reshape(3, 3), stamp_ns, "gps")

    def _set(self, position, covariance: np.ndarray, stamp_ns: int, kind: str) -> str:
        try:
            self.prior = PositionPrior(tuple(float(v) for v in position), covariance, stamp_ns, kind)
        except ValueError as exc:
            return str(exc)
        return ""
