"""Replay a bag's images through a running `vpr_localizer` (a real ROS graph) and record its answers.

The node runs as its own process, as a robot starts it (its console script with the shipped
config/localize.yaml, then the replay's parameters as `-p` overrides), on a private ROS domain over loopback,
subscribed reliably to the replayed images, camera info and (optionally) depth images; this process
publishes each image at its bag time divided by `rate` (rate 0: the next image only after the node
answered the previous), its depth image just before it, and collects the PlaceHypotheses, LoopClosure
and vpr/pose messages. An image the node never answered (dropped
because frames came faster than it processed them, or refused as bad) is recorded as dropped.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.evaluation.replay import BAD, DROPPED, PROCESSED, QueryRecord, stage_timings
from vpr_ros.core.inputs.images import ImageError, to_rgb8

IMAGE_TOPIC, INFO_TOPIC, DEPTH_TOPIC = "/vpr_eval/image_raw", "/vpr_eval/camera_info", "/vpr_eval/depth"
PRIOR_TOPIC, ODOM_TOPIC = "/vpr_eval/prior", "/vpr_eval/odom"


def node_arguments(map_dir: Path | None, config: LocalizerConfig, with_info: bool, with_depth: bool = False,
                   with_prior: bool = False, with_odometry: bool = False) -> list[str]:
    """`--ros-args` for a node that answers like the core Localizer with `config` (map_dir None: slam from an
    empty map)."""
    params = {**config.as_parameters(), "map_path": str(map_dir) if map_dir else "", "image_topic": IMAGE_TOPIC,
              "qos_reliability": "reliable", "qos_depth": 10, "camera_info_topic": INFO_TOPIC if with_info else "",
              "depth_topic": DEPTH_TOPIC if with_depth else "", "prior_topic": PRIOR_TOPIC if with_prior else "",
              "odom_topic": ODOM_TOPIC if with_odometry else ""}
    return ros_arguments(params)


def pose_graph_command(arguments: list[str]) -> list[str]:
    """vpr_pose_graph as a robot starts it (shipped_node_command)."""
    return shipped_node_command("vpr_pose_graph", "vpr_ros.ros.pose_graph", "pose_graph.yaml", arguments)


def localizer_command(arguments: list[str]) -> list[str]:
    """vpr_localizer as a robot starts it (shipped_node_command)."""
    return shipped_node_command("vpr_localizer", "vpr_ros.ros.main", "localize.yaml", arguments)


def shipped_node_command(script: str, module: str, params_file: str, arguments: list[str]) -> list[str]:
    """A node as a robot starts it: its console script (beside this Python; else `python -m module`) with the
    shipped params file (config/<params_file> of this checkout or install, when found), then `arguments`
    (`--ros-args -p ...`, which override the file)."""
    script = Path(sys.executable).parent / script
    command = [str(script)] if script.is_file() else [sys.executable, "-m", module]
    params = Path(__file__).resolve().parents[2] / "config" / params_file
    if params.is_file():
        command += ["--ros-args", "--params-file", str(params)]
        arguments = [a for a in arguments if a != "--ros-args"]
    return command + list(arguments)


def ros_arguments(params: dict) -> list[str]:
    """`--ros-args -p name:=value ...` of a parameter dict."""
    args = ["--ros-args"]
    for name, value in params.items():
        # values are read as YAML: a string is quoted ("off" would be a boolean, "" nothing), a float keeps its point
        text = json.dumps(value) if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
        args += ["-p", f"{name}:={text}"]
    return args


def _record(index: int, stamp_ns: int, pose, msg, sent: float, received: float) -> QueryRecord:
    h = msg.hypotheses
    timings = stage_timings({t.stage: float(t.ms) for t in msg.timing})
    timings["end_to_end"] = (received - sent) * 1e3  # published -> answer received, through the graph
    return QueryRecord(
        index, stamp_ns, np.full(7, np.nan) if pose is None else np.asarray(pose, np.float64), PROCESSED,
        keys=np.array([p.map_key for p in h], np.int64), global_ranks=np.array([p.global_rank for p in h], np.int64),
        similarities=np.array([p.global_similarity for p in h], np.float64),
        probabilities=np.array([p.probability for p in h], np.float64),
        inliers=np.array([p.inlier_count for p in h], np.int64), verified=np.array([p.verified for p in h], bool),
        reranked=any(p.verification_note != "not_reranked" for p in h),
        map_uncertainty=np.array([p.map_uncertainty for p in h], np.float64),
        pair_likelihoods=np.array([p.pair_likelihood for p in h], np.float64),
        sequence_scores=np.array([p.sequence_score for p in h], np.float64),
        sequence_length=int(h[0].sequence_length) if len(h) else 0,
        query_uncertainty=float(msg.query_uncertainty), timings_ms=timings,
        search_frames=int(msg.searched_frames) if msg.searched_frames < msg.map_size else -1)


def replay_through_node(map_dir: Path | None, items: list, config: LocalizerConfig,
                        camera_K: np.ndarray | None = None, rate: float = 1.0, progress: bool = True,
                        startup_timeout_s: float = 180.0, answer_timeout_s: float = 60.0, domain_id: int | None = None,
                        depth=None, prior=None, odometry=None, pose_graph: list[str] | None = None,
                        outputs: dict | None = None) -> list[QueryRecord]:
    """items: (stamp_ns, true pose or None, image loader) in bag order -> one QueryRecord per item. depth:
    stamp_ns -> the frame's aligned depth image in metres, or None (build.bag_source.BagDepth). prior:
    (stamp_ns, true pose) -> a pose PositionPrior or None (core.evaluation.replay.simulated_prior), published
    on the node's prior_topic before each image. odometry: a build.bag_source.OdometryStream, its messages
    published on the node's odom_topic in stamp order before each image. pose_graph: `--ros-args ...` of a
    vpr_pose_graph to run beside the node (on ODOM_TOPIC and vpr/loop_closure); `outputs` then gets its last
    optimised path ("path": (stamps, N x 7) or None) and its log ("pose_graph_log")."""
    from vpr_ros.ros.interfaces import load_interfaces
    from vpr_ros.ros.launch_args import environment, shared_memory_environment

    msgs = load_interfaces(None)
    if msgs is None:
        raise RuntimeError("vpr_ros_interfaces is not importable; build it (scripts/build_interfaces.py) first")
    domain = domain_id if domain_id is not None else random.randint(150, 230)
    shm = shared_memory_environment()
    node, player = _NodeProcess(map_dir, config, camera_K is not None, domain, depth is not None, prior is not None,
                                shm, odometry is not None), None
    graph = None
    try:
        if pose_graph is not None:
            graph = _NodeProcess.command(pose_graph_command(pose_graph), domain, shm, "vpr_pose_graph")
        with environment(shm):  # read by Fast DDS when this process makes its first participant
            player = _Player(msgs, domain)
        node.wait_until_up(player, startup_timeout_s)
        if graph is not None:
            graph.wait_for(lambda: player.odom_pub.get_subscription_count() >= 2, startup_timeout_s)
        bad = _play(player, node, items, camera_K, rate, answer_timeout_s, progress, depth, prior, odometry)
        player.wait_for_quiet(len(items), min(answer_timeout_s, 10.0))
        if graph is not None:  # the back-end publishes its path every publish_period_s: wait for one after the last closure
            time.sleep(3.0)
            if outputs is not None:
                outputs["path"] = player.path()
        if progress:
            print(f"\r  published {len(items)} frames, {len(player.answers)} answered" + " " * 10)
    finally:
        node.stop()
        if graph is not None:
            log = graph.stop()
            if outputs is not None:
                outputs["pose_graph_log"] = log
        if player is not None:
            player.close()
    return _records(items, player, bad)


class _NodeProcess:
    """vpr_localizer in its own process on a private domain over loopback, its output in a temporary log."""

    def __init__(self, map_dir: Path | None, config: LocalizerConfig | None, with_info: bool, domain: int,
                 with_depth: bool = False, with_prior: bool = False, extra_env: dict[str, str] | None = None,
                 with_odometry: bool = False, command: list[str] | None = None, name: str = "vpr_localizer"):
        env = {**os.environ, **(extra_env or {}), "ROS_DOMAIN_ID": str(domain),
               "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
        self.name = name
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"vpr_eval_{name}_", suffix=".log", delete=False)
        if command is None:
            command = localizer_command(node_arguments(Path(map_dir).resolve() if map_dir else None, config, with_info,
                                                       with_depth, with_prior, with_odometry))
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    @classmethod
    def command(cls, command: list[str], domain: int, extra_env: dict[str, str] | None, name: str) -> "_NodeProcess":
        """Another node's process on the same private domain."""
        return cls(None, None, False, domain, extra_env=extra_env, command=command, name=name)

    def wait_for(self, ready, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if not self.alive() or time.monotonic() > deadline:
                raise self.fail(f"did not come up ({'timed out' if self.alive() else 'exited'})")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.process.poll() is None

    def fail(self, what: str) -> RuntimeError:
        self.log.seek(0)
        return RuntimeError(f"{self.name} {what}; its log:\n{self.log.read()[-3000:]}")

    def wait_until_up(self, player: "_Player", timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not player.connected():
            if not self.alive() or time.monotonic() > deadline:
                raise self.fail(f"did not come up ({'timed out' if self.alive() else 'exited'})")
            time.sleep(0.1)
        time.sleep(0.5)  # let discovery of the answering topics settle

    def stop(self) -> str:
        """SIGINT, then the process's output (its log file is removed)."""
        self.process.send_signal(2)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.seek(0)
        output = self.log.read()
        self.log.close()
        os.unlink(self.log.name)
        return output


class _Player:
    """The replaying side: publishes images (and camera info), collects hypotheses and loop closures."""

    def __init__(self, msgs, domain: int):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("vpr_eval_player", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.answers: dict[int, tuple[object, float]] = {}  # stamp -> (PlaceHypotheses, arrival)
        self.loops: dict[int, object] = {}  # stamp -> LoopClosure
        self.poses: dict[int, object] = {}  # stamp -> vpr/pose
        self.sent: dict[int, float] = {}  # stamp -> when its image was published
        self.answered = threading.Condition()
        qos, big = (QoSProfile(depth=d, reliability=ReliabilityPolicy.RELIABLE) for d in (10, 1000))
        self.node.create_subscription(msgs.PlaceHypotheses, "/vpr/hypotheses", self._on_hypotheses, big)
        self.node.create_subscription(msgs.LoopClosure, "/vpr/loop_closure", self._on_loop, big)
        self.node.create_subscription(PoseWithCovarianceStamped, "/vpr/pose", self._on_pose, big)
        self.image_pub = self.node.create_publisher(Image, IMAGE_TOPIC, qos)
        self.info_pub = self.node.create_publisher(CameraInfo, INFO_TOPIC, qos)
        self.depth_pub = self.node.create_publisher(Image, DEPTH_TOPIC, qos)
        self.prior_pub = self.node.create_publisher(PoseWithCovarianceStamped, PRIOR_TOPIC, qos)
        from nav_msgs.msg import Odometry, Path as PathMsg
        from rclpy.qos import DurabilityPolicy

        self.odom_pub = self.node.create_publisher(Odometry, ODOM_TOPIC, big)
        self.paths: list = []
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(PathMsg, "/vpr/optimized_path", self.paths.append, latched)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def _on_hypotheses(self, msg) -> None:
        from vpr_ros.ros.convert import stamp_to_ns

        with self.answered:
            self.answers[stamp_to_ns(msg.header.stamp)] = (msg, time.perf_counter())
            self.answered.notify_all()

    def _on_loop(self, msg) -> None:
        from vpr_ros.ros.convert import stamp_to_ns

        self.loops[stamp_to_ns(msg.query_stamp)] = msg

    def _on_pose(self, msg) -> None:
        from vpr_ros.ros.convert import stamp_to_ns

        self.poses[stamp_to_ns(msg.header.stamp)] = msg

    def path(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The back-end's last optimised path: (stamps ns, N x 7), or None when none came."""
        if not self.paths:
            return None
        poses = self.paths[-1].poses
        stamps = np.array([p.header.stamp.sec * 1_000_000_000 + p.header.stamp.nanosec for p in poses], np.int64)
        return stamps, np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z, p.pose.orientation.x,
                                  p.pose.orientation.y, p.pose.orientation.z, p.pose.orientation.w] for p in poses])

    def connected(self) -> bool:
        return self.image_pub.get_subscription_count() > 0 and self.node.count_publishers("/vpr/hypotheses") > 0

    def wait_for_answer(self, stamp_ns: int, node: _NodeProcess, timeout_s: float) -> None:
        with self.answered:
            self.answered.wait_for(lambda: stamp_ns in self.answers or not node.alive(), timeout_s)

    def wait_for_quiet(self, expected: int, quiet_s: float) -> None:
        """Until every frame is answered or no answer came for quiet_s; then loop closures catch up."""
        last, quiet_since = len(self.answers), time.monotonic()
        while len(self.answers) < expected and time.monotonic() - quiet_since < quiet_s:
            time.sleep(0.2)
            if len(self.answers) != last:
                last, quiet_since = len(self.answers), time.monotonic()
        time.sleep(0.5)  # loop closures follow their hypotheses

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _image_messages(rgb: np.ndarray, stamp_ns: int, camera_K: np.ndarray | None):
    """(Image, CameraInfo or None) of an RGB frame, stamped, in the camera's optical frame."""
    from sensor_msgs.msg import CameraInfo, Image

    from vpr_ros.ros.convert import ns_to_stamp

    image = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0,
                  step=rgb.shape[1] * 3, data=rgb.tobytes())
    image.header.stamp, image.header.frame_id = ns_to_stamp(stamp_ns), "camera_optical"
    if camera_K is None:
        return image, None
    info = CameraInfo(height=rgb.shape[0], width=rgb.shape[1], distortion_model="plumb_bob",
                      k=np.asarray(camera_K, np.float64).reshape(-1).tolist())
    info.header = image.header
    return image, info


