"""vpr_localizer through a real rclpy graph: images in, hypotheses, loop closures, pose and diagnostics out.

Every test runs in its own rclpy context on loopback in a private domain (conftest.py). The node
under test runs in-process (its worker thread publishes) or as its console script in a second
process; a test node publishes Corridor images and listens.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import REPO, corridor40_map, spin_until

rclpy = pytest.importorskip("rclpy")
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from vpr_ros.ros.interfaces import load_interfaces  # noqa: E402
from vpr_ros.ros.node import LocalizerNode  # noqa: E402
from vpr_ros.ros.parameters import PARAMETERS, params_file_text  # noqa: E402

MSGS = load_interfaces()
needs_interfaces = pytest.mark.skipif(MSGS is None, reason="vpr_ros_interfaces is not built")
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def image_msg(rgb: np.ndarray, stamp_ns: int, encoding: str = "rgb8") -> Image:
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rgb.shape[1] * 3)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.header.frame_id = "camera"
    msg.data = rgb.tobytes()
    return msg


def jpeg_msg(rgb: np.ndarray, stamp_ns: int) -> CompressedImage:
    msg = CompressedImage(format="jpeg")
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    return msg


@pytest.fixture(scope="module")
def images(corridor_dir):
    from vpr_ros.core.inputs.images import read_image

    refs = [read_image(p) for p in sorted((corridor_dir / "ref").glob("*.jpg"))[:40]]
    queries = [read_image(p) for p in sorted((corridor_dir / "query").glob("*.jpg"))[:40]]
    return refs, queries


@pytest.fixture(scope="module")
def map_dir(corridor_dir, tmp_path_factory):
    """A saved 40-frame Corridor map with poses 1 m apart and XFeat local features."""
    vpr_map = corridor40_map(corridor_dir)
    return vpr_map.save(tmp_path_factory.mktemp("maps") / "corridor40")


@pytest.fixture
def graph(request):
    """A context, an executor and a helper that starts a LocalizerNode with parameter overrides."""
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    nodes = []

    def start(**params):
        node = LocalizerNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        nodes.append(node)
        executor.add_node(node)
        return node

    probe = rclpy.create_node("vpr_test_probe", context=context)
    executor.add_node(probe)
    try:
        yield start, probe, executor
    finally:
        executor.shutdown()
        for node in nodes + [probe]:
            node.destroy_node()
        rclpy.shutdown(context=context)


def listen(probe, msg_type, topic, qos=RELIABLE) -> list:
    received = []
    probe.create_subscription(msg_type, topic, received.append, qos)
    return received


@contextlib.contextmanager
def node_processes(commands: list[list[str]], stop: int = signal.SIGINT):
    """Each command in its own process (nodes), and a probe node in a fresh context. On exit the probe goes and
    every process gets `stop` (SIGINT); `ended` then holds (returncode, output) per command."""
    from rclpy.executors import SingleThreadedExecutor

    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("vpr_process_probe", context=context)
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
            proc.send_signal(stop)
        for proc in procs:
            try:
                output, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            ended.append((proc.returncode, output))


@contextlib.contextmanager
def node_process(command: list[str], stop: int = signal.SIGINT):
    """One node process (node_processes); `ended` then holds its returncode and output."""
    ended, each = {}, []
    try:
        with node_processes([command], stop) as (probe, executor, each):
            yield probe, executor, ended
    finally:
        if each:
            ended.update(returncode=each[0][0], output=each[0][1])


def publish_until(probe, executor, topic: str, msg, answered, timeout_s: float = 60) -> None:
    """Publish `msg` on `topic` every 2 s until answered() holds (the node in another process may still
    be loading its models); fail after timeout_s."""
    pub = probe.create_publisher(type(msg), topic, RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0, timeout_s), "the node did not come up"
    deadline = time.monotonic() + timeout_s
    while not answered() and time.monotonic() < deadline:
        pub.publish(msg)
        spin_until(executor, lambda: bool(answered()), 2)
    assert answered(), f"no answer on the node's outputs within {timeout_s} s"


def test_params_file_lists_every_parameter_with_its_default():
    params = yaml.safe_load((REPO / "config" / "localize.yaml").read_text())["/**/vpr_localizer"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert value == PARAMETERS[name][0] and type(value) is type(PARAMETERS[name][0]), name
    assert (REPO / "config" / "localize.yaml").read_text() == params_file_text()


def test_launch_file_lets_the_params_file_rule():
    """launch/localize.launch.py, read as source (launch is not on PyPI): every override argument
    defaults to "" (= not given, the file's value holds), the params file comes first in the node's
    parameters and the overrides after it, and the node is the installed console script."""
    import ast

    from vpr_ros.ros.launch_args import OVERRIDES

    tree = ast.parse((REPO / "launch" / "localize.launch.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    declared = {}
    for call in (c for c in calls if c.func.id == "DeclareLaunchArgument"):
        default = next(k.value for k in call.keywords if k.arg == "default_value")
        name = call.args[0]
        if isinstance(name, ast.Constant):
            declared[name.value] = default
        else:  # the comprehension over OVERRIDES
            comp = next(n for n in ast.walk(tree) if isinstance(n, ast.ListComp) and call in ast.walk(n))
            assert ast.unparse(comp.generators[0].iter) == "OVERRIDES.items()"
            declared.update({o: default for o in OVERRIDES})
    assert {"params_file", "fastdds_shm", "namespace", "pose_graph", "pose_graph_params_file", "rviz", "rviz_config",
            *OVERRIDES} == set(declared)
    assert declared["rviz"].value == "false"  # RViz only when asked for
    assert declared["pose_graph"].value == "false"  # the back-end only when asked for
    assert declared["namespace"].value == ""  # no namespace unless given
    assert all(isinstance(declared[o], ast.Constant) and declared[o].value == "" for o in OVERRIDES)
    node, graph, rviz = (c for c in calls if c.func.id == "Node")
    rviz_keywords = {k.arg: k.value for k in rviz.keywords}
    assert (rviz_keywords["package"].value, rviz_keywords["executable"].value) == ("rviz2", "rviz2")
    assert ast.unparse(rviz_keywords["arguments"]) == "['-d', LaunchConfiguration('rviz_config').perform(context)]"
    keywords = {k.arg: k.value for k in node.keywords}
    graph_keywords = {k.arg: k.value for k in graph.keywords}
    assert (graph_keywords["executable"].value, ast.unparse(graph_keywords["namespace"])) == ("vpr_pose_graph",
                                                                                            "namespace or None")
    assert ast.unparse(graph_keywords["parameters"]) == "[graph_file, graph_overrides] if graph_overrides else [graph_file]"
    assert ast.unparse(keywords["parameters"]) == "[params_file, overrides] if overrides else [params_file]"
    assert (keywords["package"].value, keywords["executable"].value) == ("vpr_ros", "vpr_localizer")
    assert ast.unparse(keywords["namespace"]) == "namespace or None"


@pytest.mark.slow
@needs_interfaces
def test_localize_publishes_hypotheses_loop_pose_and_survives_bad_frames(graph, map_dir, images):
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped

    start, probe, executor = graph
    node = start(map_path=str(map_dir), image_topic="/test/image", qos_reliability="reliable", qos_depth=20,
                 queue_size=10, rerank="xfeat-mnn", accept_min_inliers=30, accept_min_similarity=0.0,
                 temporal_window=0, diagnostics_period_s=0.2)
    hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
    loops = listen(probe, MSGS.LoopClosure, "vpr/loop_closure")
    poses = listen(probe, PoseWithCovarianceStamped, "vpr/pose")
    diags = listen(probe, DiagnosticArray, "/diagnostics")
    pub = probe.create_publisher(Image, "/test/image", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 10)
    _, queries = images
    good = image_msg(queries[20], 100 * 10**9)
    bad = [image_msg(queries[0], 1, encoding="bayer_rggb8"),  # unsupported encoding
           Image(height=0, width=0, encoding="rgb8", step=0),  # empty
           image_msg(queries[0], 2)]
    bad[2].step = 100  # step smaller than a row
    for msg in bad + [good]:
        pub.publish(msg)
        spin_until(executor, lambda: False, 0.05)
    assert spin_until(executor, lambda: hyps and loops and poses, 30), (node.health.counts, len(hyps))
    out = hyps[-1]
    assert out.header.stamp.sec == 100 and out.map_name == "corridor40" and out.map_size == 40
    best = out.hypotheses[0]
    assert abs(best.map_key - 20) <= 2 and best.verified and best.inlier_count >= 30 and best.rank == 0
    assert best.has_pose and best.map_pose.position.x == best.map_key and np.isnan(best.probability)
    assert {t.stage for t in out.timing} >= {"descriptor", "search", "local_features", "match", "verify"}
    loop = loops[-1]
    assert loop.match_key == best.map_key and loop.method == MSGS.LoopClosure.METHOD_FUNDAMENTAL
    assert loop.match_stamp.sec == best.map_key + 1 and not loop.translation_scale_known
    assert poses[-1].pose.pose.position.x == best.map_key and poses[-1].header.frame_id == "map"
    assert node.health.counts["bad_frames"] == 3 and node.health.counts["processed"] == 1
    assert spin_until(executor, lambda: any(kv.key == "bad_frames" and kv.value == "3"
                                            for d in diags for s in d.status for kv in s.values), 5)


@pytest.mark.slow
@needs_interfaces
def test_a_calibrated_map_fills_probabilities_uncertainties_and_pose_covariance(graph, map_dir, images, tmp_path):
    from geometry_msgs.msg import PoseWithCovarianceStamped

    from vpr_ros.core.map.store import VPRMap
    from vpr_ros.core.matching.geometry import GeometricVerifier
    from vpr_ros.core.matching.reranker import Reranker
    from vpr_ros.core.build.uncertainty_training import train_uncertainty

    vpr_map = VPRMap.load(map_dir)
    vpr_map.uncertainty = train_uncertainty(vpr_map, {"epochs": 3, "views": 1, "positive_distance_m": 2.0},
                                            [Reranker("xfeat-mnn", GeometricVerifier())])
    calibrated = vpr_map.save(tmp_path / "calibrated")
    start, probe, executor = graph
    start(map_path=str(calibrated), image_topic="/test/image", qos_reliability="reliable", rerank="xfeat-mnn",
          accept_min_probability=0.0, accept_min_similarity=1.0, pose_sigma_m=1.0, temporal_window=0)
    hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
    loops = listen(probe, MSGS.LoopClosure, "vpr/loop_closure")
    poses = listen(probe, PoseWithCovarianceStamped, "vpr/pose")
    _, queries = images
    publish_until(probe, executor, "/test/image", image_msg(queries[20], 5 * 10**9), lambda: hyps and loops and poses)
    out = hyps[-1]
    assert np.isfinite(out.query_uncertainty) and out.query_uncertainty > 0
    for h in out.hypotheses:
        assert 0.0 <= h.probability <= 1.0 and np.isfinite(h.map_uncertainty)
        assert h.query_uncertainty == out.query_uncertainty
    assert loops[-1].probability == out.hypotheses[0].probability  # accepted by probability (similarity gate 1.0)
    cov = np.array(poses[-1].pose.covariance).reshape(6, 6)
    assert cov[0, 0] >= 1.0 and cov[1, 1] == pytest.approx(1.0) and cov[3, 3] > 1e5


@pytest.mark.slow
@needs_interfaces
def test_corrupt_compressed_frames_are_skipped(graph, map_dir, images):
    start, probe, executor = graph
    # the image_transport convention: base topic /test/image, compressed frames on /test/image/compressed
    node = start(map_path=str(map_dir), image_topic="/test/image", image_transport="compressed",
                 qos_reliability="reliable", queue_size=10)
    hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
    pub = probe.create_publisher(CompressedImage, "/test/image/compressed", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 10)
    corrupt = jpeg_msg(images[1][5], 1)
    corrupt.data = bytes(corrupt.data[:200])
    for msg in (corrupt, CompressedImage(format="jpeg"), jpeg_msg(images[1][5], 2 * 10**9)):
        pub.publish(msg)
        spin_until(executor, lambda: False, 0.05)
    assert spin_until(executor, lambda: hyps, 30)
    assert node.health.counts["bad_frames"] == 2 and abs(hyps[-1].hypotheses[0].map_key - 5) <= 2


@pytest.mark.slow
@needs_interfaces
def test_a_flood_keeps_latency_bounded_and_counts_drops(graph, map_dir, images):
    start, probe, executor = graph
    node = start(map_path=str(map_dir), image_topic="/test/image", qos_reliability="reliable", qos_depth=100,
                 rerank="off")
    arrival = {}
    probe.create_subscription(MSGS.PlaceHypotheses, "vpr/hypotheses",
                              lambda m: arrival.setdefault(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec,
                                                           time.monotonic()), RELIABLE)
    pub = probe.create_publisher(Image, "/test/image", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 10)
    sent = {}
    for i in range(60):  # a burst of 60 frames in about 0.3 s, far faster than the node processes
        stamp = (1000 + i) * 10**7
        sent[stamp] = time.monotonic()
        pub.publish(image_msg(images[1][i % 40], stamp))
        time.sleep(0.005)
        if i % 10 == 9:
            executor.spin_once(timeout_sec=0.0)
    last = max(sent)
    assert spin_until(executor, lambda: last in arrival, 20), "the newest frame must always be processed"
    latency = [arrival[s] - sent[s] for s in arrival]
    assert node.health.counts["received"] == 60 and node.health.counts["dropped"] >= 30, node.health.counts
    assert len(arrival) == node.health.counts["processed"] <= 30
    assert max(latency) < 2.0, f"latency grew to {max(latency):.2f} s under a flood"


@pytest.mark.slow
@needs_interfaces
def test_load_and_save_map_services(graph, map_dir, tmp_path):
    start, probe, executor = graph
    start(map_path=str(map_dir), image_topic="/test/image")
    load = probe.create_client(MSGS.LoadMap, "vpr/load_map")
    save = probe.create_client(MSGS.SaveMap, "vpr/save_map")
    assert spin_until(executor, lambda: load.service_is_ready() and save.service_is_ready(), 10)

    def call(client, request):
        future = client.call_async(request)
        assert spin_until(executor, future.done, 30)
        return future.result()

    broken = call(load, MSGS.LoadMap.Request(map_path=str(tmp_path / "absent")))
    assert not broken.success and "current map stays" in broken.message
    reloaded = call(load, MSGS.LoadMap.Request(map_path=str(map_dir)))
    assert reloaded.success and reloaded.map_name == "corridor40" and reloaded.map_size == 40
    saved = call(save, MSGS.SaveMap.Request(map_path=str(tmp_path / "copy"), overwrite=False))
    assert saved.success and saved.map_size == 40
    again = call(save, MSGS.SaveMap.Request(map_path=str(tmp_path / "copy"), overwrite=False))
    assert not again.success and "overwrite" in again.message
    from vpr_ros.core.map.store import VPRMap

    assert len(VPRMap.load(saved.map_path)) == 40


@pytest.mark.slow
@needs_interfaces
def test_slam_mode_closes_a_loop_and_saves_the_online_map(graph, images, tmp_path):
    start, probe, executor = graph
    node = start(mode="slam", image_topic="/test/image", qos_reliability="reliable", qos_depth=100, queue_size=100,
                 rerank="xfeat-mnn", bootstrap_frames=20, exclude_recent_s=15.0, exclude_recent_frames=5,
                 accept_min_inliers=40, accept_min_similarity=0.0, temporal_window=1, temporal_tolerance=3,
                 publish_loop_array=True, save_map_path=str(tmp_path / "online"))
    from std_msgs.msg import Float64MultiArray

    loops = listen(probe, MSGS.LoopClosure, "vpr/loop_closure")
    arrays = listen(probe, Float64MultiArray, "vpr/loop_closure_detection")
    hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
    pub = probe.create_publisher(Image, "/test/image", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 10)
    refs, queries = images
    # one pass along the corridor, then the other traversal's images of frames 10-17, 300 s later
    sequence = [(refs[i], (i + 1) * 10**9) for i in range(30)] + [(queries[i], (300 + i) * 10**9) for i in range(10, 18)]
    for i, (rgb, stamp) in enumerate(sequence):  # paced: slam must see every keyframe
        pub.publish(image_msg(rgb, stamp))
        assert spin_until(executor, lambda: node.health.counts["processed"] > i, 30), node.health.counts
    assert spin_until(executor, lambda: len(hyps) == len(sequence), 10), (len(hyps), node.health.counts)
    for out in hyps:  # never a hypothesis among the newest frames
        query_key = out.query_id
        assert all(h.map_key <= query_key - 5 and out.header.stamp.sec - h.map_stamp.sec >= 15 for h in out.hypotheses)
    revisit = [loop for loop in loops if loop.header.stamp.sec >= 300]
    assert len(revisit) >= 4, [(loop.header.stamp.sec, loop.match_key) for loop in loops]
    for loop in revisit:  # the revisit closes on the start of the corridor (ground truth: +-2 frames)
        assert abs(int(loop.match_key) - (loop.header.stamp.sec - 300)) <= 3, (loop.header.stamp.sec, loop.match_key)
        assert loop.query_key >= 30 and loop.method == MSGS.LoopClosure.METHOD_FUNDAMENTAL
    assert arrays and arrays[-1].data[0] >= 300 and arrays[-1].data[1] < 25
    save = probe.create_client(MSGS.SaveMap, "vpr/save_map")
    assert spin_until(executor, save.service_is_ready, 10)
    future = save.call_async(MSGS.SaveMap.Request())
    assert spin_until(executor, future.done, 30) and future.result().success, future.result()
    from vpr_ros.core.map.store import VPRMap

    saved = VPRMap.load(tmp_path / "online")
    assert len(saved) == 38 and saved.local is not None


def test_console_scripts_print_their_help_with_every_parameter():
    """`vpr_localizer --help` and `vpr_pose_graph -h` print what the node does and every parameter with its
    default (the shipped params files' text) and exit 0, starting no node; --help after --ros-args is ROS's."""
    for script, params_file, names in (("vpr_localizer", "localize.yaml", ("map_path", "min_keypoint_share")),
                                       ("vpr_pose_graph", "pose_graph.yaml", ("odom_topic", "kernel"))):
        done = subprocess.run([str(Path(sys.executable).parent / script), "--help"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (REPO / "config" / params_file).read_text() in done.stdout and all(n in done.stdout for n in names)
        assert "needs map_path" not in done.stdout + done.stderr


@pytest.mark.slow
def test_console_script_runs_with_the_params_file_and_rejects_bad_parameters(map_dir, images):
    script = Path(sys.executable).parent / "vpr_localizer"
    params = [str(script), "--ros-args", "--params-file", str(REPO / "config" / "localize.yaml")]
    for extra, message in [(["-p", f"map_path:={map_dir}", "-p", "top_k:=0"], "top_k"),  # out of range
                           (["-p", f"map_path:={map_dir}", "-p", "mode:=mapping"], "must be one of"),
                           ([], "needs map_path")]:
        bad = subprocess.run(params + extra, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and message in bad.stdout + bad.stderr, (extra, bad.stdout, bad.stderr)
    if MSGS is None:
        pytest.skip("vpr_ros_interfaces is not built: no hypotheses topic to listen to")
    with node_process(params + ["-p", f"map_path:={map_dir}", "-p", "image_topic:=/cli/image",
                       "-p", "qos_reliability:=reliable"]) as (probe, executor, ended):
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        publish_until(probe, executor, "/cli/image", image_msg(images[1][20], 5 * 10**9), lambda: hyps)
        assert min(abs(h.map_key - 20) for h in hyps[0].hypotheses[:3]) <= 2, hyps[0].hypotheses
    assert ended["returncode"] == 0, ended["output"]


def test_image_messages_convert_exactly_and_reject_bad_fields():
    from vpr_ros.core.inputs.images import ImageError
    from vpr_ros.ros.image_msgs import compressed_to_array, image_to_array

    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    padded = Image(height=40, width=50, encoding="bgr8", step=160)  # 10 bytes of row padding
    rows = np.zeros((40, 160), np.uint8)
    rows[:, :150] = rgb[:, :, ::-1].reshape(40, 150)
    padded.data = rows.tobytes()
    np.testing.assert_array_equal(image_to_array(padded), rgb)
    depth = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50)
    big = Image(height=40, width=50, encoding="16UC1", step=100, is_bigendian=1, data=depth.astype(">u2").tobytes())
    np.testing.assert_array_equal(image_to_array(big), depth)
    mono = Image(height=40, width=50, encoding="mono8", step=50, data=rgb[:, :, 0].tobytes())
    np.testing.assert_array_equal(image_to_array(mono), rgb[:, :, 0])
    np.testing.assert_array_equal(compressed_to_array(jpeg_msg(rgb, 0)).shape, (40, 50, 3))
    for msg, message in [
        (Image(height=40, width=50, encoding="yuv422", step=100, data=bytes(4000)), "unsupported image encoding"),
        (Image(height=0, width=50, encoding="rgb8", step=150), "empty image"),
        (Image(height=40, width=50, encoding="rgb8", step=149, data=bytes(149 * 40)), "smaller than"),
        (Image(height=40, width=50, encoding="rgb8", step=150, data=bytes(100)), "need 6000"),
        (CompressedImage(format="jpeg", data=b"\xff\xd8 not a jpeg"), "cannot decode"),
    ]:
        with pytest.raises(ImageError, match=message):
            (compressed_to_array if isinstance(msg, CompressedImage) else image_to_array)(msg)


BLOCK_INTERFACES = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "vpr_ros_interfaces":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked for this test)")
        return None
sys.meta_path.insert(0, Block())
from vpr_ros.ros.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_without_the_interface_package_the_node_serves_standard_topics(map_dir, images):
    """vpr_ros_interfaces made unimportable in a second process: one warning, then pose and diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped

    with node_process([sys.executable, "-c", BLOCK_INTERFACES, "--ros-args", "-p", f"map_path:={map_dir}",
                       "-p", "image_topic:=/bare/image", "-p", "qos_reliability:=reliable",
                       "-p", "accept_min_similarity:=0.0", "-p", "temporal_window:=0"]) as (probe, executor, ended):
        poses = listen(probe, PoseWithCovarianceStamped, "vpr/pose")
        diags = listen(probe, DiagnosticArray, "/diagnostics")
        publish_until(probe, executor, "/bare/image", image_msg(images[1][20], 7 * 10**9), lambda: poses)
        assert poses[0].header.frame_id == "map"
        assert spin_until(executor, lambda: diags, 10)
        assert probe.get_topic_names_and_types() and not any(
            name.endswith("vpr/hypotheses") for name, _ in probe.get_topic_names_and_types())
    assert ended["output"].count("vpr_ros_interfaces is not available") == 1, ended["output"]
    assert ended["returncode"] == 0, ended["output"]


@pytest.mark.slow
def test_fastdds_shared_memory_profile_loads_and_carries_images():
    """config/fastdds_shm.xml: Fast DDS parses it (a broken profile prints XMLPARSER errors) and a
    640x480 image crosses between two participants that use it."""
    code = """
import time, rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image
rclpy.init()
a, b = rclpy.create_node("shm_a"), rclpy.create_node("shm_b")
got = []
b.create_subscription(Image, "shm_image", got.append, 10)
pub = a.create_publisher(Image, "shm_image", 10)
ex = SingleThreadedExecutor(); ex.add_node(a); ex.add_node(b)
deadline = time.time() + 20
while not got and time.time() < deadline:
    pub.publish(Image(height=480, width=640, encoding="rgb8", step=1920, data=bytes(921600)))
    ex.spin_once(timeout_sec=0.1)
print("received", len(got[0].data) if got else 0)
"""
    env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds_shm.xml"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert "XMLPARSER" not in out.stdout + out.stderr, out.stderr
    assert "received 921600" in out.stdout, out.stdout + out.stderr


@pytest.mark.slow
@needs_interfaces
def test_the_node_runs_the_descriptor_on_onnxruntime(graph, map_dir, images, tmp_path, monkeypatch):
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path / "cache"))
    start, probe, executor = graph
    start(map_path=str(map_dir), image_topic="/test/image", qos_reliability="reliable", backend="onnxruntime")
    hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
    pub = probe.create_publisher(Image, "/test/image", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 10)
    pub.publish(image_msg(images[1][12], 5 * 10**9))
    assert spin_until(executor, lambda: hyps, 60)
    assert hyps[0].backend == "onnxruntime/cpu" and abs(hyps[0].hypotheses[0].map_key - 12) <= 2


