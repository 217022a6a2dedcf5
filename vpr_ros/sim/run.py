"""A simulated robot run: laps of one route in a StreetWorld, each lap a different day.

The first lap drives the route's centre line in the first appearance; every later lap drives it again
with a smooth lateral offset, yaw, pitch, roll and height wander, shifted by half a frame spacing
along the route, with other parked cars, in the next appearance. Frames are rendered lazily, so a
10 000-frame run streams to its bag without holding images in memory.
"""

import json
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np

from vpr_ros.sim.depth import DepthSensor
from vpr_ros.sim.odometry import OdometryDrift, drift_summary, drifted
from vpr_ros.sim.render import APPEARANCES, Appearance, Camera, Renderer
from vpr_ros.sim.world import StreetWorld

RUN_DEFAULTS = {
    "seed": 0,
    "frames": 200,  # per lap
    "laps": 2,
    "spacing_m": 1.0,  # along the route between frames
    "rate_hz": 4.0,  # frames per second (speed = spacing_m * rate_hz)
    "width": 640,
    "height": 480,
    "hfov_deg": 90.0,
    "camera_height_m": 1.6,
    "appearances": ("day", "dusk", "overcast"),  # lap 1, lap 2, ... (cycling); also night, rain, fog, snow
    "camera_offsets": ((0.0, 0.0, 0.0),),  # lap 1, 2, ... (cycling): height (m), lateral (m), pitch (deg)
    #                                      added to the lap's camera, as if a different robot drove it
    "lateral_m": 2.5,  # laps after the first: amplitude of the smooth lateral wander
    "yaw_deg": 15.0,  # ... heading wander
    "pitch_deg": 2.0,
    "roll_deg": 2.0,
    "height_m": 0.15,
    "depth": True,  # also a depth image per frame, aligned to the colour one, as a depth camera measures it
    "lap_gap_s": 10.0,  # pause between laps in the stamps
    "odometry_drift": 1.0,  # /odom drifts (sim/odometry.py): a factor on OdometryDrift's defaults, or its fields;
    #                         0: /odom is the truth (as before). The truth is always on /ground_truth.
    "start_s": 1_700_000_000,  # stamp of the first frame (seconds)
}


@dataclass
class SimFrame:
    """One rendered frame with its ground truth."""

    lap: int  # 0-based
    index: int  # within the lap
    stamp_ns: int
    pose: np.ndarray  # 7: x y z qx qy qz qw of the camera body (x forward, y left, z up) in the world
    rpy: np.ndarray  # 3: roll, pitch, yaw (radians)
    route_s: float  # arc length along the route (m)
    image: np.ndarray  # H x W x 3 uint8 RGB
    depth: np.ndarray | None = None  # H x W uint16 millimetres (0: no reading), aligned to image; None: off
    true_depth: np.ndarray | None = None  # H x W float32 exact optical-axis depth (m, inf: sky); None: off
    odometry: np.ndarray | None = None  # 7: the drifting odometry's pose of the body in its `odom` frame
    odometry_covariance: np.ndarray | None = None  # 6 x 6, geometry_msgs order, as the Odometry message carries it


def quaternion_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """ZYX Euler angles -> (x, y, z, w)."""
    cr, sr, cp, sp, cy, sy = (np.cos(roll / 2), np.sin(roll / 2), np.cos(pitch / 2), np.sin(pitch / 2),
                              np.cos(yaw / 2), np.sin(yaw / 2))
    return np.array([sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
                     cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy])


def _wander(rng, s: np.ndarray, amplitude: float, length: float) -> np.ndarray:
    """A smooth periodic function of arc length in [-amplitude, amplitude]: a few random sinusoids."""
    out = np.zeros_like(s)
    for cycles in rng.integers(2, 12, 3):
        out += np.sin(2 * np.pi * cycles * s / length + rng.uniform(0, 2 * np.pi))
    return amplitude * out / 3


