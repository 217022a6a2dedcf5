"""The reference pose-graph back-end (core/posegraph), without ROS: a LoopClosure's camera-frame pose and
covariance carried into the body frame (checked by sampling), and a drifting two-lap trajectory closed by
noisy closures from the simulator's truth, with and without false ones, a large drift, fixes, refusals."""

import cv2
import gtsam
import numpy as np
import pytest

from vpr_ros.core.evaluation.trajectory import trajectory_error
from vpr_ros.core.posegraph.factors import body_relative, matrix, pose_matrix
from vpr_ros.core.posegraph.graph import GraphSettings, PoseGraph
from vpr_ros.sim.closures import CAMERA_IN_BODY as MOUNTING, RunPoses, ate, replay, second_robot, simulated_closures
from vpr_ros.sim.run import SimRun

CAMERA_IN_BODY = matrix(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), np.array([0.2, 0.0, 1.1]))


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


def test_fixes_place_an_odometry_that_started_elsewhere():
    """Localize mode: the odometry frame is not the map's (here the robot's odometry has drifted for two laps
    before the third, 7-11 m off); with anchor free the fixes alone place the graph in the map."""
    poses = RunPoses.of(SimRun({"seed": 0, "frames": 160, "laps": 3}))
    lap3 = poses.lap == 2
    graph = PoseGraph(GraphSettings(anchor="free"))
    covariance = np.diag([0.05 ** 2] * 3 + [np.radians(1) ** 2] * 3)
    rng = np.random.default_rng(1)
    stamps, truth, odometry = poses.stamps[lap3], poses.truth[lap3], poses.odometry[lap3]
    late = []  # as in the node: a fix comes after later odometry, the path is read in between
    for i, stamp in enumerate(stamps):
        assert graph.add_odometry(int(stamp), odometry[i], poses.odometry_covariance[lap3][i]) == ""
        if i % 7 == 3:
            fix = truth[i].copy()
            fix[:3] += rng.normal(0, 0.05, 3)
            late.append((int(stamp), fix))
        if i % 2 == 0:
            for fix_stamp, fix in late:
                assert graph.add_fix(fix_stamp, fix, covariance) == ""
            late = []
        if i % 3 == 0:
            graph.trajectory()
    unaligned = trajectory_error((stamps, truth), (stamps, odometry), "none")["ate_rmse_m"]
    fixed = trajectory_error((stamps, truth), (graph.stamps(), graph.trajectory()), "none")["ate_rmse_m"]
    assert unaligned > 5 and fixed < unaligned / 20, (unaligned, fixed)


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
    small = np.eye(6) * 0.01
    # topics arrive in any order: a closure ahead of the odometry waits for it (wait_s), then is taken
    assert graph.add_loop(10**9, 2 * 10**9, np.eye(4), small) == "" and not graph.counts.refused
    for i in range(6):
        assert graph.add_odometry((i + 1) * 10**9, [i, 0, 0, 0, 0, 0, 1]) == ""
    assert len(graph) == 6 and graph.counts.waiting == 1  # in, waiting for a closure that agrees with it
    assert graph.add_loop(8 * 10**9, 10**9, np.eye(4), small) == ""  # 2 s ahead: waits ...
    assert "from the future" in graph.add_loop(20 * 10**9, 10**9, np.eye(4), small)  # 14 s ahead: refused
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
    assert sum(graph.counts.refused.values()) == 10, graph.counts.refused
    # odometry that jumps is refused; when the next poses agree with one another, the odometry was reset
    assert "jumped" in graph.add_odometry(7 * 10**9, [500, 0, 0, 0, 0, 0, 1])
    assert "jumped" in graph.add_odometry(8 * 10**9, [501, 0, 0, 0, 0, 0, 1])
    assert graph.add_odometry(9 * 10**9, [502, 0, 0, 0, 0, 0, 1]) == "" and graph.counts.resets == 1
    assert graph.add_odometry(10 * 10**9, [503, 0, 0, 0, 0, 0, 1]) == ""
    assert graph.counts.refused["odometry jumped"] == 2 and len(graph) == 8
    # ... the closure stamped 8 s had its turn once the odometry passed it: no keyframe near 8 s (the odometry
    # jumped from 6 s to 9 s), so it is refused with the reason
    assert graph.counts.refused["closure stamp offset"] == 2 and graph.counts.waiting == 1
    stamps, trajectory = graph.stamps(), graph.trajectory()
    assert np.isfinite(trajectory).all() and stamps[-1] == 10 * 10**9
    with pytest.raises(ValueError, match="kernel"):
        GraphSettings(kernel="tukey")


def test_closures_between_two_robots_join_their_graphs():
    """Robot b drives the same streets 1.5 m to the side, its odometry from its own start (it does not know where
    it is in a's map); closures from b's frames to a's join b's chain to a's, which anchors the map frame."""
    a = RunPoses.of(SimRun({"seed": 0, "frames": 160, "laps": 2}))
    b, closures = second_robot(a, np.random.default_rng(5))
    graph, by_query = PoseGraph(), {c.query: c for c in closures}
    events = sorted([(int(s), "a", i) for i, s in enumerate(a.stamps)] + [(int(s), "b", i) for i, s in enumerate(b.stamps)])
    for stamp, robot, i in events:
        run = a if robot == "a" else b
        assert graph.add_odometry(stamp, run.odometry[i], run.odometry_covariance[i], chain=robot) == ""
        if robot == "b" and i in by_query:  # to the frame of a's at the same place, which a passed just before
            c = by_query[i]
            assert graph.add_loop(stamp, int(a.stamps[c.match]), c.relative_pose, c.covariance, MOUNTING,
                                  query_chain="b", match_chain="a") == ""
    assert graph.chains() == ["a", "b"] and graph.counts.closures > 40
    alone = trajectory_error((b.stamps, b.truth), (b.stamps, b.odometry), "none")["ate_rmse_m"]
    joined = trajectory_error((b.stamps, b.truth), (graph.stamps("b"), graph.trajectory("b")), "none")["ate_rmse_m"]
    assert alone > 20 and joined < 1.0, (alone, joined)  # b's path now stands in a's map frame ...
    relative = graph.trajectory("b")[:, :3] - graph.trajectory("a")[:, :3]  # ... beside a's, as it drove
    assert np.abs(relative - (b.truth[:, :3] - a.truth[:, :3])).max() < 0.3
    corrected = graph.correction("b") @ pose_matrix(b.odometry[-1])  # T_map_odom of b: its newest pose in the map
    np.testing.assert_allclose(corrected[:3, 3], graph.trajectory("b")[-1, :3], atol=1e-6)
    # a robot whose odometry never comes: its closure waits wait_s, then is refused with the reason
    assert graph.add_loop(int(b.stamps[-1]), int(a.stamps[0]), np.eye(4), np.eye(6) * 0.01, query_chain="b",
                          match_chain="c") == ""
    later = b.odometry[-1].copy()
    assert graph.add_odometry(int(b.stamps[-1]) + 6 * 10**9, later, b.odometry_covariance[-1], chain="b") == ""
    assert graph.counts.refused == {"waited too long": 1}
