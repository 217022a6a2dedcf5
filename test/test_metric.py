"""Metric relative poses from depth: the depth input, the PnP estimator and its covariance on synthetic
two-view geometry of known pose, and the simulator's depth camera."""

import numpy as np
import pytest

from vpr_ros.core.inputs.depth import DepthError, check_depth, keypoint_depth, to_metres
from vpr_ros.core.matching.metric import MetricEstimator, MetricSettings, pose_error, propagate
from vpr_ros.core.matching.transforms import invert, matrix_to_rotvec, rotvec_to_matrix

K = np.array([[320.0, 0, 319.5], [0, 320.0, 239.5], [0, 0, 1]])


def two_views(rng, n=150, outliers=20, settings=MetricSettings()):
    """Points 2..15 m in front of the map camera, a query camera at a known T_query_match, and what the
    cameras measure: pixels with keypoint noise, depths with the settings' depth noise, `outliers` wrong matches."""
    z = rng.uniform(2, 15, n)
    u, v = rng.uniform(0, 640, n), rng.uniform(0, 480, n)
    X_map = np.column_stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])
    rotation, translation = rotvec_to_matrix(rng.normal(0, 0.1, 3)), rng.normal(0, 0.8, 3)
    X_query = X_map @ rotation.T + translation
    keep = X_query[:, 2] > 0.5
    X_map, X_query = X_map[keep], X_query[keep]
    query_px = X_query[:, :2] / X_query[:, 2:] * K[0, 0] + K[:2, 2]
    sigma = settings.pixel_sigma
    query_obs = query_px + rng.normal(0, sigma, query_px.shape)
    map_obs = np.column_stack([u[keep], v[keep]]) + rng.normal(0, sigma, (int(keep.sum()), 2))
    query_obs[:outliers] = rng.uniform(0, [640, 480], (outliers, 2))
    map_depth = X_map[:, 2] + rng.normal(0, 1, len(X_map)) * settings.depth_sigma(X_map[:, 2])
    query_depth = X_query[:, 2] + rng.normal(0, 1, len(X_query)) * settings.depth_sigma(X_query[:, 2])
    return query_obs, map_obs, map_depth, query_depth, rotation, translation


@pytest.mark.parametrize("side", ["map", "query", "both"])
def test_pose_and_covariance_agree_with_the_truth_over_many_pairs(side):
    """The pose is found through 13 % wrong matches and its covariance is right: the NEES of 100 pairs
    averages about 6 (the degrees of freedom), neither overconfident (>> 6) nor useless (<< 6)."""
    rng = np.random.default_rng(7)
    estimator, nees, errors = MetricEstimator(), [], []
    for _ in range(100):
        query, match, map_depth, query_depth, rotation, translation = two_views(rng)
        pose, note = estimator.estimate(query, match, K, K, (640, 480), (640, 480),
                                        map_depth if side != "query" else None,
                                        query_depth if side != "map" else None)
        assert pose is not None, note
        e = pose_error(pose.rotation, pose.translation, rotation, translation)
        nees.append(e @ np.linalg.solve(pose.covariance, e))
        errors.append(np.linalg.norm(e[:3]))
        assert pose.inlier_count >= 100 and pose.depth_from == {"both": "map and query"}.get(side, side)
    assert 4.5 <= np.mean(nees) <= 8.0, np.mean(nees)
    assert np.median(errors) < 0.03


def test_no_metric_pose_without_enough_depth_or_geometry():
    rng = np.random.default_rng(3)
    query, match, map_depth, _, _, _ = two_views(rng)
    estimator = MetricEstimator()
    pose, note = estimator.estimate(query, match, K, K, (640, 480), (640, 480))
    assert pose is None and note.startswith("no depth")
    sparse = np.full(len(map_depth), np.nan)
    sparse[:5] = map_depth[:5]
    pose, note = estimator.estimate(query, match, K, K, (640, 480), (640, 480), sparse)
    assert pose is None and "5 of" in note and "fewer than the 12" in note
    noise = rng.uniform(0, [640, 480], query.shape)  # matches that are all wrong
    pose, note = estimator.estimate(noise, match, K, K, (640, 480), (640, 480), map_depth)
    assert pose is None and ("PnP" in note or "fit the refined pose" in note), note


