"""Several robots on one map through a real ROS graph: namespaced vpr_localizer processes started by their
console script with one params file, each answering with its robot id; a position prior from a topic; a
slam session appended to the map it started from by vpr/save_map."""

import shutil

import numpy as np
import pytest

from conftest import spin_until
from test_node import MSGS, RELIABLE, image_msg, images, listen, map_dir, node_processes as processes  # noqa: F401
from test_node_robot import call, console_script, params_file

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

pytestmark = [pytest.mark.skipif(MSGS is None, reason="vpr_ros_interfaces is not built"), pytest.mark.slow]


def _prior(x: float, stamp_s: int) -> PoseWithCovarianceStamped:
    msg = PoseWithCovarianceStamped()
    msg.header.frame_id, msg.header.stamp.sec = "map", stamp_s
    msg.pose.pose.position.x, msg.pose.pose.orientation.w = x, 1.0
    msg.pose.covariance = (np.eye(6) * 4.0).ravel().tolist()  # 2 m: the 10 m floor applies
    return msg


def test_two_namespaced_robots_share_one_map(map_dir, images, tmp_path):
    """robot1 takes its id from its namespace, robot2 from robot_id and searches near its prior; each answers
    on its own namespace's topics with its own id and the map frame's session."""
    file = params_file(tmp_path, map_path=str(map_dir), image_topic="camera/image_raw", prior_topic="prior",
                       qos_reliability="reliable", rerank="off", top_k=3, temporal_window=0)
    robot = [console_script(), "--ros-args", "--params-file", file]
    with processes([robot + ["-r", "__ns:=/robot1"], robot + ["-r", "__ns:=/robot2", "-p", "robot_id:=scout"]]) as (
            probe, executor, ended):
        answers = {ns: listen(probe, MSGS.PlaceHypotheses, f"/{ns}/vpr/hypotheses") for ns in ("robot1", "robot2")}
        diagnostics = listen(probe, DiagnosticArray, "/diagnostics")
        pubs = {ns: probe.create_publisher(Image, f"/{ns}/camera/image_raw", RELIABLE) for ns in answers}
        prior = probe.create_publisher(PoseWithCovarianceStamped, "/robot2/prior", RELIABLE)
        assert spin_until(executor, lambda: all(p.get_subscription_count() for p in pubs.values())
                          and prior.get_subscription_count(), 120), "the nodes did not come up"

        def with_prior() -> list:  # the prior and the image travel on two topics: the first image may come first
            return [h for h in answers["robot2"] if h.search_scope != "map"]

        for _ in range(60):  # each node answers only its own robot's frames
            prior.publish(_prior(5.0, 25))
            pubs["robot1"].publish(image_msg(images[1][20], 20 * 10**9))  # the other traversal: real revisits
            pubs["robot2"].publish(image_msg(images[1][25], 25 * 10**9))
            if spin_until(executor, lambda: answers["robot1"] and with_prior(), 2):
                break
        assert answers["robot1"] and with_prior(), {ns: [h.search_scope for h in a] for ns, a in answers.items()}
        one, two = answers["robot1"][0], with_prior()[0]
        first = answers["robot2"].index(two)
        assert all(h.search_scope != "map" for h in answers["robot2"][first:])  # once received, the prior holds
        assert one.robot_id == "robot1" and one.header.stamp.sec == 20 and one.search_scope == "map"
        assert abs(one.hypotheses[0].map_key - 20) <= 2 and one.hypotheses[0].session_id == "corridor40"
        assert two.robot_id == "scout" and all(h.header.stamp.sec == 25 for h in answers["robot2"])
        assert two.search_scope == "prior: 16 of 40 map frames within 10 m" and two.searched_frames == 16, two
        assert one.searched_frames == one.map_size == 40
        assert all(h.map_pose.position.x <= 15.0 for h in two.hypotheses)  # frame 25 lies outside the region

        def robots() -> dict:  # /diagnostics is shared: each node's status names it and its robot
            return {s.name: {v.key: v.value for v in s.values}.get("robot_id") for d in diagnostics for s in d.status}

        assert spin_until(executor, lambda: len(robots()) == 2, 10), robots()
        assert robots() == {"robot1/vpr_localizer: pipeline": "robot1", "robot2/vpr_localizer: pipeline": "scout"}
    for (code, output), ns in zip(ended, ("robot1", "robot2")):
        assert code == 0 and "Traceback" not in output, output
        assert f"images on /{ns}/camera/image_raw" in output, output


