"""The project's own messages and services cross a real rclpy graph between two processes."""

import array
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import spin_until

pytest.importorskip("rclpy", reason="rclpy is not installed: run `make test` to set up .venv")
pytest.importorskip("vpr_ros_interfaces.msg",
                    reason="vpr_ros_interfaces is not built: run scripts/build_interfaces.py")

import ros_peer  # noqa: E402  (the second process's module; its message builders are the reference)

PEER = Path(ros_peer.__file__)
INTERFACES = Path(__file__).resolve().parents[1] / "vpr_ros_interfaces"


@pytest.fixture
def peer(request):
    """Start ros_peer.py in a second process with the role given by the test's parameter."""
    proc = subprocess.Popen([sys.executable, str(PEER), request.param, "--seconds", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            pytest.fail(f"peer did not start: {line!r} {proc.stderr.read()}")
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def assert_same_message(got, want, path="msg"):
    """Field-by-field equality that treats NaN as equal to NaN and floats at float32 precision."""
    if hasattr(want, "get_fields_and_field_types"):
        for field in want.get_fields_and_field_types():
            assert_same_message(getattr(got, field), getattr(want, field), f"{path}.{field}")
    elif isinstance(want, (float, np.floating)):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-6), path
    elif isinstance(want, (list, tuple, array.array, np.ndarray)):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_message(g, w, f"{path}[{i}]")
    else:
        assert got == want, path


@pytest.mark.parametrize("peer", ["talk"], indirect=True)
def test_messages_cross_processes(ros_node, peer):
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from vpr_ros_interfaces.msg import LoopClosure, PlaceHypotheses

    node, executor = ros_node
    received = {}
    qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
    node.create_subscription(PlaceHypotheses, "place_hypotheses",
                             lambda m: received.setdefault("hyp", m), qos)
    node.create_subscription(LoopClosure, "loop_closure", lambda m: received.setdefault("loop", m), qos)

    assert spin_until(executor, lambda: len(received) == 2, timeout_s=30.0), \
        f"received only {sorted(received)} from the peer process"
    assert_same_message(received["hyp"], ros_peer.example_hypotheses())
    assert_same_message(received["loop"], ros_peer.example_loop_closure())
    assert math.isnan(received["hyp"].hypotheses[0].rerank_score)
    assert list(received["loop"].covariance) == [float(i) for i in range(36)]
    assert received["loop"].method == LoopClosure.METHOD_ESSENTIAL


def test_rosbags_reads_interface_definitions(tmp_path):
    """Bags of the project's messages written with rosbags (from the .msg text) deserialize in rclpy."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    from vpr_ros_interfaces.msg import LoopClosure

    typestore = get_typestore(Stores.ROS2_KILTED if hasattr(Stores, "ROS2_KILTED") else Stores.LATEST)
    types = {}
    for path in sorted((INTERFACES / "msg").glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vpr_ros_interfaces/msg/{path.stem}"))
    typestore.register(types)

    want = ros_peer.example_loop_closure()
    Msg = typestore.types["vpr_ros_interfaces/msg/LoopClosure"]
    Time = typestore.types["builtin_interfaces/msg/Time"]
    Header = typestore.types["std_msgs/msg/Header"]
    Pose = typestore.types["geometry_msgs/msg/Pose"]
    Point = typestore.types["geometry_msgs/msg/Point"]
    Quat = typestore.types["geometry_msgs/msg/Quaternion"]

    bag_msg = Msg(
        header=Header(stamp=Time(sec=want.header.stamp.sec, nanosec=0), frame_id=want.header.frame_id),
        match_frame_id=want.match_frame_id, query_key=want.query_key, query_stamp=Time(sec=want.query_stamp.sec, nanosec=0),
        match_key=want.match_key, match_stamp=Time(sec=want.match_stamp.sec, nanosec=0),
        map_name=want.map_name, robot_id=want.robot_id, session_id=want.session_id,
        match_session_id=want.match_session_id, match_robot_id=want.match_robot_id,
        relative_pose=Pose(position=Point(x=0.6, y=0.0, z=0.0), orientation=Quat(x=0.0, y=0.0, z=0.0, w=1.0)),
        covariance=np.arange(36, dtype=np.float64), translation_scale_known=False, scale_note=want.scale_note,
        probability=np.float32(0.875), global_similarity=np.float32(0.5), inlier_count=150,
        method=3, method_detail=want.method_detail)

    bag = tmp_path / "bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/loop_closure", Msg.__msgtype__, typestore=typestore)
        writer.write(conn, 1, typestore.serialize_cdr(bag_msg, Msg.__msgtype__))
    with Reader(bag) as reader:
        [(_, _, raw)] = list(reader.messages())
    assert_same_message(deserialize_message(raw, LoopClosure), want)
