"""Relocalization for Nav2's AMCL: the policy in the core (when, which pose, never from a doubtful answer) and
the node in a real graph: vpr_localizer started as its console script, a simulated run with depth replayed
into it, and a fake AMCL publishing amcl_pose whose covariance grows."""

import math
import subprocess
import time

import numpy as np
import pytest

from vpr_ros.core.matching.geometry import Verification
from vpr_ros.core.matching.transforms import compose, inverse, pose_matrices
from vpr_ros.core.pipeline.relocalization import (RelocalizationSettings, Relocalizer, RobotLocalization,
                                                  planar_pose)
from vpr_ros.core.pipeline.results import FrameResult, Hypothesis, LocalizedPose, PlaceResult

MOUNT = np.array([0.2, 0.0, 0.5, -0.5, 0.5, -0.5, 0.5])  # optical frame: z forward, x right, y down on the body


def camera_pose(x, y, yaw):
    """The camera's pose for a body at (x, y, yaw) with MOUNT."""
    body = np.array([x, y, 0.0, 0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)])
    return compose(body, MOUNT)


def answer(x=3.0, y=4.0, yaw=0.5, probability=0.97, verified=True, metric=True, stamp_s=1) -> FrameResult:
    hypothesis = Hypothesis(7, 0, 0.8, 0, (x, y, 0.0, 0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)), None, "")
    verification = Verification(verified, "essential", 80, 0.5, np.ones(160, bool))
    place = PlaceResult(hypothesis, 0, verification=verification, probability=probability)
    result = FrameResult(0, stamp_s * 10**9, places=[place], loop=place)
    covariance = np.diag([0.01, 0.01, 0.01, 1e-4, 1e-4, 1e-4])
    result.localized = (LocalizedPose(camera_pose(x, y, yaw), covariance, True) if metric else
                        LocalizedPose(np.array(hypothesis.pose), np.diag([4.0, 4.0, 4.0, 1e6, 1e6, 1e6]), False))
    return result


def robot(x=3.0, y=4.0, yaw=0.5, std=0.1) -> RobotLocalization:
    return RobotLocalization(x, y, yaw, std, 5.0, 0.0)


def test_the_planar_pose_is_the_body_with_the_lever_arm_in_its_covariance():
    pose = planar_pose(answer(1.0, -2.0, 2.0), MOUNT)
    assert (pose.x, pose.y, pose.yaw) == pytest.approx((1.0, -2.0, 2.0), abs=1e-9)
    assert pose.metric and pose.map_key == 7
    # the rotation's doubt moves the body through the 0.5 m lever arm: more position doubt than the camera's
    assert pose.covariance[0, 0] + pose.covariance[1, 1] > 0.02
    assert np.allclose(pose.covariance, pose.covariance.T) and np.all(np.linalg.eigvalsh(pose.covariance) > 0)
    assert planar_pose(answer(metric=True), None) is None  # a camera pose without the mounting: no body pose
    plain = planar_pose(answer(5.0, 6.0, 1.0, metric=False), None)  # the map frame's stored body pose
    assert (plain.x, plain.y, plain.yaw) == pytest.approx((5.0, 6.0, 1.0)) and plain.covariance[5, 5] == 1e6


def test_nothing_doubtful_is_ever_published_however_lost_the_robot_is():
    policy = Relocalizer(RelocalizationSettings(require_metric=True), MOUNT)
    policy.update_robot(robot(std=5.0))
    policy.request(0.0, 100.0)
    for bad in (answer(verified=False), answer(probability=0.5), answer(probability=float("nan")),
                answer(metric=False)):
        assert policy.offer(bad, 1.0) is None
        assert policy.confident(bad)[1]  # and says why
    no_loop = answer()
    no_loop.loop = None
    assert policy.offer(no_loop, 1.0) is None
    assert policy.offer(answer(), 1.0).trigger == "request"  # the first confident one answers the request


def test_it_publishes_when_amcl_is_doubtful_or_disagrees_and_never_while_amcl_is_confident():
    policy = Relocalizer(RelocalizationSettings(), MOUNT)
    assert policy.offer(answer(), 0.0) is None  # no AMCL at all: only requests and on_start
    policy.update_robot(robot())
    assert all(policy.offer(answer(stamp_s=t), float(t)) is None for t in range(20))  # confident and agreeing
    policy.update_robot(robot(std=1.5))  # AMCL's covariance grew
    first = policy.offer(answer(), 20.0)
    assert first.trigger == "doubtful" and "1.50 m" in first.reason
    assert policy.offer(answer(), 21.0) is None  # cooldown: AMCL converges from our pose first
    assert policy.offer(answer(), 31.0).trigger == "doubtful"  # still lost after the cooldown: again
    policy.update_robot(robot(x=20.0))  # kidnapped: AMCL is confident, 17 m away from every answer
    assert [policy.offer(answer(), 42.0 + t) is None for t in range(3)] == [True, True, False]
    assert policy.last.trigger == "disagree" and "3 confident answers" in policy.last.reason
    policy.update_robot(robot(x=20.0))
    assert policy.offer(answer(), 60.0) is None and policy.offer(answer(x=20.0), 61.0) is None
    assert policy.disagreeing == 0  # an agreeing answer resets the count
    started = Relocalizer(RelocalizationSettings(on_start=True), MOUNT)
    started.activated()
    assert started.offer(answer(), 0.0).trigger == "on_start" and started.offer(answer(), 0.1) is None