def test_a_slam_session_is_appended_to_the_map_it_started_from(map_dir, images, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(map_dir, site)
    file = params_file(tmp_path, mode="slam", map_path=str(site), image_topic="/cam", qos_reliability="reliable",
                       queue_size=20, rerank="off", temporal_window=0, session_id="day2", robot_id="r2")
    with processes([[console_script(), "--ros-args", "--params-file", file]]) as (probe, executor, ended):
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        loops = listen(probe, MSGS.LoopClosure, "vpr/loop_closure")
        pub = probe.create_publisher(Image, "/cam", RELIABLE)
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 120), "the node did not come up"
        for i in range(5):  # revisits of map frames 10..14, an hour after the map was recorded
            pub.publish(image_msg(images[1][10 + i], (3600 + i) * 10**9))  # the other traversal
            spin_until(executor, lambda: False, 0.05)
        assert spin_until(executor, lambda: len(hyps) >= 5, 120), len(hyps)
        assert all(h.robot_id == "r2" and h.hypotheses[0].session_id == "corridor40" for h in hyps)
        assert loops and loops[0].session_id == "day2" and loops[0].match_session_id == "corridor40", loops
        answer = call(probe, executor, MSGS.SaveMap, "vpr/save_map",
                      MSGS.SaveMap.Request(map_path=str(site), append=True))
        assert answer.success and answer.map_size == 45, answer.message
        again = call(probe, executor, MSGS.SaveMap, "vpr/save_map",
                     MSGS.SaveMap.Request(map_path=str(site), append=True))
        assert not again.success and "'day2' (robot 'r2') is in both" in again.message, again.message
    from vpr_ros.core.map.store import VPRMap

    grown = VPRMap.load(site)
    assert [str(s) for s in grown.frames.sessions] == ["'corridor40'", "'day2' (robot 'r2')"] and len(grown) == 45
    assert ended[0][0] == 0, ended[0][1]


@pytest.fixture(scope="module")
def gps_map_dir(corridor_dir, tmp_path_factory):
    """20 Corridor references with GPS fixes ~0.74 m apart eastwards (no poses), global descriptors only."""
    from vpr_ros.core.map.frames import FrameTable
    from vpr_ros.core.build.map_builder import build_map
    from vpr_ros.core.build.sources import load_image_file

    paths = sorted((corridor_dir / "ref").glob("*.jpg"))[:20]
    gps = np.stack([np.full(20, 48.0), 11.0 + np.arange(20) * 1e-5, np.full(20, 500.0)], axis=1)
    frames = FrameTable.build((np.arange(20) + 1) * 10**9, paths, gps=gps)
    vpr_map = build_map("corridor_gps", frames, load_image_file, clusters=8, input_size=(320, 240))
    return vpr_map.save(tmp_path_factory.mktemp("gps") / "corridor_gps")


def _fix(longitude: float, stamp_s: int, status: int = 0, covariance_type: int = 2):
    from sensor_msgs.msg import NavSatFix

    msg = NavSatFix(latitude=48.0, longitude=longitude, altitude=500.0, position_covariance_type=covariance_type)
    msg.header.stamp.sec, msg.status.status = stamp_s, status
    msg.position_covariance = [4.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 9.0]
    return msg


def test_a_gps_prior_and_the_fixes_a_receiver_sends_without_one(gps_map_dir, images, tmp_path):
    """prior_gps_topic: a fix with a covariance restricts the search to map frames within 10 m of it; a fix
    without a fix, or with an unknown covariance, is ignored (warned, counted) and the whole map is searched."""
    from sensor_msgs.msg import NavSatFix

    file = params_file(tmp_path, map_path=str(gps_map_dir), image_topic="/cam", prior_gps_topic="/fix",
                       qos_reliability="reliable", rerank="off", top_k=3, temporal_window=0)
    with processes([[console_script(), "--ros-args", "--params-file", file]]) as (probe, executor, ended):
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        diagnostics = listen(probe, DiagnosticArray, "/diagnostics")
        cam, fix = probe.create_publisher(Image, "/cam", RELIABLE), probe.create_publisher(NavSatFix, "/fix", RELIABLE)
        assert spin_until(executor, lambda: cam.get_subscription_count() and fix.get_subscription_count(), 120)

        def answer(fix_msg, stamp_s: int):
            hyps.clear()
            for _ in range(30):
                fix.publish(fix_msg)
                spin_until(executor, lambda: False, 0.2)
                cam.publish(image_msg(images[1][15], stamp_s * 10**9))  # the other traversal
                if spin_until(executor, lambda: any(h.header.stamp.sec == stamp_s for h in hyps), 2):
                    return next(h for h in hyps if h.header.stamp.sec == stamp_s)
            raise AssertionError("no answer")

        near = answer(_fix(11.0 + 2e-5, 5), 5)  # at map frame 2 (frames 0.745 m apart): frames 0..15 within 10 m
        assert near.search_scope == "prior: 16 of 20 map frames within 10 m" and near.searched_frames == 16, near
        assert all(h.map_key <= 15 for h in near.hypotheses)
        for stamp_s, bad in ((6, _fix(11.0, 6, status=-1)), (7, _fix(11.0, 7, covariance_type=0))):
            got = answer(bad, stamp_s)  # ignored: the last good prior (stamp 5) is 1-2 s old against this frame ...
            assert got.search_scope == near.search_scope and got.searched_frames == 16, got.search_scope
        stale = answer(_fix(11.0, 7, status=-1), 30)  # ... and stale 25 s later: the whole map
        assert stale.search_scope.startswith("map (prior") and "stale" in stale.search_scope, stale.search_scope
        assert abs(stale.hypotheses[0].map_key - 15) <= 2, stale.hypotheses[0].map_key

        def counted(key):
            values = [{v.key: v.value for v in s.values} for d in diagnostics for s in d.status]
            return max([int(v.get(key, 0)) for v in values] or [0])

        assert spin_until(executor, lambda: counted("bad_prior") >= 2 and counted("prior_searches") >= 1, 10)
    assert ended[0][0] == 0 and "position prior on /fix ignored: the receiver has no fix" in ended[0][1]
    assert "its covariance is unknown" in ended[0][1]
