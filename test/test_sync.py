"""What the node's input streams are worth, without ROS (core/inputs/sync.py and depth_pairing.DepthStream):
odometry freshness and validity, position priors from a pose or a GPS fix, the throttle that says each reason
at most so often, and a depth stream's answer for a frame."""

import numpy as np
import pytest

from vpr_ros.core.inputs.depth import DepthError
from vpr_ros.core.inputs.depth_pairing import DepthStream
from vpr_ros.core.inputs.sync import OdometryInput, PriorInput, Throttle

IDENTITY = [1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_odometry_is_fresh_within_its_timeout_and_refused_when_broken():
    odometry = OdometryInput(timeout_s=0.5)
    assert odometry.fresh(10.0) == (None, "none received") and odometry.frame_id is None
    assert odometry.update(IDENTITY, "", 10.0) == "" and odometry.frame_id == "odom"  # an empty frame is odom's
    pose, why = odometry.fresh(10.4)
    assert why == "" and np.allclose(pose, IDENTITY)
    pose[0] = 99.0  # a copy: the caller cannot change what is kept
    assert odometry.fresh(10.4)[0][0] == 1.0
    assert odometry.fresh(10.6) == (None, "the last is 0.6 s old")
    assert odometry.update([np.nan, 0, 0, 0, 0, 0, 1], "odom", 11.0) == "NaN or infinite pose"
    assert odometry.update([0, 0, 0, 0, 0, 0, 2.0], "odom", 11.0) == "quaternion of norm 2.0000"
    assert odometry.fresh(11.0)[0] is None  # the refused ones did not refresh it


def test_a_pose_prior_in_another_frame_or_with_a_bad_covariance_is_refused_and_the_last_good_one_stays():
    priors = PriorInput()
    covariance = np.diag([4.0, 4.0, 1.0, 1e6, 1e6, 1e6])
    assert priors.from_pose((1.0, 2.0, 0.0), covariance.ravel(), 5, "map", "map") == ""
    assert priors.prior.position == (1.0, 2.0, 0.0) and priors.prior.sigma_m == pytest.approx(2.0)
    assert priors.from_pose((9.0, 9.0, 0.0), covariance, 6, "odom", "map") == \
        "it is in frame 'odom', the map's poses in 'map'"
    bad = covariance.copy()
    bad[0, 0] = -4.0
    assert "positive semi-definite" in priors.from_pose((9.0, 9.0, 0.0), bad, 7, "", "map")
    assert priors.prior.stamp_ns == 5  # the last good one


@pytest.mark.parametrize("status, covariance_type, position, why", [
    (-1, 2, (48.1, 11.5, 500.0), "the receiver has no fix"),
    (-2, 2, (48.1, 11.5, 500.0), "its fix status is -2 (unknown: the driver does not fill status)"),
    (0, 0, (48.1, 11.5, 500.0), "its covariance is unknown (position_covariance_type 0)"),
    (0, 2, (148.1, 11.5, 500.0), "latitude 148.1 / longitude 11.5 lie outside"),
    (0, 2, (48.1, 11.5, 500.0), ""),
])
def test_gps_priors_need_a_fix_a_covariance_and_degrees(status, covariance_type, position, why):
    priors = PriorInput()
    said = priors.from_gps(position, np.eye(3).ravel() * 9.0, covariance_type, status, 1)
    assert said.startswith(why) and (said == "") == (priors.prior is not None)
    if not said:
        assert priors.prior.kind == "gps" and priors.prior.sigma_m == pytest.approx(3.0)


def test_the_throttle_says_each_reason_once_per_period():
    throttle = Throttle(10.0)
    assert throttle.due("a", 0.0) and not throttle.due("a", 5.0) and throttle.due("b", 5.0)
    assert throttle.due("a", 10.0)
    once = Throttle(float("inf"))
    assert once.due("k", 0.0) and not once.due("k", 1e9)


def test_a_depth_stream_pairs_by_stamp_and_says_why_a_frame_has_none():
    decoded = []

    def decode(payload):
        if payload == "broken":
            raise DepthError("encoding", "depth image encoding rgb8 is not a depth encoding")
        decoded.append(payload)
        return np.ones((4, 6), np.float32)

    stream = DepthStream("/depth", tolerance_s=0.05, wait_s=0.0, decode=decode)
    got = stream.for_frame(10**9, arrived=0.0)
    assert got.depth is None and got.problem == "stale_depth" and got.note == "no depth image received on /depth"
    stream.buffer.add(10**9 + 10**7, "good")
    stream.buffer.add(3 * 10**9, "broken")
    got = stream.for_frame(10**9, arrived=0.0)
    assert got.depth.shape == (4, 6) and got.depth_K is None and got.problem == "" and decoded == ["good"]
    got = stream.for_frame(2 * 10**9, arrived=0.0)
    assert got.problem == "stale_depth" and "0.990 s older than the frame (depth_tolerance_s 0.05)" in got.note
    got = stream.for_frame(3 * 10**9, arrived=0.0)
    assert got.problem == "bad_depth" and got.note.startswith("depth image rejected: ")
    no_info = DepthStream("/depth", 0.05, 0.0, decode, intrinsics=lambda size: None)
    no_info.buffer.add(10**9, "good")
    got = no_info.for_frame(10**9, arrived=0.0)
    assert got.depth is None and got.problem == "bad_depth" and "no usable CameraInfo" in got.note