@pytest.mark.slow
@needs_interfaces
def test_the_node_runs_a_published_model_map_whose_checkpoint_moved(graph, corridor_dir, images, tmp_path):
    """A map of a published preset records its checkpoint; the `checkpoint` parameter points to where the
    file is now (untrained CosPlace weights: a map frame itself must come back first)."""
    import torch

    from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
    from vpr_ros.core.map.frames import FrameTable
    from vpr_ros.core.build.map_builder import build_map
    from vpr_ros.core.build.sources import load_image_file

    weights = tmp_path / "ResNet18_512_cosplace.pth"
    torch.save(GlobalDescriptor("cosplace-r18-512", random_weights=True, seed=4).net.state_dict(), weights)
    paths = sorted((corridor_dir / "ref").glob("*.jpg"))[:20]
    frames = FrameTable.build(np.arange(1, 21) * 10**9, paths)
    map_dir = build_map("cosplace20", frames, load_image_file, "cosplace-r18-512",
                        checkpoint=str(weights)).save(tmp_path / "cosplace20")
    moved = weights.rename(tmp_path / "moved.pth")
    start, probe, executor = graph
    start(map_path=str(map_dir), image_topic="/test/image", qos_reliability="reliable", checkpoint=str(moved),
          rerank="off")  # the map stores no local features
    hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
    pub = probe.create_publisher(Image, "/test/image", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 10)
    pub.publish(image_msg(images[0][7], 5 * 10**9))
    assert spin_until(executor, lambda: hyps, 60)
    assert hyps[0].descriptor == "cosplace-r18-512" and hyps[0].hypotheses[0].map_key == 7
