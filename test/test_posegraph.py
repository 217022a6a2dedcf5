"""The reference pose-graph back-end (core/posegraph), without ROS: a LoopClosure's camera-frame pose and
covariance carried into the body frame (checked by sampling), and a drifting two-lap trajectory closed by
noisy closures from the simulator's truth, with and without false ones, a large drift, fixes, refusals."""

import cv2
import gtsam
import numpy as np
import pytest

from vpr_ros.core.evaluation.trajectory import trajectory_error
from vpr_ros.core.matching.transforms import pose7
from vpr_ros.core.posegraph.factors import body_relative, matrix, pose_matrix
from vpr_ros.core.posegraph.graph import GraphSettings, PoseGraph
from vpr_ros.sim.closures import CAMERA_IN_BODY as MOUNTING, RunPoses, pose7s, ate, replay, simulated_closures
from vpr_ros.sim.odometry import OdometryDrift, drifted
from vpr_ros.sim.run import SimRun

CAMERA_IN_BODY = matrix(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), np.array([0.2, 0.0, 1.1]))


def _pose7(m: np.ndarray) -> np.ndarray:
    return pose7(m[:3, :3], m[:3, 3])


def rotation(rotvec) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(rotvec, np.float64))[0]


def test_the_body_frame_covariance_is_what_sampling_the_camera_frame_error_gives():
    rng = np.random.default_rng(0)
    T = matrix(rotation([0.1, -0.3, 0.2]), np.array([0.5, -0.2, 2.0]))
    a = rng.normal(size=(6, 6)) * 0.02
    covariance = a @ a.T
    body, predicted = body_relative(T, covariance, CAMERA_IN_BODY)
    np.testing.assert_allclose(body, CAMERA_IN_BODY @ T @ np.linalg.inv(CAMERA_IN_BODY), atol=1e-12)
    chol, samples = np.linalg.cholesky(covariance), []
    for _ in range(20000):  # the message's convention: R_true = exp(dtheta) R, t_true = t + dt (query camera frame)
        e = chol @ rng.normal(size=6)
        true = CAMERA_IN_BODY @ matrix(rotation(e[3:]) @ T[:3, :3], T[:3, 3] + e[:3]) @ np.linalg.inv(CAMERA_IN_BODY)
        samples.append(gtsam.Pose3.Logmap(gtsam.Pose3(body).inverse().compose(gtsam.Pose3(true))))
    empirical = np.cov(np.array(samples).T)
    assert np.abs(empirical - predicted).max() < 0.02 * np.abs(predicted).max()
    with pytest.raises(ValueError, match="finite"):
        body_relative(T, np.full((6, 6), np.nan), CAMERA_IN_BODY)


def scenario(seed: int, drift: float = 1.0, false_share: float = 0.0, false_run: int = 1, **settings):
    """(odometry ATE, optimised ATE, the graph) of a simulated 3-lap run's truth (no rendering), SE(3)-aligned."""
    poses = RunPoses.of(SimRun({"seed": seed, "frames": 160, "laps": 3, "odometry_drift": drift}))
    closures = simulated_closures(poses, np.random.default_rng([seed, 7]), overconfidence=2.0,
                                  false_share=false_share, false_run=false_run)
    graph, _ = replay(poses, closures, GraphSettings(**settings))
    return ate(poses, poses.stamps, poses.odometry), ate(poses, graph.stamps(), graph.trajectory()), graph


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closures_remove_the_drift_and_false_ones_do_not_bend_the_graph(seed):
    odometry, clean, graph = scenario(seed)
    assert clean < odometry / 10, (odometry, clean)
    assert graph.counts.closures > 40 and not graph.counts.refused
    _, polluted, graph = scenario(seed, false_share=0.2)
    assert polluted < 1.25 * clean, (clean, polluted)
    _, plain, _ = scenario(seed, false_share=0.2, kernel="none", support=0)
    assert plain > 5 * clean, (clean, plain)  # what the kernel and the support keep out
    _, runs, _ = scenario(seed, false_share=0.2, false_run=3)  # look-alike stretches that agree with one another
    assert runs < 1.25 * clean, (clean, runs)


def test_a_large_drift_is_closed_too():
    # five times the default drift: about 50 m off before the first revisit
    odometry, corrected, _ = scenario(0, drift=5.0)
    assert odometry > 10 and corrected < odometry / 10, (odometry, corrected)


def test_fixes_hold_the_graph_in_the_map_frame():
    poses = RunPoses.of(SimRun({"seed": 1, "frames": 160, "laps": 3}))
    graph = PoseGraph()
    covariance = np.diag([0.05 ** 2] * 3 + [np.radians(1) ** 2] * 3)  # vpr/pose's median error on the demo: 0.042 m
    rng = np.random.default_rng(0)
    for i, stamp in enumerate(poses.stamps):
        assert graph.add_odometry(int(stamp), poses.odometry[i], poses.odometry_covariance[i]) == ""
        if i % 8 == 0:
            fix = poses.truth[i].copy()
            fix[:3] += rng.normal(0, 0.05, 3)
            assert graph.add_fix(int(stamp), fix, covariance) == ""
    unaligned = ate(poses, poses.stamps, poses.odometry, "none")
    fixed = ate(poses, graph.stamps(), graph.trajectory(), "none")
    assert fixed < unaligned / 20, (unaligned, fixed)
    assert np.allclose(graph.correction()[:3, :3] @ graph.correction()[:3, :3].T, np.eye(3))


