"""Several robots on one map through a real ROS graph: namespaced vpr_localizer processes started by their
console script with one params file, each answering with its robot id; a position prior from a topic; a
slam session appended to the map it started from by vpr/save_map."""

import contextlib
import shutil
import signal
import subprocess

import numpy as np
import pytest

from conftest import spin_until
from test_node import MSGS, RELIABLE, image_msg, images, listen, map_dir  # noqa: F401
from test_node_robot import call, console_script, params_file

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

pytestmark = [pytest.mark.skipif(MSGS is None, reason="vpr_ros_interfaces is not built"), pytest.mark.slow]


@contextlib.contextmanager
def processes(commands: list[list[str]]):
    """Each command in its own process, and a probe node; on exit SIGINT to each, `ended` their return codes
    and output."""
    from rclpy.executors import SingleThreadedExecutor

    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("vpr_multi_robot_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    ended = []
    try:
        yield probe, executor, ended
    finally:
        executor.shutdown()
        probe.destroy_node()
        rclpy.shutdown(context=context)
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                output, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            ended.append((proc.returncode, output))


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
        for _ in range(60):  # each node answers only its own robot's frames
            prior.publish(_prior(5.0, 25))
            pubs["robot1"].publish(image_msg(images[0][20], 20 * 10**9))
            pubs["robot2"].publish(image_msg(images[0][25], 25 * 10**9))
            if spin_until(executor, lambda: all(answers.values()), 2):
                break
        assert all(answers.values()), {ns: len(a) for ns, a in answers.items()}
        one, two = answers["robot1"][0], answers["robot2"][-1]
        assert one.robot_id == "robot1" and one.header.stamp.sec == 20 and one.search_scope == "map"
        assert one.hypotheses[0].map_key == 20 and one.hypotheses[0].session_id == "corridor40"
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
            pub.publish(image_msg(images[0][10 + i], (3600 + i) * 10**9))
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
    from vpr_ros.core.maps.map_store import VPRMap

    grown = VPRMap.load(site)
    assert [str(s) for s in grown.frames.sessions] == ["'corridor40'", "'day2' (robot 'r2')"] and len(grown) == 45
    assert ended[0][0] == 0, ended[0][1]
