"""Loop closures drawn from a simulated run's truth, without rendering: what a pose-graph back-end is tested and
benchmarked on before (and besides) the node's own closures.

`RunPoses.of(run)` gives every frame's stamp, true pose and drifting odometry (with its covariance), lap after
lap. `simulated_closures` picks, every few frames of the later laps, the nearest earlier frame as the match and
gives T_query_match in the query camera's optical frame with a covariance as the node publishes it (message
conventions: R_true = exp(dtheta) R, t_true = t + dt), the error drawn `overconfidence` times wider than that
covariance (the node's NEES is several times 6 today); a share of them replaced by wrong pairs (another place,
a plausible small relative pose, the same covariance).
"""

import time
from dataclasses import dataclass

import numpy as np

from vpr_ros.core.evaluation.trajectory import trajectory_error
from vpr_ros.core.matching.transforms import pose7, rotvec_to_matrix
from vpr_ros.core.posegraph.factors import pose_matrix
from vpr_ros.core.posegraph.graph import GraphSettings, PoseGraph
from vpr_ros.sim.bag_writer import OPTICAL_IN_BODY_QUATERNION
from vpr_ros.sim.odometry import OdometryDrift, drifted
from vpr_ros.sim.run import SimRun, quaternion_from_rpy

_OPTICAL = np.array(OPTICAL_IN_BODY_QUATERNION)


CAMERA_IN_BODY = pose_matrix(np.concatenate([[0.0, 0.0, 0.0], _OPTICAL]))  # the simulator's base_link -> camera_optical


@dataclass
class RunPoses:
    """Every frame of a run, lap after lap."""

    stamps: np.ndarray  # N, ns
    truth: np.ndarray  # N x 7 (x y z qx qy qz qw), map frame
    odometry: np.ndarray  # N x 7, odom frame
    odometry_covariance: np.ndarray  # N x 6 x 6, geometry_msgs order
    lap: np.ndarray  # N, 0-based
    lap_config: tuple = (0, 0, 0)  # (seed, frames per lap, laps) of the run

    @classmethod
    def of(cls, run: SimRun) -> "RunPoses":
        stamps, truth, odometry, covariance, laps = [], [], [], [], []
        odometry_poses, odometry_covariances = run.odometry()
        for lap in range(run.conf["laps"]):
            lap_stamps, poses, _ = run.trajectory(lap)
            stamps.append(lap_stamps)
            truth.append(pose7s(poses))
            odometry.append(pose7s(odometry_poses[lap]))
            covariance.append(odometry_covariances[lap])
            laps.append(np.full(len(lap_stamps), lap))
        return cls(*(np.concatenate(v) for v in (stamps, truth, odometry, covariance, laps)),
                   (run.conf["seed"], run.conf["frames"], run.conf["laps"]))


def pose7s(poses6: np.ndarray) -> np.ndarray:
    """N x 6 (x y z yaw pitch roll) -> N x 7."""
    return np.array([np.concatenate([p[:3], quaternion_from_rpy(p[5], p[4], p[3])]) for p in poses6]).reshape(-1, 7)


@dataclass
class SimulatedClosure:
    query: int  # frame index in RunPoses
    match: int
    relative_pose: np.ndarray  # 4 x 4 T_query_match, query camera optical frame
    covariance: np.ndarray  # 6 x 6, geometry_msgs order
    true: bool


def simulated_closures(poses: RunPoses, rng: np.random.Generator, every: int = 6, max_distance_m: float = 3.0,
                       translation_sigma_m: float = 0.05, rotation_sigma_deg: float = 0.5,
                       overconfidence: float = 1.0, false_share: float = 0.0,
                       min_age_s: float = 30.0, false_run: int = 1) -> list[SimulatedClosure]:
    """Closures of the later laps against earlier frames, in query order (module docstring). false_run > 1:
    wrong pairs come in runs of that many consecutive closures that agree with one another (a look-alike
    stretch matched along, as a consistent wrong sequence alignment would give)."""
    covariance = np.diag([translation_sigma_m ** 2] * 3 + [np.radians(rotation_sigma_deg) ** 2] * 3)
    inverse_c = np.linalg.inv(CAMERA_IN_BODY)
    truth = [pose_matrix(p) for p in poses.truth]
    out, wrong = [], None  # wrong: (frames left in the run, match offset, relative pose) of a false run
    for q in range(len(poses.stamps)):
        if poses.lap[q] == 0 or q % every:
            continue
        earlier = np.flatnonzero(poses.stamps < poses.stamps[q] - min_age_s * 1e9)
        if not len(earlier):
            continue
        distance = np.linalg.norm(poses.truth[earlier, :2] - poses.truth[q, :2], axis=1)
        if wrong is not None and wrong[0] > 0 and q - wrong[1] in earlier:
            left, offset, T = wrong
            m = q - offset
            if np.linalg.norm(poses.truth[m, :2] - poses.truth[q, :2]) > 15.0:
                wrong = (left - 1, offset, T)
                out.append(SimulatedClosure(q, m, T.copy(), covariance.copy(), False))
                continue
        wrong = None
        if rng.random() < false_share / max(false_run, 1):
            far = earlier[distance > 15.0]
            if not len(far):
                continue
            m = int(rng.choice(far))
            T = _rt(rng.normal(0, np.radians(5), 3), rng.normal(0, 1.0, 3))  # a look-alike: plausible, wrong
            out.append(SimulatedClosure(q, m, T, covariance.copy(), False))
            wrong = (false_run - 1, q - m, T) if false_run > 1 else None
            continue
        if distance.min() > max_distance_m:
            continue
        m = int(earlier[np.argmin(distance)])
        T = inverse_c @ np.linalg.inv(truth[q]) @ truth[m] @ CAMERA_IN_BODY
        e = rng.multivariate_normal(np.zeros(6), covariance * overconfidence ** 2)
        T = _rt(e[3:], T[:3, 3] + e[:3], T[:3, :3])
        out.append(SimulatedClosure(q, m, T, covariance.copy(), True))
    return out


