"""What an accepted hypothesis means for a pose graph (core.pipeline.constraints): the loop-closure constraint the
node publishes and the covariance of the localized pose, without ROS."""

import math

import numpy as np
import pytest

from vpr_ros.core.pipeline.constraints import UNKNOWN_VARIANCE, loop_constraint, pose_covariance, quaternion_xyzw
from vpr_ros.core.pipeline.results import Hypothesis, PlaceResult
from vpr_ros.core.matching.geometry import Verification


def rotation_z(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def place(key: int, pose=None, probability=float("nan"), verification=None) -> PlaceResult:
    return PlaceResult(Hypothesis(key, 0, 0.8, key * 10**9, pose, None, f"frame{key}"), 0,
                       verification=verification, probability=probability)


@pytest.mark.parametrize("theta", [0.0, 0.3, -1.2, math.pi - 1e-6])
def test_quaternion_of_a_rotation_about_z(theta):
    q = quaternion_xyzw(rotation_z(theta))
    want = np.array([0.0, 0.0, math.sin(theta / 2), math.cos(theta / 2)])
    assert np.allclose(q, want, atol=1e-6) or np.allclose(q, -want, atol=1e-6)
    assert np.linalg.norm(q) == pytest.approx(1.0)


def test_verified_rotation_gets_a_variance_that_shrinks_with_inliers():
    def verified(inliers):
        return Verification(True, "essential", inliers, 0.6, np.ones(inliers, bool), "",
                            rotation_z(0.2), np.array([1.0, 0.0, 0.0]))

    few, many = (loop_constraint(place(3, verification=verified(n)), "xfeat-mnn") for n in (25, 400))
    assert few.method == "essential" and few.inlier_count == 25 and "xfeat-mnn, essential, 25 inliers" in few.detail
    assert np.allclose(few.rotation_xyzw, quaternion_xyzw(rotation_z(0.2)))
    assert np.allclose(few.translation, [1.0, 0.0, 0.0])
    assert few.covariance[3, 3] == pytest.approx(math.radians(1.0) ** 2 * 100 / 25)
    assert many.covariance[3, 3] < few.covariance[3, 3]
    assert np.all(np.diag(few.covariance)[:3] == UNKNOWN_VARIANCE), "the translation's scale is unknown"
    assert np.count_nonzero(few.covariance - np.diag(np.diag(few.covariance))) == 0


def test_unverified_and_global_only_closures_constrain_nothing():
    for verification in (None, Verification.failed(12, "too few inliers")):
        c = loop_constraint(place(7, verification=verification), None)
        assert c.method == "global_descriptor" and np.allclose(c.rotation_xyzw, [0, 0, 0, 1])
        assert np.all(np.diag(c.covariance) == UNKNOWN_VARIANCE) and not c.translation.any()


def test_pose_covariance_widens_with_doubt_among_distant_hypotheses():
    pose = lambda x: (x, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # noqa: E731
    sure = pose_covariance([place(0, pose(0.0), 0.99), place(1, pose(30.0), 0.01)], 2.0)
    doubt = pose_covariance([place(0, pose(0.0), 0.5), place(1, pose(30.0), 0.5)], 2.0)
    uncalibrated = pose_covariance([place(0, pose(0.0)), place(1, pose(30.0))], 2.0)
    assert np.allclose(uncalibrated[:3, :3], 4.0 * np.eye(3))
    assert doubt[0, 0] > sure[0, 0] > 4.0 and doubt[1, 1] == pytest.approx(4.0)
    for cov in (sure, doubt, uncalibrated):
        assert np.all(np.diag(cov)[3:] == UNKNOWN_VARIANCE), "the map frame's orientation is not the query's"
        assert np.all(np.linalg.eigvalsh(cov) > 0)


def test_finish_puts_the_constraint_and_the_localised_pose_into_the_result_once():
    from vpr_ros.core.pipeline.constraints import finish
    from vpr_ros.core.pipeline.results import FrameResult

    pose = (1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    result = FrameResult(0, 10**9, places=[place(3, pose, 0.95), place(4, (9.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0), 0.05)])
    finish(result, "xfeat-mnn", None, 2.0)
    assert result.constraint is None and result.localized is None  # no loop closure, nothing to answer
    result.loop = result.places[0]
    finish(result, "xfeat-mnn", None, 2.0)
    assert result.constraint.method == "global_descriptor" and not result.constraint.scale_known
    assert not result.localized.metric and np.allclose(result.localized.pose, pose)
    np.testing.assert_allclose(result.localized.covariance, pose_covariance(result.places, 2.0))
    unposed = FrameResult(1, 2 * 10**9, places=[place(5)])
    unposed.loop = unposed.places[0]
    finish(unposed, None, None, 2.0)
    assert unposed.constraint is not None and unposed.localized is None  # no map pose: no vpr/pose
