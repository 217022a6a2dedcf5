"""vpr_localizer started the way a robot starts it: its console script in its own process, a params
file with non-default values, and what a real camera and a careless user send. Each test names the
bad input; the node must answer, log, count, keep running and exit with the right code."""

import hashlib
import json
import re
import shutil
import sys
import time

import numpy as np
import pytest
import yaml

from conftest import REPO, spin_until
from test_node import MSGS, RELIABLE, image_msg, images, listen, map_dir, node_process, publish_until  # noqa: F401

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from vpr_ros.ros.launch_args import fastdds_environment, parameter_overrides  # noqa: E402

pytestmark = pytest.mark.skipif(MSGS is None, reason="vpr_ros_interfaces is not built")


def console_script() -> str:
    from pathlib import Path

    return str(Path(sys.executable).parent / "vpr_localizer")


def params_file(tmp_path, **values) -> str:
    """The shipped params file with `values` changed, written where a user would keep their own."""
    data = yaml.safe_load((REPO / "config" / "localize.yaml").read_text())
    data["/**/vpr_localizer"]["ros__parameters"].update(values)
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def call(probe, executor, srv_type, name, request, timeout_s=60):
    client = probe.create_client(srv_type, name)
    assert spin_until(executor, client.service_is_ready, 60), f"{name} is not offered"
    future = client.call_async(request)
    assert spin_until(executor, future.done, timeout_s), f"{name} did not answer"
    return future.result()


@pytest.mark.slow
def test_console_script_runs_one_loop_in_order_with_the_params_file(map_dir, images, tmp_path):
    """queue_size 20 from the file: a burst of 12 frames is answered completely and in order (two
    processing loops answered out of order), the file's values are in force over the graph, and
    SIGINT ends the node quietly with exit code 0."""
    from rcl_interfaces.srv import GetParameters

    file = params_file(tmp_path, map_path=str(map_dir), image_topic="/robot/image", qos_reliability="reliable",
                       qos_depth=50, queue_size=20, rerank="off", top_k=3, temporal_window=0)
    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        publish_until(probe, executor, "/robot/image", image_msg(images[1][0], 1), lambda: hyps)
        got = call(probe, executor, GetParameters, "/vpr_localizer/get_parameters",
                   GetParameters.Request(names=["queue_size", "image_topic", "rerank", "top_k", "map_path"]))
        values = [v.integer_value if v.type == 2 else v.string_value for v in got.values]
        assert values == [20, "/robot/image", "off", 3, str(map_dir)], values
        hyps.clear()
        pub = probe.create_publisher(Image, "/robot/image", RELIABLE)
        for i in range(12):
            pub.publish(image_msg(images[1][i], (10 + i) * 10**9))
            spin_until(executor, lambda: False, 0.01)
        assert spin_until(executor, lambda: len(hyps) >= 12, 60), len(hyps)
        stamps = [h.header.stamp.sec for h in hyps]
        assert stamps == list(range(10, 22)), stamps
        assert all(len(h.hypotheses) == 3 for h in hyps)
    assert ended["returncode"] == 0, ended["output"]
    for noise in ("Traceback", "RCLError", "context is invalid", "already running"):
        assert noise not in ended["output"], ended["output"]


