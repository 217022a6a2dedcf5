"""What the pose graph is told (GraphSettings: the node's parameters, config/pose_graph.yaml) and what it says
back (GraphCounts: taken, refused and why, for diagnostics). docs/posegraph.md explains each setting."""

from dataclasses import dataclass, field

import numpy as np

KERNELS = ("cauchy", "huber", "none")
CHI2_6DOF_999 = 22.458  # 99.9 % quantile of the chi-square distribution with 6 degrees of freedom


@dataclass
class GraphSettings:
    """How the graph builds keyframes and weighs what it is given (the node's parameters, config/pose_graph.yaml)."""

    kernel: str = "cauchy"  # robust kernel on closures and fixes: cauchy, huber or none (docs/posegraph.md)
    kernel_sigmas: float = 3.0  # its scale in the edge's own standard deviations (whitened error)
    kernel_entry: float = 1.5  # a closure enters with its kernel at this many times its error then (at least
    #                            kernel_sigmas), so that a true closure after a long drift is not thrown away ...
    kernel_anneal: float = 0.5  # ... and the scale shrinks by this factor at every update down to kernel_sigmas:
    #                             a closure the graph does not come to agree with loses its weight
    support: int = 1  # agreeing closures a closure needs before it enters the graph (0: every closure at once)
    consistency_window_m: float = 30.0  # partners: closures whose query keyframes lie within this travel
    consistency_sigma_per_m: float = 0.05  # drift allowance of the odometry between partners (m per m, rad per m / 10)
    consistency_chi2: float = CHI2_6DOF_999  # gate on the pair's whitened loop error
    direction_only: str = "skip"  # closures without scale: skip (counted) or rotation (their rotation only)
    keyframe_distance_m: float = 0.5  # a new keyframe after this much travel ...
    keyframe_rotation_deg: float = 10.0  # ... or this much rotation ...
    keyframe_interval_s: float = 1.0  # ... or this much time
    odometry_sigma_per_m: float = 0.02  # drift model for odometry without covariance: translation sigma per metre
    odometry_yaw_sigma_per_m: float = 0.002  # ... and rotation sigma (rad) per metre
    odometry_sigma_floor: float = 1e-3  # the least sigma of an increment (m, rad): a standstill is not exact
    max_speed_mps: float = 10.0  # faster odometry is a jump, refused
    jump_reset_after: int = 3  # consecutive jumped poses that agree with each other: the odometry was reset
    max_stamp_offset_s: float = 0.5  # a closure or fix further than this from every keyframe is refused
    wait_s: float = 5.0  # a closure or fix stamped up to this far ahead of the odometry (or of a robot whose odometry
    #                      has not come yet) waits for it: topics arrive in any order; further ahead: refused
    max_waiting: int = 1000  # closures and fixes waiting for odometry at most (the oldest is refused beyond)
    anchor: str = "first_pose"  # first_pose: the map frame is where the first chain's odometry starts (slam);
    #                             free: the map is another's (localize: vpr/pose fixes place every chain)
    first_pose_sigma: float = 1e-4  # the first keyframe anchors the graph (m, rad)
    free_start_sigma: float = 10.0  # a free chain's first keyframe (another robot's, or localize mode): m ...
    free_start_rotation_sigma: float = 0.5  # ... and rad (its heading: the odometry's, until a metric closure or fix)

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown kernel {self.kernel!r}; choose one of {KERNELS}")
        if self.direction_only not in ("skip", "rotation"):
            raise ValueError(f"direction_only must be skip or rotation, got {self.direction_only!r}")
        numbers = {k: v for k, v in vars(self).items() if not isinstance(v, str)}
        bad = [k for k, v in numbers.items() if not np.isfinite(v) or v < 0]
        if bad or self.kernel_sigmas <= 0 or self.max_speed_mps <= 0:
            raise ValueError(f"pose graph settings must be finite and >= 0 (kernel_sigmas, max_speed_mps > 0): {bad}")


@dataclass
class GraphCounts:
    """What the graph took and refused, for diagnostics."""

    odometry: int = 0  # odometry poses given
    keyframes: int = 0
    closures: int = 0  # closures in the graph
    waiting: int = 0  # closures waiting for support
    fixes: int = 0
    resets: int = 0  # odometry resets chained through a loose factor
    refused: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # the latest reason of each kind of refusal

    def refuse(self, why: str, key: str | None = None) -> str:
        key = key or why
        self.refused[key] = self.refused.get(key, 0) + 1
        self.reasons[key] = why
        return why