def _prior_message(prior):
    """geometry_msgs/PoseWithCovarianceStamped of a pose prior (frame left empty: the map's)."""
    from geometry_msgs.msg import PoseWithCovarianceStamped

    from vpr_ros.ros.convert import ns_to_stamp

    msg = PoseWithCovarianceStamped()
    msg.header.stamp = ns_to_stamp(prior.stamp_ns)
    msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = (float(v) for v in prior.position)
    msg.pose.pose.orientation.w = 1.0
    covariance = np.zeros((6, 6))
    covariance[:3, :3] = prior.covariance
    covariance[3:, 3:] = np.eye(3) * 1e6  # orientation unknown
    msg.pose.covariance = covariance.ravel().tolist()
    return msg


def _depth_message(depth_m: np.ndarray, stamp_ns: int):
    """A 32FC1 depth Image (metres, NaN no reading) in the camera's optical frame."""
    from sensor_msgs.msg import Image

    from vpr_ros.ros.convert import ns_to_stamp

    depth_m = np.ascontiguousarray(depth_m, np.float32)
    msg = Image(height=depth_m.shape[0], width=depth_m.shape[1], encoding="32FC1", is_bigendian=0,
                step=depth_m.shape[1] * 4, data=depth_m.tobytes())
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), "camera_optical"
    return msg