@pytest.mark.slow
def test_a_bad_map_is_refused_by_name_and_the_node_keeps_serving(map_dir, images, tmp_path):
    """vpr/load_map with maps whose map.json lies: each answered with the field named, the current map
    stays, the node answers images afterwards; an empty path reloads the configured map."""
    bad = {}
    for name, edit in [("files_no_bytes", lambda m: m["files"]["index.faiss"].pop("bytes")),
                       ("files_list", lambda m: m.update(files=list(m["files"]))),
                       ("conf_null", lambda m: m.update(preset_conf=None))]:
        path = tmp_path / name
        shutil.copytree(map_dir, path)
        meta = json.loads((path / "map.json").read_text())
        edit(meta)
        (path / "map.json").write_text(json.dumps(meta))
        bad[name] = path
    faiss_bad = tmp_path / "faiss_bad"
    shutil.copytree(map_dir, faiss_bad)
    garbage = b"\x00garbage" * 64
    (faiss_bad / "index.faiss").write_bytes(garbage)
    meta = json.loads((faiss_bad / "map.json").read_text())
    meta["files"]["index.faiss"] = {"bytes": len(garbage), "sha256": hashlib.sha256(garbage).hexdigest()}
    (faiss_bad / "map.json").write_text(json.dumps(meta))
    file = params_file(tmp_path, map_path=str(map_dir), image_topic="/robot/image", qos_reliability="reliable",
                       rerank="off")
    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        for path, message in [(bad["files_no_bytes"], "files['index.faiss']"), (bad["files_list"], "'files'"),
                              (bad["conf_null"], "'preset_conf'"), (faiss_bad, "index.faiss cannot be read")]:
            answer = call(probe, executor, MSGS.LoadMap, "vpr/load_map", MSGS.LoadMap.Request(map_path=str(path)))
            assert not answer.success and message in answer.message and "current map stays" in answer.message, \
                answer.message
        reload = call(probe, executor, MSGS.LoadMap, "vpr/load_map", MSGS.LoadMap.Request(map_path=""))
        assert reload.success and reload.map_name == "corridor40", reload.message
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        publish_until(probe, executor, "/robot/image", image_msg(images[1][20], 5 * 10**9), lambda: hyps)
        assert hyps[0].map_name == "corridor40"
    assert ended["returncode"] == 0, ended["output"]
    assert "Traceback" not in ended["output"], ended["output"]


@pytest.mark.slow
def test_save_map_never_replaces_what_is_not_a_map_and_says_so(map_dir, tmp_path):
    """overwrite=True onto a photo folder and onto a plain file: refused, both untouched; a path with
    `..` is normalised; the core's own log line reaches /rosout."""
    from rcl_interfaces.msg import Log

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"keep")
    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    file = params_file(tmp_path, map_path=str(map_dir), rerank="off")
    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        rosout = listen(probe, Log, "/rosout")
        for target in (photos, notes):
            answer = call(probe, executor, MSGS.SaveMap, "vpr/save_map",
                          MSGS.SaveMap.Request(map_path=str(target), overwrite=True))
            assert not answer.success and "not a" in answer.message, answer.message
        answer = call(probe, executor, MSGS.SaveMap, "vpr/save_map",
                      MSGS.SaveMap.Request(map_path=str(tmp_path / "x" / ".." / "copy"), overwrite=False))
        assert answer.success and answer.map_path == str(tmp_path / "copy"), answer
        assert spin_until(executor, lambda: any("saved map corridor40" in m.msg for m in rosout), 10), \
            [m.msg for m in rosout]
    assert (photos / "a.jpg").read_bytes() == b"keep" and notes.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "notes.txt", "photos", "robot.yaml"]
    assert ended["returncode"] == 0, ended["output"]


def _camera_info(k, width, height) -> CameraInfo:
    info = CameraInfo(width=width, height=height)
    info.k = [float(v) for v in k]
    return info