def test_inverse_and_propagation_are_consistent():
    rng = np.random.default_rng(0)
    rotation, translation = rotvec_to_matrix([0.3, -0.2, 0.1]), np.array([1.0, -2.0, 0.5])
    A = rng.normal(size=(6, 6))
    covariance = A @ A.T * 1e-4
    forward = propagate(covariance, rotation, translation, invert)
    back = propagate(forward, *invert(rotation, translation), invert)
    assert np.allclose(back, covariance, rtol=1e-4, atol=1e-10)
    samples = rng.multivariate_normal(np.zeros(6), covariance, 4000)  # Monte Carlo agrees with the Jacobian
    inv_r, inv_t = invert(rotation, translation)
    errors = []
    for xi in samples:
        r, t = invert(rotvec_to_matrix(xi[3:]) @ rotation, translation + xi[:3])
        errors.append(pose_error(inv_r, inv_t, r, t))
    whiten = np.linalg.inv(np.linalg.cholesky(forward))
    assert np.abs(whiten @ np.cov(np.array(errors).T) @ whiten.T - np.eye(6)).max() < 0.1
    assert np.allclose(matrix_to_rotvec(rotvec_to_matrix([1e-7, 0, 0])), [1e-7, 0, 0], atol=1e-12)


def test_depth_images_in_metres_with_their_holes():
    millimetres = np.array([[0, 1500], [65535, 2000]], np.uint16)
    metres = to_metres(millimetres, "16UC1")
    assert np.isnan(metres[0, 0]) and metres[0, 1] == pytest.approx(1.5) and metres[1, 0] == pytest.approx(65.535)
    assert to_metres(np.array([[np.nan, np.inf], [-1.0, 2.5]], np.float32), "32FC1")[1, 1] == 2.5
    assert np.isnan(to_metres(np.array([[np.nan, np.inf], [-1.0, 2.5]], np.float32), "32FC1")[0]).all()
    with pytest.raises(DepthError) as bad:
        to_metres(millimetres, "rgb8")
    assert bad.value.reason == "encoding"
    with pytest.raises(DepthError) as bad:
        check_depth(np.full((240, 320), np.nan, np.float32), (320, 240))
    assert bad.value.reason == "empty" and "0.0%" in str(bad.value)
    with pytest.raises(DepthError) as bad:
        check_depth(np.ones((240, 320), np.float32), (640, 480))
    assert bad.value.reason == "size"
    check_depth(np.ones((240, 320), np.float32), (640, 480), K, K * [[0.5], [0.5], [1]])  # with its own intrinsics


def test_keypoint_depth_skips_edges_and_holes_and_maps_a_smaller_depth_image():
    depth = np.full((480, 640), 4.0, np.float32)
    depth[:, 320:] = 12.0  # a depth edge at column 320
    depth[100:110, 100:110] = np.nan  # a hole
    noisy = depth + np.random.default_rng(0).normal(0, 0.08, depth.shape).astype(np.float32)  # 2 % noise passes
    points = np.array([[50.0, 50.0], [319.6, 200.0], [105.0, 105.0], [500.0, 400.0], [-3.0, 10.0]])
    got = keypoint_depth(noisy, points)
    assert got[0] == pytest.approx(4.0, abs=0.1) and got[3] == pytest.approx(12.0, abs=0.3)
    assert np.isnan(got[1]) and np.isnan(got[2]) and np.isnan(got[4])
    half = depth[::2, ::2]
    half_K = K.copy()
    half_K[:2] *= 0.5
    assert keypoint_depth(half, points[[0, 3]], K, half_K) == pytest.approx([4.0, 12.0])