class SimRun:
    """The run of a configuration: world, camera, per-lap trajectories and appearances."""

    def __init__(self, conf: dict | None = None):
        unknown = set(conf or {}) - set(RUN_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown simulation options {sorted(unknown)}; known: {sorted(RUN_DEFAULTS)}")
        self.conf = {**RUN_DEFAULTS, **(conf or {})}
        c = self.conf
        if c["frames"] < 1 or c["laps"] < 1 or c["spacing_m"] <= 0 or c["rate_hz"] <= 0:
            raise ValueError("frames >= 1, laps >= 1, spacing_m > 0 and rate_hz > 0 are required")
        unknown = [a for a in c["appearances"] if a not in APPEARANCES]
        if unknown:
            raise ValueError(f"unknown appearances {unknown}; choose from {sorted(APPEARANCES)}")
        offsets = c["camera_offsets"]
        if not offsets or any(len(o) != 3 or not np.isfinite(o).all() for o in offsets):
            raise ValueError(f"camera_offsets must be (height m, lateral m, pitch deg) triples, got {offsets}")
        if any(c["camera_height_m"] + o[0] - c["height_m"] <= 0.1 or abs(o[2]) > 30 for o in offsets):
            raise ValueError("camera_offsets must keep the camera above 0.1 m and pitch within 30 degrees")
        self.camera = Camera(c["width"], c["height"], c["hfov_deg"])
        self.world = StreetWorld(c["seed"], c["frames"] * c["spacing_m"])
        self.renderer = Renderer(self.world, self.camera)
        self.depth_sensor = DepthSensor() if c["depth"] else None
        self.drift = OdometryDrift.from_config(c["odometry_drift"])
        self._odometry = None

    @property
    def length_m(self) -> float:
        return self.world.route.length

    def appearance(self, lap: int) -> Appearance:
        names = self.conf["appearances"]
        return APPEARANCES[names[lap % len(names)]]

    def camera_offset(self, lap: int) -> tuple[float, float, float]:
        """The lap's camera offset: height (m), lateral (m, left positive), pitch (degrees, down positive)."""
        offsets = self.conf["camera_offsets"]
        return tuple(float(v) for v in offsets[lap % len(offsets)])

    def trajectory(self, lap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stamps (N, ns), poses (N x 6: x y z yaw pitch roll) and route arc lengths (N) of a lap."""
        c, route = self.conf, self.world.route
        n = c["frames"]
        s = (np.arange(n) + (0.5 if lap > 0 else 0.0)) * c["spacing_m"]
        xy, heading = route.at(s)
        pose = np.zeros((n, 6))
        pose[:, 2] = c["camera_height_m"]
        if lap > 0:
            rng = np.random.default_rng([c["seed"], 2, lap])
            lateral = _wander(rng, s, c["lateral_m"], route.length)
            xy = route.offset(s, lateral)
            heading = heading + np.radians(_wander(rng, s, c["yaw_deg"], route.length))
            pose[:, 4] = np.radians(_wander(rng, s, c["pitch_deg"], route.length))
            pose[:, 5] = np.radians(_wander(rng, s, c["roll_deg"], route.length))
            pose[:, 2] += _wander(rng, s, c["height_m"], route.length)
        height, lateral_offset, pitch = self.camera_offset(lap)
        if lateral_offset:
            xy = xy + lateral_offset * np.stack([-np.sin(heading), np.cos(heading)], 1)
        pose[:, 2] += height
        pose[:, 4] += np.radians(pitch)
        pose[:, :2], pose[:, 3] = xy, heading
        lap_ns = int((n / c["rate_hz"] + c["lap_gap_s"]) * 1e9)
        stamps = (int(c["start_s"] * 1e9) + lap * lap_ns + (np.arange(n) * 1e9 / c["rate_hz"]).astype(np.int64))
        return stamps, pose, s

    def odometry(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per lap: the drifting odometry's poses (N x 6: x y z yaw pitch roll) and pose covariances (N x 6 x 6),
        integrated over the whole run in stamp order (lap after lap, the pause between them included)."""
        if self._odometry is None:
            truth = [self.trajectory(lap)[1] for lap in range(self.conf["laps"])]
            poses, covariances = drifted(np.concatenate(truth), self.drift, [self.conf["seed"], 6])
            cut = np.cumsum([len(t) for t in truth])[:-1]
            self._odometry = (np.split(poses, cut), np.split(covariances, cut))
        return self._odometry

    def drift_summary(self) -> dict:
        """How far the odometry drifted over the run (run.json)."""
        truth = np.concatenate([self.trajectory(lap)[1] for lap in range(self.conf["laps"])])
        return drift_summary(truth, np.concatenate(self.odometry()[0]))

    def frames(self, lap: int) -> Iterator[SimFrame]:
        """Render a lap's frames in order."""
        if not 0 <= lap < self.conf["laps"]:
            raise ValueError(f"lap {lap} does not exist; the run has {self.conf['laps']} laps")
        look = self.appearance(lap)
        cars = self.world.cars(lap)
        stamps, poses, s = self.trajectory(lap)
        odometry, odometry_covariance = (part[lap] for part in self.odometry())
        for i, (stamp, pose) in enumerate(zip(stamps, poses)):
            x, y, z, yaw, pitch, roll = pose
            rng = np.random.default_rng([self.conf["seed"], 3, lap, i])
            pose7 = np.concatenate([[x, y, z], quaternion_from_rpy(roll, pitch, yaw)])
            if self.depth_sensor is None:
                image, depth, true_depth = self.renderer.render(pose, look, cars, rng), None, None
            else:
                image, true_depth = self.renderer.render(pose, look, cars, rng, with_depth=True)
                depth_rng = np.random.default_rng([self.conf["seed"], 4, lap, i])  # the colour noise stays as it was
                depth = self.depth_sensor.measure(true_depth, self.camera.focal, depth_rng)
            ox, oy, oz, oyaw, opitch, oroll = odometry[i]
            odometry7 = np.concatenate([[ox, oy, oz], quaternion_from_rpy(oroll, opitch, oyaw)])
            yield SimFrame(lap, i, int(stamp), pose7, np.array([roll, pitch, yaw]), float(s[i]), image, depth,
                           true_depth, odometry7, odometry_covariance[i])

    def describe(self) -> dict:
        """The run's configuration and derived facts, for run.json."""
        c = self.conf
        return {"config": json.loads(json.dumps(c)),  # tuples as lists, as run.json reads back
                "route_length_m": self.length_m, "speed_mps": c["spacing_m"] * c["rate_hz"],
                "camera": {"width": self.camera.width, "height": self.camera.height, "hfov_deg": self.camera.hfov_deg,
                           "K": self.camera.K.tolist()},
                "laps": [{"lap": lap + 1, "appearance": asdict(self.appearance(lap)),
                          "camera_offset": dict(zip(("height_m", "lateral_m", "pitch_deg"), self.camera_offset(lap)))}
                         for lap in range(c["laps"])],
                "depth_sensor": asdict(self.depth_sensor) if self.depth_sensor is not None else None,
                "odometry_drift": {**asdict(self.drift), **self.drift_summary()},
                "walls": int(len(self.world.walls.a)), "textures": len(self.world.textures)}