# ---- the node ----------------------------------------------------------------------------------------

rclpy = pytest.importorskip("rclpy")
from test_metric_node import _depth_16uc1, depth_run, lap_inputs  # noqa: E402,F401 (fixture)
from test_node import MSGS, RELIABLE, image_msg, listen, needs_interfaces, node_process  # noqa: E402
from test_node_robot import call, console_script, params_file  # noqa: E402
from conftest import spin_until  # noqa: E402
from vpr_ros.ros.relocalize import yaw_of  # noqa: E402


@pytest.fixture(scope="module")
def calibrated_map(depth_run, tmp_path_factory):
    """The depth run's lap-1 map with keypoint depths and a calibrator for the shipped matcher."""
    from vpr_ros.core.build.uncertainty_training import train_uncertainty
    from vpr_ros.core.map.store import VPRMap
    from vpr_ros.core.matching.geometry import GeometricVerifier
    from vpr_ros.core.matching.reranker import Reranker

    vpr_map = VPRMap.load(depth_run / "depth_map")
    vpr_map.uncertainty = train_uncertainty(vpr_map, {"epochs": 3, "views": 2, "positive_distance_m": 2.0},
                                            [Reranker("xfeat-mnn", GeometricVerifier())])
    return vpr_map.save(tmp_path_factory.mktemp("reloc") / "calibrated")