def test_simulated_depth_is_the_geometry_of_the_image():
    """The renderer's depth of a tilted camera is the distance to the ground plane along each pixel's ray
    (exact geometry, what PnP is scored against), and the depth camera adds noise, holes and range limits."""
    from vpr_ros.sim.render import BODY_FROM_OPTICAL, rotation
    from vpr_ros.sim.run import SimRun

    run = SimRun({"frames": 12, "laps": 2, "width": 320, "height": 240})
    frame = list(run.frames(1))[7]
    roll, pitch, yaw = frame.rpy
    assert abs(pitch) + abs(roll) > 0.005  # a tilted camera: the warped depth is what is checked
    R = rotation(yaw, pitch, roll) @ BODY_FROM_OPTICAL
    h, w = frame.true_depth.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    rays = R @ (np.linalg.inv(run.camera.K) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)]))
    ground = (-frame.pose[2] / rays[2]).reshape(h, w)  # optical-axis depth of the ground plane
    on_ground = (ground > 0) & (ground < 10) & np.isfinite(frame.true_depth) & (
        np.abs(frame.true_depth - ground) < 0.2 * ground)
    assert on_ground.mean() > 0.2
    assert abs(np.median((frame.true_depth[on_ground] - ground[on_ground]) / ground[on_ground])) < 1e-3
    measured = frame.depth.astype(np.float64) / 1000
    valid = measured > 0
    assert 0.4 < valid.mean() < 0.9  # holes: sky, beyond 20 m, edges, dropouts
    assert not valid[~np.isfinite(frame.true_depth)].any() and measured.max() < 25
    near = valid & (frame.true_depth < 8)
    relative = np.abs(measured[near] - frame.true_depth[near]) / frame.true_depth[near]
    assert 0.0005 < np.median(relative) < 0.02


def test_the_three_gates_refuse_what_no_rigid_pose_explains():
    """docs/metric.md's gates, each a direction-only edge with its reason: residuals far above the modelled
    noise (variance factor over 9), two poses that each fit many matches (repeated structure), and a PnP
    rotation that contradicts the verified two-view rotation by more than 15 deg."""
    from vpr_ros.core.matching.metric import agrees_with_two_view

    rng = np.random.default_rng(11)
    estimator = MetricEstimator()
    # 1. every match 5x noisier than the model (10 px at 640 wide): no metric pose, and the reason
    noisy = MetricSettings(pixel_sigma=10.0)
    query, match, map_depth, _, _, _ = two_views(rng, outliers=0, settings=noisy)
    pose, note = estimator.estimate(query, match, K, K, (640, 480), (640, 480), map_depth)
    assert pose is None and "times the modelled noise" in note, note
    # the same geometry at the modelled noise passes
    query, match, map_depth, _, _, _ = two_views(rng, outliers=0)
    assert estimator.estimate(query, match, K, K, (640, 480), (640, 480), map_depth)[0] is not None
    # 2. two halves of the matches, each consistent with its own pose 2 m apart (identical windows along a facade)
    a = two_views(np.random.default_rng(21), n=120, outliers=0)
    b = two_views(np.random.default_rng(22), n=120, outliers=0)
    assert np.linalg.norm(a[5] - b[5]) > 0.5
    pose, note = estimator.estimate(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]), K, K, (640, 480),
                                    (640, 480), np.concatenate([a[2], b[2]]))
    assert pose is None and note.startswith("two poses") and "repeated structure" in note, note
    # 3. the two-view rotation against the PnP one
    query, match, map_depth, _, rotation, _ = two_views(rng)
    pose, _ = estimator.estimate(query, match, K, K, (640, 480), (640, 480), map_depth)
    kept, why = agrees_with_two_view(pose, rotvec_to_matrix([0, np.radians(5), 0]) @ pose.rotation, "essential")
    assert kept is pose and why == ""
    refused, why = agrees_with_two_view(pose, rotvec_to_matrix([0, np.radians(20), 0]) @ pose.rotation, "essential")
    assert refused is None and why == ("the PnP rotation and the two-view (essential) rotation disagree by 20 deg: "
                                       "no metric pose"), why