@pytest.mark.slow
def test_camera_info_odometry_stamps_and_images_a_careless_sender_publishes(map_dir, images, tmp_path):
    """NaN K, a 1e-9 focal length, a negative stamp, a 20000x20000 raw image header,
    stale odometry: each refused or handled, logged and counted; the answers keep coming."""
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry

    file = params_file(tmp_path, map_path=str(map_dir), image_topic="/robot/image", qos_reliability="reliable",
                       queue_size=10, rerank="xfeat-mnn", camera_info_topic="/robot/camera_info",
                       odom_topic="/robot/odom", min_distance_m=0.5, temporal_window=0, accept_min_similarity=0.0,
                       diagnostics_period_s=0.2, image_transport="raw")
    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        loops = listen(probe, MSGS.LoopClosure, "vpr/loop_closure")
        diags = listen(probe, DiagnosticArray, "/diagnostics")
        info_pub = probe.create_publisher(CameraInfo, "/robot/camera_info", RELIABLE)
        odom_pub = probe.create_publisher(Odometry, "/robot/odom", RELIABLE)
        assert spin_until(executor, lambda: info_pub.get_subscription_count() and odom_pub.get_subscription_count(), 60)
        nan_odom = Odometry()
        nan_odom.pose.pose.position.x = float("nan")
        odom_pub.publish(nan_odom)
        info_pub.publish(_camera_info([float("nan"), 0, 80, 0, 100, 60, 0, 0, 1], 160, 120))
        # odometry stopped long ago: frames must not all be gated out by min_distance_m
        good = image_msg(images[1][20], -5 * 10**9)  # a negative stamp: nothing may be lost
        good.header.frame_id = "robot_camera_optical"
        publish_until(probe, executor, "/robot/image", good, lambda: hyps and loops)
        assert hyps[0].header.stamp.sec == -5 and loops[0].header.frame_id == "robot_camera_optical"
        assert loops[0].query_stamp.sec == -5
        info_pub.publish(_camera_info([1e-9, 0, 80, 0, 1e-9, 60, 0, 0, 1], 160, 120))
        pub = probe.create_publisher(Image, "/robot/image", RELIABLE)
        huge = Image(height=20000, width=20000, encoding="rgb8", step=60000)  # header only, no pixels
        pub.publish(huge)
        hyps.clear()
        pub.publish(image_msg(images[1][21], 7 * 10**9))
        assert spin_until(executor, lambda: hyps, 60)

        def diag(key):
            values = [kv.value for d in diags for s in d.status for kv in s.values if kv.key == key]
            return int(values[-1]) if values else 0
        assert spin_until(executor, lambda: diag("bad_frames") >= 1 and diag("bad_camera_info") >= 2
                          and diag("bad_odometry") >= 1 and diag("stale_odometry") >= 1, 10), \
            {k: diag(k) for k in ("bad_frames", "bad_camera_info", "bad_odometry", "stale_odometry")}
        levels = [s.level for d in diags for s in d.status]
        assert levels[-1] == DiagnosticStatus.WARN  # WARN while the window holds the bad inputs
    out = ended["output"]
    assert ended["returncode"] == 0, out
    assert out.count("K has NaN or infinite") == 1, out  # warned once, not per frame
    assert "field of view" in out and "outside the supported" in out and "no fresh odometry" in out, out


@pytest.mark.slow
def test_no_images_is_a_warning_and_it_clears(map_dir, images, tmp_path):
    """A node that receives nothing says so; one bad frame raises WARN only while it is recent."""
    from diagnostic_msgs.msg import DiagnosticArray

    file = params_file(tmp_path, map_path=str(map_dir), image_topic="/robot/image", qos_reliability="reliable",
                       rerank="off", image_timeout_s=1.0, diagnostics_window_s=2.0, diagnostics_period_s=0.2)
    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        diags = listen(probe, DiagnosticArray, "/diagnostics")
        assert spin_until(executor, lambda: any("no image" in s.message for d in diags for s in d.status), 60)
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        publish_until(probe, executor, "/robot/image", image_msg(images[1][3], 3 * 10**9), lambda: hyps)
        pub = probe.create_publisher(Image, "/robot/image", RELIABLE)
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 30)
        start = len(diags)
        pub.publish(Image(height=40, width=40, encoding="bayer_rggb8", step=40, data=bytes(1600)))
        assert spin_until(executor, lambda: any(s.level == DiagnosticStatus.WARN and "bad frames" in s.message
                                                for d in diags[start:] for s in d.status), 10)

        def latest_ok():
            pub.publish(image_msg(images[1][3], int(time.time()) * 10**9))  # keep images coming
            return diags and diags[-1].status[0].level == DiagnosticStatus.OK
        assert spin_until(executor, latest_ok, 15), diags[-1].status[0].message
    assert ended["returncode"] == 0, ended["output"]