def test_bad_input_is_refused_with_the_reason_and_counted():
    graph = PoseGraph()
    assert graph.add_loop(10**9, 2 * 10**9, np.eye(4), np.eye(6)) == "no odometry keyframe yet"
    for i in range(6):
        assert graph.add_odometry((i + 1) * 10**9, [i, 0, 0, 0, 0, 0, 1]) == ""
    assert len(graph) == 6
    small = np.eye(6) * 0.01
    assert "from the future" in graph.add_loop(10 * 10**9, 10**9, np.eye(4), small)
    assert graph.add_loop(10**9, 10**9, np.eye(4), small) == "query and match are the same keyframe"
    assert "positive definite" in graph.add_loop(5 * 10**9, 10**9, np.eye(4), np.full((6, 6), np.nan))
    assert "positive definite" in graph.add_loop(5 * 10**9, 10**9, np.eye(4), -small)
    assert "away from every keyframe" in graph.add_loop(5 * 10**9, 10**9 - 2 * 10**9, np.eye(4), small)
    assert "direction-only" in graph.add_loop(5 * 10**9, 10**9, np.eye(4), small, scale_known=False)
    assert "not finite" in graph.add_odometry(7 * 10**9, [np.nan, 0, 0, 0, 0, 0, 1])
    assert "not a rotation" in graph.add_odometry(7 * 10**9, [6, 0, 0, 0, 0, 0, 3])
    assert "not after" in graph.add_odometry(2 * 10**9, [6, 0, 0, 0, 0, 0, 1])
    assert "unusable fix" in graph.add_fix(3 * 10**9, [0, 0, 0, 0, 0, 0, 1], np.zeros((6, 6)))
    assert graph.counts.closures == 0 and graph.counts.fixes == 0
    assert sum(graph.counts.refused.values()) == 11, graph.counts.refused
    # odometry that jumps is refused; when the next poses agree with one another, the odometry was reset
    assert "jumped" in graph.add_odometry(7 * 10**9, [500, 0, 0, 0, 0, 0, 1])
    assert "jumped" in graph.add_odometry(8 * 10**9, [501, 0, 0, 0, 0, 0, 1])
    assert graph.add_odometry(9 * 10**9, [502, 0, 0, 0, 0, 0, 1]) == "" and graph.counts.resets == 1
    assert graph.add_odometry(10 * 10**9, [503, 0, 0, 0, 0, 0, 1]) == ""
    assert graph.counts.refused["odometry jumped"] == 2 and len(graph) == 8
    stamps, trajectory = graph.stamps(), graph.trajectory()
    assert np.isfinite(trajectory).all() and stamps[-1] == 10 * 10**9
    with pytest.raises(ValueError, match="kernel"):
        GraphSettings(kernel="tukey")


def test_closures_between_two_robots_join_their_graphs():
    """Robot b drives the same streets 1.5 m to the side, its odometry from its own start (it does not know where
    it is in a's map); closures from b's frames to a's join b's chain to a's, which anchors the map frame."""
    a = RunPoses.of(SimRun({"seed": 0, "frames": 160, "laps": 2}))
    run_b = SimRun({"seed": 0, "frames": 160, "laps": 2, "camera_offsets": ((0.0, 1.5, 0.0),)})
    truth_b6 = np.concatenate([run_b.trajectory(lap)[1] for lap in range(2)])
    odometry_b6, covariance_b = drifted(truth_b6, OdometryDrift(), [99])
    start = matrix(rotation([0, 0, odometry_b6[0, 3]]), odometry_b6[0, :3])
    odometry_b = pose7s(odometry_b6)
    odometry_b = np.array([_pose7(np.linalg.inv(start) @ pose_matrix(p)) for p in odometry_b])
    truth_b, stamps_b = pose7s(truth_b6), a.stamps + 5 * 10**8
    rng, inverse_c = np.random.default_rng(5), np.linalg.inv(MOUNTING)
    closure_covariance = np.diag([0.05 ** 2] * 3 + [np.radians(0.5) ** 2] * 3)
    graph = PoseGraph()
    events = sorted([(int(s), "a", i) for i, s in enumerate(a.stamps)] + [(int(s), "b", i) for i, s in enumerate(stamps_b)])
    for stamp, robot, i in events:
        if robot == "a":
            assert graph.add_odometry(stamp, a.odometry[i], a.odometry_covariance[i], chain="a") == ""
            continue
        assert graph.add_odometry(stamp, odometry_b[i], covariance_b[i], chain="b") == ""
        if i % 6 == 0:  # the frame of a's at the same place, which a passed half a second earlier
            T = inverse_c @ np.linalg.inv(pose_matrix(truth_b[i])) @ pose_matrix(a.truth[i]) @ MOUNTING
            e = rng.multivariate_normal(np.zeros(6), closure_covariance)
            T = matrix(rotation(e[3:]) @ T[:3, :3], T[:3, 3] + e[:3])
            assert graph.add_loop(stamp, int(a.stamps[i]), T, closure_covariance, MOUNTING, query_chain="b",
                                  match_chain="a") == ""
    assert graph.chains() == ["a", "b"] and graph.counts.closures > 40
    truth = (stamps_b, truth_b)
    alone = trajectory_error(truth, (stamps_b, odometry_b), "none")["ate_rmse_m"]
    joined = trajectory_error(truth, (graph.stamps("b"), graph.trajectory("b")), "none")["ate_rmse_m"]
    assert alone > 20 and joined < 1.0, (alone, joined)  # b's path now stands in a's map frame
    corrected = graph.correction("b") @ pose_matrix(odometry_b[-1])  # T_map_odom of b puts b's newest pose right
    assert np.linalg.norm(corrected[:3, 3] - truth_b[-1, :3]) < 1.0
    assert "no odometry" in graph.add_loop(int(stamps_b[-1]), int(a.stamps[0]), np.eye(4), closure_covariance,
                                           query_chain="b", match_chain="c")
