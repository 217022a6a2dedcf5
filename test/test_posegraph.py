"""The reference pose-graph back-end (core/posegraph), without ROS: a LoopClosure's camera-frame pose and
covariance carried into the body frame (checked by sampling), and a drifting two-lap trajectory closed by
noisy closures, with and without false ones (work in progress, issue 40)."""

import cv2
import gtsam
import numpy as np
import pytest

from vpr_ros.core.matching.transforms import pose7
from vpr_ros.core.posegraph.factors import body_relative, matrix
from vpr_ros.core.posegraph.graph import GraphSettings, PoseGraph

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


def two_laps(seed: int, keyframes_per_lap: int = 80, side_m: float = 20.0):
    """True body poses around a square, twice, and odometry with a 2 % scale error and a yaw-rate bias."""
    rng = np.random.default_rng(seed)
    perimeter = 4 * side_m
    truth, odometry = [], []
    heading, odo, odo_heading = 0.0, np.zeros(3), 0.0
    previous = None
    for i in range(2 * keyframes_per_lap):
        s = (i % keyframes_per_lap) * perimeter / keyframes_per_lap
        leg, along = int(s // side_m), s % side_m
        corners = [np.array([0, 0]), np.array([side_m, 0]), np.array([side_m, side_m]), np.array([0, side_m])]
        direction = (corners[(leg + 1) % 4] - corners[leg]) / side_m
        xy = corners[leg] + along * direction
        heading = np.arctan2(direction[1], direction[0])
        pose = matrix(rotation([0, 0, heading]), np.array([xy[0], xy[1], 0.0]))
        if previous is not None:
            step = np.linalg.inv(previous) @ pose
            distance = np.linalg.norm(step[:3, 3])
            yaw = np.arctan2(step[1, 0], step[0, 0]) + 0.004 * distance + rng.normal(0, 0.002)
            odo_heading += yaw
            odo = odo + matrix(rotation([0, 0, odo_heading - yaw]), np.zeros(3))[:3, :3] @ (step[:3, 3] * 1.02)
        truth.append(pose)
        odometry.append(matrix(rotation([0, 0, odo_heading]), odo.copy()))
        previous = pose
    return truth, odometry


def closures(truth, keyframes_per_lap: int, every: int, rng, false_share: float = 0.0):
    """(query, match, T_query_match in the camera frame, covariance) of lap 2 against lap 1, noisy as the node's
    metric closures (5 cm, 0.5 deg); `false_share` of them replaced by wrong pairs with the same covariance."""
    covariance = np.diag([0.05 ** 2] * 3 + [np.radians(0.5) ** 2] * 3)
    inverse_c = np.linalg.inv(CAMERA_IN_BODY)
    out = []
    for q in range(keyframes_per_lap, 2 * keyframes_per_lap, every):
        m = q - keyframes_per_lap
        if rng.random() < false_share:
            m = int((m + keyframes_per_lap // 2 + rng.integers(-5, 5)) % keyframes_per_lap)  # another place
            T = matrix(rotation(rng.normal(0, 0.05, 3)), rng.normal(0, 0.5, 3))  # looks plausible
        else:
            T = inverse_c @ np.linalg.inv(truth[q]) @ truth[m] @ CAMERA_IN_BODY
            noise = rng.multivariate_normal(np.zeros(6), covariance)
            T = matrix(rotation(noise[3:]) @ T[:3, :3], T[:3, 3] + noise[:3])
        out.append((q, m, T, covariance))
    return out


def run(truth, odometry, loops, settings=None) -> tuple[float, float]:
    """(ATE RMSE of the odometry, of the optimised trajectory), metres."""
    graph = PoseGraph(settings)
    stamps = [(i + 1) * 10**9 for i in range(len(truth))]
    pending = {q: (m, T, c) for q, m, T, c in loops}
    for i, pose in enumerate(odometry):
        graph.add_odometry(stamps[i], pose7(pose[:3, :3], pose[:3, 3]))
        if i in pending:
            m, T, c = pending[i]
            assert graph.add_loop(stamps[i], stamps[m], T, c, CAMERA_IN_BODY) == ""
    _, optimised = graph.trajectory()
    true_xyz = np.array([p[:3, 3] for p in truth])
    ate = lambda xyz: float(np.sqrt(np.mean(np.sum((xyz - true_xyz) ** 2, axis=1))))  # noqa: E731
    return ate(np.array([p[:3, 3] for p in odometry])), ate(optimised[:, :3])


@pytest.mark.xfail(reason="work in progress (issue 40): on this two-lap square (2 % scale, 0.23 deg/m yaw bias, "
                          "4.3 m odometry ATE) plain least squares reaches 0.62 m (7x) and a Cauchy kernel at 3 "
                          "sigma of the closure's own covariance rejects the true closures (3.35 m): the kernel "
                          "must see the innovation covariance (closure plus odometry between its keyframes)",
                   strict=True)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_closures_remove_the_drift_and_false_ones_do_not_bend_the_graph(seed):
    truth, odometry = two_laps(seed)
    rng = np.random.default_rng(100 + seed)
    odometry_ate, clean = run(truth, odometry, closures(truth, 80, 6, rng))
    assert clean < odometry_ate / 10, (odometry_ate, clean)
    polluted = closures(truth, 80, 6, np.random.default_rng(200 + seed), false_share=0.2)
    _, robust = run(truth, odometry, polluted)
    _, plain = run(truth, odometry, polluted, GraphSettings(kernel="none"))
    assert robust < max(1.25 * clean, 0.1) and plain > robust, (clean, robust, plain)


def test_closures_and_fixes_far_from_every_keyframe_are_refused_with_the_reason():
    graph = PoseGraph()
    assert graph.add_loop(10**9, 2 * 10**9, np.eye(4), np.eye(6)) == "no odometry keyframe yet"
    for i in range(3):
        graph.add_odometry((i + 1) * 10**9, [i, 0, 0, 0, 0, 0, 1])
    why = graph.add_loop(10 * 10**9, 10**9, np.eye(4), np.eye(6) * 0.01)
    assert why.startswith("the query stamp is 7.00 s after the newest keyframe")
    assert graph.add_loop(10**9, 10**9, np.eye(4), np.eye(6) * 0.01) == "query and match are the same keyframe"
    assert "finite" in graph.add_loop(3 * 10**9, 10**9, np.eye(4), np.full((6, 6), np.nan))
    assert graph.counts.closures == 0 and sum(graph.counts.refused.values()) == 4
    with pytest.raises(ValueError, match="not after"):
        graph.add_odometry(2 * 10**9, [0, 0, 0, 0, 0, 0, 1])