def _odometry_message(odometry, k: int):
    from nav_msgs.msg import Odometry

    from vpr_ros.ros.convert import ns_to_stamp
    from vpr_ros.ros.messages import pose_msg

    msg = Odometry()
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(int(odometry.stamp_ns[k])), odometry.frame_id or "odom"
    msg.child_frame_id = odometry.child_frame_id or "base_link"
    msg.pose.pose = pose_msg(odometry.pose[k])
    msg.pose.covariance = np.asarray(odometry.covariance[k], np.float64).reshape(36).tolist()
    return msg


def _play(player: _Player, node: _NodeProcess, items: list, camera_K, rate: float, answer_timeout_s: float,
          progress: bool, depth=None, prior=None, odometry=None) -> dict[int, str]:
    """Publish every item at its bag time / rate (rate 0: after the previous answer); returns the stamps
    of images that could not be published (undecodable), with why: recorded, not fatal."""
    bad: dict[int, str] = {}
    start, first = time.perf_counter(), items[0][0] if items else 0
    next_odometry = 0
    for index, (stamp_ns, true_pose, load) in enumerate(items):
        try:
            image, info = _image_messages(to_rgb8(load()), stamp_ns, camera_K)
        except (ImageError, ValueError) as exc:
            bad[stamp_ns] = str(exc)
            continue
        if rate > 0 and (wait := start + (stamp_ns - first) / 1e9 / rate - time.perf_counter()) > 0:
            time.sleep(wait)
        while odometry is not None and next_odometry < len(odometry.stamp_ns) and \
                odometry.stamp_ns[next_odometry] <= stamp_ns:
            player.odom_pub.publish(_odometry_message(odometry, next_odometry))
            next_odometry += 1
        if info is not None:
            player.info_pub.publish(info)
        where = prior(stamp_ns, true_pose) if prior is not None else None
        if where is not None:
            player.prior_pub.publish(_prior_message(where))
        frame_depth = depth(stamp_ns) if depth is not None else None
        if frame_depth is not None:
            player.depth_pub.publish(_depth_message(frame_depth, stamp_ns))
        player.sent[stamp_ns] = time.perf_counter()
        player.image_pub.publish(image)
        if rate == 0:
            player.wait_for_answer(stamp_ns, node, answer_timeout_s)
        if progress and (index + 1) % 25 == 0:
            print(f"\r  published {index + 1}/{len(items)} frames, {len(player.answers)} answered", end="", flush=True)
        if not node.alive():
            raise node.fail("exited during the replay")
    return bad