@pytest.mark.slow
def test_a_sixteen_bit_twelve_bit_camera_is_not_black(map_dir, images, tmp_path):
    """mono16 from a 12-bit sensor, bit_depth 12: the same place comes back as from the 8-bit frame."""
    file = params_file(tmp_path, map_path=str(map_dir), image_topic="/robot/image", qos_reliability="reliable",
                       rerank="off", bit_depth=12)
    gray = images[1][20].mean(axis=2)
    mono16 = (gray * 4095 / 255).astype(np.uint16)
    msg = Image(height=mono16.shape[0], width=mono16.shape[1], encoding="mono16", step=mono16.shape[1] * 2,
                data=mono16.tobytes())
    msg.header.stamp.sec = 9
    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        publish_until(probe, executor, "/robot/image", msg, lambda: hyps)
        assert min(abs(h.map_key - 20) for h in hyps[0].hypotheses[:3]) <= 2, [h.map_key for h in hyps[0].hypotheses]
        assert hyps[0].hypotheses[0].global_similarity > 0.5
    assert ended["returncode"] == 0, ended["output"]


@pytest.mark.slow
def test_a_node_that_cannot_start_exits_non_zero(tmp_path):
    """A map that does not exist, or a default rerank on a map without local features: exit code 2 and
    a message that says what to do."""
    import subprocess

    out = subprocess.run([console_script(), "--ros-args", "-p", f"map_path:={tmp_path / 'absent'}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "map.json is missing" in out.stdout + out.stderr, out


@pytest.mark.slow
def test_yaml_booleans_and_numbers_in_string_parameters(map_dir, images, tmp_path):
    """A params file written by hand (`rerank: off`, `robot_id: 7`) and `-p rerank:=off` are read as YAML:
    a boolean and an integer. The node takes them as the user meant them and runs; a boolean where no
    "off" is meant is refused with exit code 2 and says to quote it."""
    import subprocess

    from vpr_ros.ros.parameters import as_declared

    assert as_declared("rerank", False) == "off" and as_declared("robot_id", 7) == "7"
    assert as_declared("top_k", 3) == 3 and as_declared("publish_pose", False) is False
    with pytest.raises(ValueError, match="quote it"):
        as_declared("mode", True)
    file = tmp_path / "by_hand.yaml"
    file.write_text(f"/**/vpr_localizer:\n  ros__parameters:\n    map_path: {map_dir}\n    rerank: off\n"
                    "    robot_id: 7\n    temporal_window: 0\n")
    for extra in ([], ["-p", "rerank:=off"]):
        with node_process([console_script(), "--ros-args", "--params-file", str(file), *extra]) as (
                probe, executor, ended):
            hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
            publish_until(probe, executor, "/camera/image_raw", image_msg(images[1][0], 1), lambda: hyps)
            assert hyps[0].hypotheses, "no hypotheses"
        assert ended["returncode"] == 0, ended["output"]
        assert "rerank off" in ended["output"], ended["output"]
    out = subprocess.run([console_script(), "--ros-args", "--params-file", str(file), "-p", "image_transport:=true"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "image_transport is a string" in out.stdout + out.stderr, out


# ---- the launch file's argument logic (no `launch` needed) -------------------------------------

def test_launch_arguments_override_the_params_file_only_when_given():
    assert parameter_overrides({"mode": "", "map_path": "", "image_topic": "", "image_transport": "",
                                "rerank": ""}) == {}
    assert parameter_overrides({"map_path": "/maps/office", "rerank": "off", "mode": ""}) == {
        "map_path": "/maps/office", "rerank": "off"}
    assert parameter_overrides({"image_transport": "compressed"}) == {"image_transport": "compressed"}
    with pytest.raises(ValueError, match="must be one of"):
        parameter_overrides({"mode": "mapping"})
    with pytest.raises(ValueError, match="unknown launch argument"):
        parameter_overrides({"params": "x"})
    assert parameter_overrides({"autostart": "false"}) == {"autostart": False}  # typed as the node declares it
    with pytest.raises(ValueError, match="autostart must be true or false"):
        parameter_overrides({"autostart": "maybe"})


def test_the_rviz_config_parses_and_shows_only_what_the_nodes_publish():
    """config/vpr.rviz (rviz:=true) is YAML RViz2 reads: each display names a topic that vpr_localizer or
    vpr_pose_graph publishes at their defaults (the camera image: the node's image_topic), with the message
    type that topic carries, and every marker namespace the node draws."""
    from vpr_ros.ros.parameters import PARAMETERS

    config = yaml.safe_load((REPO / "config" / "vpr.rviz").read_text())
    displays = {d["Class"]: d for d in config["Visualization Manager"]["Displays"]}
    topics = {d["Topic"]["Value"]: d["Class"] for d in config["Visualization Manager"]["Displays"] if "Topic" in d}
    graph = yaml.safe_load((REPO / "config" / "pose_graph.yaml").read_text())["/**/vpr_pose_graph"]["ros__parameters"]
    published = {PARAMETERS["image_topic"][0]: "rviz_default_plugins/Image",
                 "/vpr/markers": "rviz_default_plugins/MarkerArray",
                 "/vpr/pose": "rviz_default_plugins/PoseWithCovariance",
                 "/" + PARAMETERS["initialpose_topic"][0]: "rviz_default_plugins/PoseWithCovariance",
                 "/" + graph["path_topic"]: "rviz_default_plugins/Path"}
    assert topics == published, topics
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"
    import inspect

    from vpr_ros.ros import messages
    drawn = set(re.findall(r'ns="(vpr_\w+)"|"(vpr_\w+)", \d', inspect.getsource(messages)))
    drawn = {a or b for a, b in drawn}
    assert set(displays["rviz_default_plugins/MarkerArray"]["Namespaces"]) == drawn == {
        "vpr_match", "vpr_query", "vpr_link", "vpr_loop_edges"}


def test_fastdds_shared_memory_is_used_where_it_is_safe():
    profile = "/share/vpr_ros/config/fastdds_shm.xml"
    assert fastdds_environment("true", {}, profile) == {"FASTDDS_DEFAULT_PROFILES_FILE": profile}
    assert fastdds_environment("true", {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}, profile)
    assert fastdds_environment("true", {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, profile) == {}
    assert fastdds_environment("true", {"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}, profile) == {}
    assert fastdds_environment("false", {}, profile) == {}
    with pytest.raises(ValueError):
        fastdds_environment("maybe", {}, profile)


def test_launch_file_uses_the_argument_logic():
    """The launch file (not importable here: `launch` is not on PyPI) passes only the given overrides."""
    text = (REPO / "launch" / "localize.launch.py").read_text()
    assert "parameter_overrides(" in text and "fastdds_environment(" in text
    assert "{name: LaunchConfiguration(name) for name in" not in text


@pytest.mark.slow
def test_sequence_matching_from_the_params_file(map_dir, images, tmp_path):
    """sequence_length 5 in the robot's params file: the first frames are ranked by their image alone
    (sequence_length 0, no score), then every hypothesis carries the window's score and length, ranked by it;
    a stamp that goes back (a bag replayed again) restarts the window, and the log says so."""
    file = params_file(tmp_path, map_path=str(map_dir), image_topic="/robot/image", qos_reliability="reliable",
                       qos_depth=50, queue_size=50, rerank="off", top_k=3, temporal_window=0, sequence_length=5,
                       sequence_max_step=2, sequence_similarity="plain")
    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        publish_until(probe, executor, "/robot/image", image_msg(images[1][0], 1000 * 10**9), lambda: hyps)
        hyps.clear()
        pub = probe.create_publisher(Image, "/robot/image", RELIABLE)
        for i in range(40):  # the Corridor queries in traversal order, 1 s apart, stamps before the warm-up's
            pub.publish(image_msg(images[1][i], (100 + i) * 10**9))
            spin_until(executor, lambda: False, 0.02)
        assert spin_until(executor, lambda: len(hyps) >= 40, 120), len(hyps)
    assert ended["returncode"] == 0, ended["output"]
    assert "Traceback" not in ended["output"], ended["output"]
    assert "sequence window restarted: the stamp went back" in ended["output"], ended["output"]
    assert [h.header.stamp.sec for h in hyps] == list(range(100, 140))
    for i, h in enumerate(hyps):
        lengths = {p.sequence_length for p in h.hypotheses}
        scores = [p.sequence_score for p in h.hypotheses]
        if i < 4:
            assert lengths == {0} and all(np.isnan(scores)), (i, lengths, scores)
        else:
            assert lengths == {5} and np.isfinite(scores).all(), (i, scores)
            assert scores[1:] == sorted(scores[1:], reverse=True), (i, scores)  # [0]: the fitted place
    right = [abs(int(h.hypotheses[0].map_key) - i) <= 2 for i, h in enumerate(hyps) if i >= 4]
    assert np.mean(right) >= 0.8, np.mean(right)


def _exited(pid: int) -> bool:
    """The process is gone or a zombie (exited, not yet reaped by its parent)."""
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_markers_show_the_match_and_the_query_and_sigterm_ends_the_node_cleanly(map_dir, images, tmp_path):
    """vpr/markers (docs/node.md: RViz) for a frame whose odometry is in the map's frame: a sphere at the
    best hypothesis's map pose, one at the query's pose, a line between them, all in the map frame and
    stamped with the image. Then SIGTERM (systemd, docker stop, a launch file's shutdown) ends the node with
    exit code 0 and no traceback, as SIGINT does."""
    import os
    import signal
    import subprocess

    from nav_msgs.msg import Odometry
    from visualization_msgs.msg import MarkerArray

    file = params_file(tmp_path, map_path=str(map_dir), image_topic="/robot/image", qos_reliability="reliable",
                       odom_topic="/robot/odom", rerank="off", temporal_window=0)
    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        markers = listen(probe, MarkerArray, "vpr/markers")
        odom_pub = probe.create_publisher(Odometry, "/robot/odom", RELIABLE)
        image_pub = probe.create_publisher(Image, "/robot/image", RELIABLE)
        assert spin_until(executor, lambda: odom_pub.get_subscription_count() and image_pub.get_subscription_count(),
                          120), "the node did not come up"
        odom = Odometry()
        odom.header.frame_id = "map"
        odom.pose.pose.position.x, odom.pose.pose.orientation.w = 20.0, 1.0
        for attempt in range(30):
            odom_pub.publish(odom)
            spin_until(executor, lambda: False, 0.1)
            image_pub.publish(image_msg(images[1][20], (40 + attempt) * 10**9))  # the other traversal at place 20
            if spin_until(executor, lambda: any(len(m.markers) >= 3 for m in markers), 3):
                break
        shown = next(m for m in markers if len(m.markers) >= 3)
        by_ns = {m.ns: m for m in shown.markers}
        assert {"vpr_match", "vpr_query", "vpr_link"} <= set(by_ns) <= {"vpr_match", "vpr_query", "vpr_link",
                                                                        "vpr_loop_edges"}, by_ns.keys()
        if "vpr_loop_edges" in by_ns:  # an accepted loop closure: its edge stays drawn
            assert by_ns["vpr_loop_edges"].points == by_ns["vpr_link"].points
        assert all(m.header.frame_id == "map" and m.header.stamp.sec >= 40 for m in shown.markers)
        assert abs(by_ns["vpr_match"].pose.position.x - 20.0) <= 2.0  # map frame k lies at x = k
        assert by_ns["vpr_query"].pose.position.x == 20.0
        link = by_ns["vpr_link"].points
        assert (link[0].x, link[1].x) == (20.0, by_ns["vpr_match"].pose.position.x)
        pids = subprocess.run(["pgrep", "-f", file], capture_output=True, text=True).stdout.split()
        assert pids, "the node's process was not found"
        for pid in pids:
            os.kill(int(pid), signal.SIGTERM)
        assert spin_until(executor, lambda: all(_exited(int(pid)) for pid in pids), 60), "SIGTERM did not end it"
    assert ended["returncode"] == 0, ended["output"]
    assert "Traceback" not in ended["output"], ended["output"]