@pytest.mark.slow
@needs_interfaces
def test_a_fake_amcl_losing_track_gets_one_initial_pose_near_the_truth(depth_run, calibrated_map, tmp_path):
    """Lap 2 replayed into the node with its depth (shipped parameters but the topics): while the fake AMCL is
    confident at the truth, nothing goes to initialpose; once its covariance grows, exactly one initial pose
    arrives within 2 s of the first confident answer, inside 0.5 m and 10 degrees of the true base_link pose,
    with a covariance that admits that error. vpr/relocalize then answers with the next confident frame."""
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from sensor_msgs.msg import CameraInfo, Image
    from std_srvs.srv import Trigger

    table, load, depth, info, optical = lap_inputs(depth_run)
    file = params_file(tmp_path, map_path=str(calibrated_map), image_topic="/robot/image",
                       camera_info_topic="/robot/camera_info", depth_topic="/robot/depth", qos_reliability="reliable",
                       queue_size=10)
    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        loops = listen(probe, MSGS.LoopClosure, "vpr/loop_closure")
        initial = listen(probe, PoseWithCovarianceStamped, "initialpose")
        arrivals = {"loops": [], "initial": []}
        for name, kind, topic in (("loops", MSGS.LoopClosure, "vpr/loop_closure"),
                                  ("initial", PoseWithCovarianceStamped, "initialpose")):
            probe.create_subscription(kind, topic, lambda m, name=name: arrivals[name].append((time.monotonic(), m)),
                                      RELIABLE)
        pubs = {name: probe.create_publisher(kind, topic, RELIABLE) for name, kind, topic in (
            ("image", Image, "/robot/image"), ("depth", Image, "/robot/depth"),
            ("info", CameraInfo, "/robot/camera_info"), ("amcl", PoseWithCovarianceStamped, "amcl_pose"))}
        assert spin_until(executor, lambda: all(p.get_subscription_count() for p in pubs.values()), 60), \
            "the node did not come up"

        def amcl(i: int, std: float) -> None:
            msg = PoseWithCovarianceStamped()
            msg.header.frame_id = "map"
            x, y, z, qx, qy, qz, qw = table.pose[i]
            msg.pose.pose.position.x, msg.pose.pose.position.y = float(x), float(y)
            o = msg.pose.pose.orientation
            o.x, o.y, o.z, o.w = float(qx), float(qy), float(qz), float(qw)
            msg.pose.covariance = np.diag([std**2, std**2, 0.0, 0.0, 0.0, 0.05]).ravel().tolist()
            pubs["amcl"].publish(msg)

        def send(i: int) -> float:
            """Frame i of lap 2 with its camera info and depth; returns when its hypotheses arrived."""
            stamp = int(table.stamp_ns[i])
            info.header.stamp.sec, info.header.stamp.nanosec = divmod(stamp, 10**9)
            pubs["info"].publish(info)
            pubs["depth"].publish(_depth_16uc1(depth(stamp), stamp, optical))
            spin_until(executor, lambda: False, 0.1)
            image = image_msg(load(table.sources[i]), stamp)
            image.header.frame_id = optical
            pubs["image"].publish(image)
            assert spin_until(executor, lambda: any(_ns(h.header.stamp) == stamp for h in hyps), 60), f"frame {i}"
            return time.monotonic()

        for i in range(12, 18):  # AMCL confident at the truth (the dusk lap's confident answers start near 15)
            amcl(i, 0.1)
            spin_until(executor, lambda: False, 0.1)
            send(i)
        spin_until(executor, lambda: False, 0.5)
        assert not initial, "an initial pose while AMCL was confident"
        confident = [m for m in loops if m.probability >= 0.9 and m.translation_scale_known]
        assert confident, [(m.probability, m.scale_note) for m in loops]

        phase_b = time.monotonic()
        for i in range(18, len(table)):  # AMCL loses track: its covariance grows past relocalize_max_std_m
            amcl(i, 1.0 + 0.5 * (i - 17))
            spin_until(executor, lambda: False, 0.1)
            send(i)
        spin_until(executor, lambda: False, 2.0)
        lost = [(t, m) for t, m in arrivals["loops"] if t > phase_b and m.probability >= 0.9
                and m.translation_scale_known]
        assert lost, "no confident answer while AMCL was lost"
        assert len(initial) == 1, len(initial)  # one: the cooldown lets AMCL converge from it
        first_time, first = lost[0]
        assert _ns(initial[0].header.stamp) == _ns(first.query_stamp)  # from the first confident answer
        assert arrivals["initial"][0][0] - first_time < 2.0
        pose = initial[0]
        i = int(np.flatnonzero(table.stamp_ns == _ns(pose.header.stamp))[0])
        truth = table.pose[i]
        error = math.hypot(pose.pose.pose.position.x - truth[0], pose.pose.pose.position.y - truth[1])
        rotation, _ = pose_matrices(truth)
        yaw_error = math.degrees(abs(math.remainder(
            yaw_of(pose.pose.pose.orientation) - math.atan2(rotation[1, 0], rotation[0, 0]), 2 * math.pi)))
        print(f"initial pose {error:.3f} m, {yaw_error:.2f} deg from the truth; "
              f"{arrivals['initial'][0][0] - first_time:.2f} s after the answer")
        assert pose.header.frame_id == "map" and error < 0.5 and yaw_error < 10.0, (error, yaw_error)
        cov = np.asarray(pose.pose.covariance).reshape(6, 6)
        assert 0 < cov[0, 0] < 1.0 and 0 < cov[5, 5] < math.radians(10) ** 2, np.diag(cov)

        client_result = {}
        client = probe.create_client(Trigger, "vpr/relocalize")
        assert spin_until(executor, client.service_is_ready, 30)
        spin_until(executor, lambda: False, 1.0)  # the response path's discovery (test_lifecycle.Manager)
        future = client.call_async(Trigger.Request())
        amcl(len(table) - 1, 0.05)  # AMCL confident again: only the request publishes
        for i in range(14, 22):
            send(i)
            if future.done():
                break
        assert spin_until(executor, future.done, 15), "vpr/relocalize did not answer"
        client_result = future.result()
        assert client_result.success and "published on initialpose" in client_result.message, client_result.message
        assert len(initial) == 2
    assert ended["returncode"] == 0, ended["output"]
    assert "relocalization (doubtful:" in ended["output"] and "relocalization (request:" in ended["output"]


@pytest.mark.slow
def test_relocalize_without_confident_answers_fails_after_its_timeout(calibrated_map, tmp_path):
    """No frames: vpr/relocalize says so after relocalize_timeout_s and publishes nothing; the executor keeps
    serving meanwhile (get_state answers while the request waits)."""
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from lifecycle_msgs.srv import GetState
    from std_srvs.srv import Trigger

    file = params_file(tmp_path, map_path=str(calibrated_map), relocalize_timeout_s=3.0)
    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        initial = listen(probe, PoseWithCovarianceStamped, "initialpose")
        client, state = probe.create_client(Trigger, "vpr/relocalize"), probe.create_client(GetState,
                                                                                           "vpr_localizer/get_state")
        assert spin_until(executor, lambda: client.service_is_ready() and state.service_is_ready(), 60)
        spin_until(executor, lambda: False, 1.0)  # the response path's discovery (test_lifecycle.Manager)
        start = time.monotonic()
        future = client.call_async(Trigger.Request())
        spin_until(executor, lambda: False, 0.5)
        asked = state.call_async(GetState.Request())
        assert spin_until(executor, asked.done, 2.0) and not future.done()  # answered while relocalize waits
        assert asked.result().current_state.label == "active"
        assert spin_until(executor, future.done, 10)
        assert 2.5 < time.monotonic() - start < 8.0
        assert not future.result().success and "no confident answer within 3 s" in future.result().message
        assert not initial
    assert ended["returncode"] == 0, ended["output"]


def _ns(stamp) -> int:
    return stamp.sec * 10**9 + stamp.nanosec
