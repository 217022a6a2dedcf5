"""vpr_pose_graph as its console script with the shipped params file, in its own process, in a real ROS graph:
a simulated run's drifting odometry and loop closures go in, the optimised path, the map -> odom correction
and diagnostics come out; bad input is refused with a counter and a log line; SIGTERM exits 0."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry, Path as PathMsg
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from conftest import REPO, spin_until
from test_node import node_process
from vpr_ros.core.matching.transforms import pose7
from vpr_ros.ros.convert import ns_to_stamp
from vpr_ros.ros.interfaces import load_interfaces
from vpr_ros.ros.messages import pose_msg
from vpr_ros.ros.pose_graph import params_file_text
from vpr_ros.sim.bag_writer import OPTICAL_IN_BODY_QUATERNION
from vpr_ros.ros.pose_graph import parse_robots
from vpr_ros.sim.closures import RunPoses, ate, second_robot, simulated_closures
from vpr_ros.sim.run import SimRun

MSGS = load_interfaces()
RELIABLE = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def test_the_shipped_params_file_is_the_generated_one():
    assert (REPO / "config" / "pose_graph.yaml").read_text() == params_file_text()
    params = yaml.safe_load((REPO / "config" / "pose_graph.yaml").read_text())["/**/vpr_pose_graph"]["ros__parameters"]
    assert params["kernel"] == "cauchy" and params["support"] == 1


def odometry_msg(stamp_ns: int, pose, covariance) -> Odometry:
    msg = Odometry()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = ns_to_stamp(int(stamp_ns)), "odom", "base_link"
    msg.pose.pose = pose_msg(pose)
    msg.pose.covariance = np.asarray(covariance, np.float64).reshape(36).tolist()
    return msg


def loop_msg(query_ns: int, match_ns: int, T: np.ndarray, covariance, robot: str = "", match_robot: str = "") -> object:
    msg = MSGS.LoopClosure()
    msg.robot_id, msg.match_robot_id = robot, match_robot
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(int(query_ns)), "camera_optical"
    msg.query_stamp, msg.match_stamp = ns_to_stamp(int(query_ns)), ns_to_stamp(int(match_ns))
    msg.relative_pose = pose_msg(pose7(T[:3, :3], T[:3, 3]))
    msg.covariance = np.asarray(covariance, np.float64).reshape(36).tolist()
    msg.translation_scale_known = True
    msg.method = MSGS.LoopClosure.METHOD_PNP_DEPTH
    return msg


def back_end(*parameters: str):
    """vpr_pose_graph as its console script with the shipped params file (the simulator's camera mounting,
    path published every 0.2 s, plus `parameters` as name:=value), and a probe node (test_node.node_process);
    on exit the node gets SIGTERM and `ended` holds its returncode and output."""
    mounting = [0.0, 0.0, 0.0, *OPTICAL_IN_BODY_QUATERNION]
    command = [str(Path(sys.executable).parent / "vpr_pose_graph"), "--ros-args", "--params-file",
               str(REPO / "config" / "pose_graph.yaml"), "-p", f"camera_in_body:={mounting}",
               "-p", "publish_period_s:=0.2", *(a for p in parameters for a in ("-p", p))]
    return node_process(command, signal.SIGTERM)


def path_poses(path) -> tuple[np.ndarray, np.ndarray]:
    """(stamps ns, N x 7) of a nav_msgs/Path."""
    stamps = np.array([p.header.stamp.sec * 10**9 + p.header.stamp.nanosec for p in path.poses])
    return stamps, np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z, p.pose.orientation.x,
                              p.pose.orientation.y, p.pose.orientation.z, p.pose.orientation.w] for p in path.poses])


@pytest.mark.skipif(MSGS is None, reason="vpr_ros_interfaces is not built: no LoopClosure message")
def test_the_node_closes_a_drifting_run_and_refuses_bad_input():
    poses = RunPoses.of(SimRun({"seed": 2, "frames": 80, "laps": 3, "odometry_drift": 3.0}))
    closures = simulated_closures(poses, np.random.default_rng(1), every=4, overconfidence=2.0)
    paths, corrections, diagnostics = [], [], []
    with back_end("loop_closure_topic:=/test/loop_closure", "odom_topic:=/test/odom") as (probe, executor, ended):
        probe.create_subscription(PathMsg, "vpr/optimized_path", paths.append, LATCHED)
        probe.create_subscription(TransformStamped, "vpr/map_to_odom", corrections.append, LATCHED)
        probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        odom_pub = probe.create_publisher(Odometry, "/test/odom", RELIABLE)
        loop_pub = probe.create_publisher(MSGS.LoopClosure, "/test/loop_closure", RELIABLE)
        assert spin_until(executor, lambda: odom_pub.get_subscription_count() and loop_pub.get_subscription_count(),
                          60), "vpr_pose_graph did not come up"
        by_query = {}
        for c in closures:
            by_query.setdefault(c.query, []).append(c)
        for i, stamp in enumerate(poses.stamps):
            odom_pub.publish(odometry_msg(stamp, poses.odometry[i], poses.odometry_covariance[i]))
            for c in by_query.get(i, []):
                loop_pub.publish(loop_msg(stamp, poses.stamps[c.match], c.relative_pose, c.covariance))
            executor.spin_once(timeout_sec=0.005)  # 200 Hz: faster than a robot's odometry, slow enough to keep all
        newest, good = int(poses.stamps[-1]), closures[-1]
        nan = np.full((6, 6), np.nan)
        loop_pub.publish(loop_msg(newest, poses.stamps[good.match], good.relative_pose, nan))  # NaN covariance
        loop_pub.publish(loop_msg(newest + 60 * 10**9, poses.stamps[good.match], good.relative_pose,
                                  good.covariance))  # from the future
        loop_pub.publish(loop_msg(newest, int(poses.stamps[0]) - 30 * 10**9, good.relative_pose,
                                  good.covariance))  # a match stamp before every keyframe
        jump = poses.odometry[-1].copy()
        jump[0] += 500.0
        odom_pub.publish(odometry_msg(newest + 10**8, jump, poses.odometry_covariance[-1]))  # odometry that jumps

        def refused() -> dict:
            if not diagnostics:
                return {}
            return {v.key: v.value for v in diagnostics[-1].status[0].values}

        assert spin_until(executor, lambda: int(refused().get("refused: odometry jumped", 0)) >= 1
                          and int(refused().get("keyframes", 0)) >= len(poses.stamps) - 1, 30), refused()
        values = refused()
        assert int(values["closures"]) >= 0.9 * len(closures), values
        assert values["refused: unusable closure"] == "1" and values["refused: closure from the future"] == "1"
        assert values["refused: closure stamp offset"] == "1", values
        assert diagnostics[-1].status[0].level == DiagnosticStatus.WARN  # inputs were refused
        path = paths[-1]
        stamps, optimised = path_poses(path)
        assert path.header.frame_id == "map" and len(stamps) >= len(poses.stamps) - 1
        odometry_ate, corrected = ate(poses, poses.stamps, poses.odometry), ate(poses, stamps, optimised)
        assert corrected < odometry_ate / 5, (odometry_ate, corrected)
        assert corrections[-1].header.frame_id == "map" and corrections[-1].child_frame_id == "odom"
    output = ended["output"]
    assert ended["returncode"] == 0, output
    assert "s after the newest odometry (from the future" in output, output
    assert "s away from every keyframe (max_stamp_offset_s" in output, output
    assert "refused: unusable closure: its covariance is not finite" in output, output
    assert "odometry refused: odometry jumped" in output, output


def test_a_bad_configuration_exits_2_with_the_reason():
    script = str(Path(sys.executable).parent / "vpr_pose_graph")
    for extra, message in [(["-p", "kernel:=tukey"], "unknown kernel"),
                           (["-p", "camera_in_body:=[1.0, 2.0]"], "camera_in_body")]:
        out = subprocess.run([script, "--ros-args", "--params-file", str(REPO / "config" / "pose_graph.yaml"), *extra],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and message in out.stdout + out.stderr, (extra, out.stdout, out.stderr)


def test_the_launch_file_starts_the_back_end_only_when_asked():
    from vpr_ros.ros.launch_args import flag_value, pose_graph_overrides

    assert flag_value("pose_graph", "true") and not flag_value("pose_graph", "False")
    with pytest.raises(ValueError, match="pose_graph must be true or false"):
        flag_value("pose_graph", "maybe")
    assert pose_graph_overrides({"odom_topic": " /wheel/odom ", "mode": "slam"}) == {"odom_topic": "/wheel/odom"}
    assert pose_graph_overrides({"odom_topic": ""}) == {}


def test_robots_parameter_is_parsed_and_checked():
    assert parse_robots("r1:/r1/odom, r2:/r2/odom") == {"r1": "/r1/odom", "r2": "/r2/odom"}
    assert parse_robots("") == {}
    for bad in ("r1", "r1:/a,r1:/b", ":/odom"):
        with pytest.raises(ValueError, match="robot_id:odom_topic"):
            parse_robots(bad)


@pytest.mark.skipif(MSGS is None, reason="vpr_ros_interfaces is not built: no LoopClosure message")
def test_two_robots_in_one_graph_are_joined_by_their_closures():
    a = RunPoses.of(SimRun({"seed": 0, "frames": 60, "laps": 2}))
    b, closures = second_robot(a, np.random.default_rng(2), every=3)
    paths = {"a": [], "b": []}
    with back_end("loop_closure_topic:=/two/loop_closure", "robots:=a:/a/odom,b:/b/odom") as (probe, executor, ended):
        for robot in paths:
            probe.create_subscription(PathMsg, f"vpr/optimized_path/{robot}", paths[robot].append, LATCHED)
        pubs = {robot: probe.create_publisher(Odometry, f"/{robot}/odom", RELIABLE) for robot in paths}
        loop_pub = probe.create_publisher(MSGS.LoopClosure, "/two/loop_closure", RELIABLE)
        assert spin_until(executor, lambda: all(p.get_subscription_count() for p in (*pubs.values(), loop_pub)), 60)
        by_query = {c.query: c for c in closures}
        events = sorted([(int(t), "a", i) for i, t in enumerate(a.stamps)] + [(int(t), "b", i) for i, t in enumerate(b.stamps)])
        for stamp, robot, i in events:
            run = a if robot == "a" else b
            pubs[robot].publish(odometry_msg(stamp, run.odometry[i], run.odometry_covariance[i]))
            if robot == "b" and i in by_query:
                c = by_query[i]
                loop_pub.publish(loop_msg(stamp, a.stamps[c.match], c.relative_pose, c.covariance, "b", "a"))
            executor.spin_once(timeout_sec=0.002)
        loop_pub.publish(loop_msg(int(b.stamps[-1]), int(a.stamps[0]), np.eye(4), np.eye(6) * 0.01, "c", "a"))

        def done() -> bool:
            return all(paths[r] and len(paths[r][-1].poses) == len(a.stamps) for r in paths)

        assert spin_until(executor, done, 30), {r: len(p[-1].poses) if p else 0 for r, p in paths.items()}
        stamps, optimised = path_poses(paths["b"][-1])
        alone = ate(b, b.stamps, b.odometry, "none")
        joined = ate(b, stamps, optimised, "none")
        assert alone > 10 and joined < 1.0, (alone, joined)  # b's path in a's map frame
    assert ended["returncode"] == 0, ended["output"]