def _add_loop(record: QueryRecord, loop, pose) -> None:
    """The LoopClosure (and vpr/pose) the node published for a frame, into its record."""
    from vpr_ros.ros.messages import loop_methods

    names = {constant: name for name, constant in loop_methods(type(loop)).items()}
    record.loop_key, record.loop_method = int(loop.match_key), names.get(loop.method, "global_descriptor")
    p, q = loop.relative_pose.position, loop.relative_pose.orientation
    record.loop_relative = np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w])
    record.loop_covariance = np.asarray(loop.covariance, np.float64).reshape(6, 6)
    record.loop_scale_known, record.loop_scale_note = bool(loop.translation_scale_known), loop.scale_note
    record.loop_detail = loop.method_detail
    record.loop_match_stamp_ns = loop.match_stamp.sec * 1_000_000_000 + loop.match_stamp.nanosec
    if pose is not None:
        p, q = pose.pose.pose.position, pose.pose.pose.orientation
        record.localized_pose = np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w])
        record.localized_metric = record.loop_scale_known  # the node publishes the metric pose when it can
        record.localized_covariance = np.asarray(pose.pose.covariance, np.float64).reshape(6, 6)


def _records(items: list, player: _Player, bad: dict[int, str]) -> list[QueryRecord]:
    records = []
    for index, (stamp_ns, pose, _) in enumerate(items):
        if stamp_ns in player.answers:
            msg, received = player.answers[stamp_ns]
            record = _record(index, stamp_ns, pose, msg, player.sent[stamp_ns], received)
            if stamp_ns in player.loops:
                _add_loop(record, player.loops[stamp_ns], player.poses.get(stamp_ns))
        else:
            record = QueryRecord(index, stamp_ns, np.full(7, np.nan) if pose is None else np.asarray(pose, np.float64),
                                 BAD if stamp_ns in bad else DROPPED, note=bad.get(stamp_ns, "no answer from the node"))
        records.append(record)
    return records
