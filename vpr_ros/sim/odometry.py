"""Odometry that drifts as a wheel or visual odometry does, integrated beside the simulator's true path.

The true body poses of every lap, in stamp order (the pause between laps included), give planar
increments: forward and lateral motion in the previous pose's heading frame, and the change of heading.
The odometry integrates them with
- a scale error for the whole run (`scale`: |error|, its sign drawn per run),
- a heading bias per metre travelled that random-walks (`yaw_bias_deg_per_m` at the start, drawn with a
  random sign; `yaw_bias_walk_deg_per_m`: the standard deviation of its change per metre),
- white noise on each increment (`translation_noise`: a fraction of the step; `yaw_noise_deg` per step).
Height, roll and pitch are the truth's (gravity and the ground plane observe them). All of it follows
from the run's seed. The odometry frame `odom` starts at the first true pose: T_map_odom is the identity
until the odometry drifts.

The published covariance is the model's own: per increment a translation standard deviation of
`covariance_fraction` of the step (scale error, noise and heading error over the step) plus
`covariance_floor_m`, and a heading one of the bias and noise over the step; the pose covariance in the
Odometry message accumulates them, as a wheel odometry driver reports it.
"""

from dataclasses import asdict, dataclass

import numpy as np

DEGREE = np.pi / 180.0


@dataclass(frozen=True)
class OdometryDrift:
    """How the simulated odometry drifts (zeros: the truth)."""

    scale: float = 0.01  # |scale error| of the whole run (1 %)
    yaw_bias_deg_per_m: float = 0.03  # |heading bias| at the start, degrees per metre travelled
    yaw_bias_walk_deg_per_m: float = 0.003  # its random walk: standard deviation of the change per metre
    translation_noise: float = 0.005  # white noise, fraction of each step
    yaw_noise_deg: float = 0.05  # white noise on each step's heading change
    covariance_fraction: float = 0.02  # published: translation sigma per metre of an increment
    covariance_floor_m: float = 0.005  # ... plus this (a standstill is not exact)

    @classmethod
    def from_config(cls, value) -> "OdometryDrift":
        """From run.json / RUN_DEFAULTS: a mapping of fields, or a number: every drift term scaled by it
        (0: odometry equals the truth, 1: the defaults)."""
        if isinstance(value, OdometryDrift):
            return value
        if isinstance(value, (int, float)):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"odometry drift must be a finite factor >= 0, got {value}")
            d = cls()
            return cls(d.scale * value, d.yaw_bias_deg_per_m * value, d.yaw_bias_walk_deg_per_m * value,
                       d.translation_noise * value, d.yaw_noise_deg * value)
        unknown = set(value) - set(asdict(cls()))
        if unknown:
            raise ValueError(f"unknown odometry drift fields {sorted(unknown)}; known: {sorted(asdict(cls()))}")
        out = cls(**{k: float(v) for k, v in value.items()})
        if any(not np.isfinite(v) or v < 0 for v in asdict(out).values()):
            raise ValueError(f"odometry drift fields must be finite and >= 0, got {asdict(out)}")
        return out

    @property
    def is_truth(self) -> bool:
        d = asdict(self)
        return not any(d[k] for k in ("scale", "yaw_bias_deg_per_m", "yaw_bias_walk_deg_per_m",
                                      "translation_noise", "yaw_noise_deg"))


def drifted(poses: np.ndarray, drift: OdometryDrift, seed) -> tuple[np.ndarray, np.ndarray]:
    """(odometry poses N x 6: x y z yaw pitch roll, pose covariances N x 6 x 6 in geometry_msgs order) from
    the true poses N x 6 (same layout, stamp order). Deterministic for a seed."""
    poses = np.asarray(poses, np.float64)
    n = len(poses)
    out = poses.copy()
    covariance = np.zeros((n, 6, 6))
    if n == 0:
        return out, covariance
    rng = np.random.default_rng(seed)
    scale = 1.0 + drift.scale * rng.choice([-1.0, 1.0])
    bias = drift.yaw_bias_deg_per_m * DEGREE * rng.choice([-1.0, 1.0])
    heading, position = poses[0, 3], poses[0, :2].copy()
    var_xy, var_yaw = drift.covariance_floor_m ** 2, (0.01 * DEGREE) ** 2
    for i in range(n):
        if i:
            previous = poses[i - 1]
            c, s = np.cos(previous[3]), np.sin(previous[3])
            step = poses[i, :2] - previous[:2]
            forward, left = c * step[0] + s * step[1], -s * step[0] + c * step[1]
            distance = float(np.hypot(forward, left))
            turn = float(np.angle(np.exp(1j * (poses[i, 3] - previous[3]))))
            forward, left = (np.array([forward, left]) * scale
                             + rng.normal(0.0, drift.translation_noise * distance + 1e-12, 2))
            bias += rng.normal(0.0, drift.yaw_bias_walk_deg_per_m * DEGREE * np.sqrt(distance) + 1e-15)
            turn += bias * distance + rng.normal(0.0, drift.yaw_noise_deg * DEGREE + 1e-15)
            c, s = np.cos(heading), np.sin(heading)
            position = position + np.array([c * forward - s * left, s * forward + c * left])
            heading = heading + turn
            step_sigma = drift.covariance_fraction * distance + drift.covariance_floor_m
            var_xy += step_sigma ** 2
            var_yaw += (abs(bias) * distance + drift.yaw_noise_deg * DEGREE) ** 2
        out[i, :2], out[i, 3] = position, heading
        covariance[i] = np.diag([var_xy, var_xy, 1e-4, 1e-4, 1e-4, var_yaw])
    return out, covariance


def drift_summary(truth: np.ndarray, odometry: np.ndarray) -> dict:
    """Distance travelled, the odometry's final and largest position error, as metres and % of distance."""
    truth, odometry = np.asarray(truth), np.asarray(odometry)
    distance = float(np.linalg.norm(np.diff(truth[:, :2], axis=0), axis=1).sum()) if len(truth) > 1 else 0.0
    error = np.linalg.norm(truth[:, :2] - odometry[:, :2], axis=1) if len(truth) else np.zeros(1)
    percent = (lambda e: round(100.0 * e / distance, 2) if distance > 0 else 0.0)
    return {"distance_m": round(distance, 2), "final_error_m": round(float(error[-1]), 3),
            "max_error_m": round(float(error.max()), 3), "final_error_percent": percent(float(error[-1])),
            "max_error_percent": percent(float(error.max()))}