def _rt(rotvec, translation, rotation=None) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rotvec_to_matrix(rotvec) @ (np.eye(3) if rotation is None else rotation)
    out[:3, 3] = translation
    return out


def replay(poses: RunPoses, closures, settings: GraphSettings, odometry_covariance: bool = True
           ) -> tuple[PoseGraph, list[float]]:
    """Feed a run's odometry and closures in stamp order; returns the graph and each closure's update time (ms).
    odometry_covariance False: the odometry comes without covariance (the graph's drift model instead)."""
    graph, times = PoseGraph(settings), []
    by_query = {}
    for c in closures:
        by_query.setdefault(c.query, []).append(c)
    for i, stamp in enumerate(poses.stamps):
        covariance = poses.odometry_covariance[i] if odometry_covariance else None
        why = graph.add_odometry(int(stamp), poses.odometry[i], covariance)
        if why:
            raise ValueError(f"odometry {i} refused: {why}")
        for c in by_query.get(i, []):
            start = time.perf_counter()
            why = graph.add_loop(int(stamp), int(poses.stamps[c.match]), c.relative_pose, c.covariance, CAMERA_IN_BODY)
            times.append((time.perf_counter() - start) * 1e3)
            if why:
                raise ValueError(f"closure {c.query} -> {c.match} refused: {why}")
    return graph, times


def ate(poses: RunPoses, stamps, trajectory, align: str = "se3") -> float:
    """evo's ATE RMSE (m) of a trajectory against the run's truth."""
    return trajectory_error((poses.stamps, poses.truth), (stamps, trajectory), align)["ate_rmse_m"]


def second_robot(a: RunPoses, rng: np.random.Generator, lateral_m: float = 1.5, every: int = 6,
                 delay_s: float = 0.5) -> tuple[RunPoses, list[SimulatedClosure]]:
    """Robot b driving a's route lateral_m to the side, delay_s behind it, its odometry (its own drift) from its
    own start: it does not know where it is in a's map. Closures from every `every`-th frame of b to the frame of
    a's at the same place (5 cm, 0.5 degree; SimulatedClosure.query indexes b, .match indexes a)."""
    seed, frames, laps = (int(v) for v in a.lap_config)
    run = SimRun({"seed": seed, "frames": frames, "laps": laps, "camera_offsets": ((0.0, lateral_m, 0.0),)})
    truth6 = np.concatenate([run.trajectory(lap)[1] for lap in range(laps)])
    odometry6, covariance = drifted(truth6, OdometryDrift(), [seed, 99])
    start = pose_matrix(pose7s(odometry6[:1])[0])
    odometry = np.array([_pose7(np.linalg.inv(start) @ pose_matrix(p)) for p in pose7s(odometry6)])
    b = RunPoses(a.stamps + int(delay_s * 1e9), pose7s(truth6), odometry, covariance, a.lap, a.lap_config)
    closure_covariance = np.diag([0.05 ** 2] * 3 + [np.radians(0.5) ** 2] * 3)
    inverse_c, closures = np.linalg.inv(CAMERA_IN_BODY), []
    for i in range(0, len(b.stamps), every):
        T = inverse_c @ np.linalg.inv(pose_matrix(b.truth[i])) @ pose_matrix(a.truth[i]) @ CAMERA_IN_BODY
        e = rng.multivariate_normal(np.zeros(6), closure_covariance)
        closures.append(SimulatedClosure(i, i, _rt(e[3:], T[:3, 3] + e[:3], T[:3, :3]), closure_covariance, True))
    return b, closures


def _pose7(m: np.ndarray) -> np.ndarray:
    return pose7(m[:3, :3], m[:3, 3])
