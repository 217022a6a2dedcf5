"""Replay a bag's images through a running `vpr_localizer` (a real ROS graph) and record its answers.

The node runs as its own process (`python -m vpr_ros.ros.main`) on a private ROS domain over loopback,
subscribed reliably to the replayed images and camera info; this process publishes each image at
its bag time divided by `rate` (rate 0: the next image only after the node answered the previous)
and collects the PlaceHypotheses and LoopClosure messages. An image the node never answered (dropped
because frames came faster than it processed them, or refused as bad) is recorded as dropped.
"""

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from vpr_ros.core.inputs.images import ImageError, to_rgb8
from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.evaluation.replay import BAD, DROPPED, PROCESSED, QueryRecord, stage_timings

IMAGE_TOPIC, INFO_TOPIC = "/vpr_eval/image_raw", "/vpr_eval/camera_info"


def node_arguments(map_dir: Path, config: LocalizerConfig, with_info: bool) -> list[str]:
    """`--ros-args` for a node that answers like the core Localizer with `config`."""
    params = {**config.as_parameters(), "map_path": str(map_dir), "image_topic": IMAGE_TOPIC,
              "qos_reliability": "reliable", "qos_depth": 10, "camera_info_topic": INFO_TOPIC if with_info else ""}
    args = ["--ros-args"]
    for name, value in params.items():
        text = '""' if value == "" else repr(value) if isinstance(value, float) else str(value)  # "" stays a string
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
        query_uncertainty=float(msg.query_uncertainty), timings_ms=timings)


def replay_through_node(map_dir: Path, items: list, config: LocalizerConfig, camera_K: np.ndarray | None = None,
                        rate: float = 1.0, progress: bool = True, startup_timeout_s: float = 180.0,
                        answer_timeout_s: float = 60.0, domain_id: int | None = None) -> list[QueryRecord]:
    """items: (stamp_ns, true pose or None, image loader) in bag order -> one QueryRecord per item."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from vpr_ros.ros.convert import ns_to_stamp, stamp_to_ns
    from vpr_ros.ros.interfaces import load_interfaces

    msgs = load_interfaces(None)
    if msgs is None:
        raise RuntimeError("vpr_ros_interfaces is not importable; build it (scripts/build_interfaces.py) first")
    domain = domain_id if domain_id is not None else random.randint(150, 230)
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    log = tempfile.NamedTemporaryFile("w+", prefix="vpr_eval_node_", suffix=".log", delete=False)
    process = subprocess.Popen([sys.executable, "-m", "vpr_ros.ros.main",
                                *node_arguments(Path(map_dir).resolve(), config, camera_K is not None)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    player = rclpy.create_node("vpr_eval_player", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(player)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    answers: dict[int, tuple[object, float]] = {}
    loops: dict[int, int] = {}
    answered = threading.Condition()

    def on_hypotheses(msg):
        with answered:
            answers[stamp_to_ns(msg.header.stamp)] = (msg, time.perf_counter())
            answered.notify_all()

    def on_loop(msg):
        loops[stamp_to_ns(msg.query_stamp)] = int(msg.match_key)

    big = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    player.create_subscription(msgs.PlaceHypotheses, "/vpr/hypotheses", on_hypotheses, big)
    player.create_subscription(msgs.LoopClosure, "/vpr/loop_closure", on_loop, big)
    image_pub = player.create_publisher(Image, IMAGE_TOPIC, qos)
    info_pub = player.create_publisher(CameraInfo, INFO_TOPIC, qos)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    sent: dict[int, float] = {}
    bad: dict[int, str] = {}  # images that cannot be published (undecodable): recorded, not fatal
    try:
        deadline = time.monotonic() + startup_timeout_s
        while image_pub.get_subscription_count() == 0 or player.count_publishers("/vpr/hypotheses") == 0:
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"vpr_localizer did not come up ({'exited' if process.poll() is not None else 'timed out'}); "
                                   f"its log:\n{log.read()[-3000:]}")
            time.sleep(0.1)
        time.sleep(0.5)  # let discovery of the answering topics settle
        start, first = time.perf_counter(), items[0][0] if items else 0
        for index, (stamp_ns, _, load) in enumerate(items):
            try:
                rgb = to_rgb8(load())
            except (ImageError, ValueError) as exc:
                bad[stamp_ns] = str(exc)
                continue
            image = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0,
                          step=rgb.shape[1] * 3, data=rgb.tobytes())
            image.header.stamp, image.header.frame_id = ns_to_stamp(stamp_ns), "camera_optical"
            if rate > 0:
                wait = start + (stamp_ns - first) / 1e9 / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            if camera_K is not None:
                info = CameraInfo(height=rgb.shape[0], width=rgb.shape[1], distortion_model="plumb_bob",
                                  k=np.asarray(camera_K, np.float64).reshape(-1).tolist())
                info.header = image.header
                info_pub.publish(info)
            sent[stamp_ns] = time.perf_counter()
            image_pub.publish(image)
            if rate == 0:
                with answered:
                    answered.wait_for(lambda: stamp_ns in answers or process.poll() is not None, answer_timeout_s)
            if progress and (index + 1) % 25 == 0:
                print(f"\r  published {index + 1}/{len(items)} frames, {len(answers)} answered", end="", flush=True)
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"vpr_localizer exited during the replay; its log:\n{log.read()[-3000:]}")
        # the last frames: wait until answers stop coming
        last = len(answers)
        quiet_since = time.monotonic()
        while len(answers) < len(items) and time.monotonic() - quiet_since < min(answer_timeout_s, 10.0):
            time.sleep(0.2)
            if len(answers) != last:
                last, quiet_since = len(answers), time.monotonic()
        time.sleep(0.5)  # loop closures follow their hypotheses
        if progress:
            print(f"\r  published {len(items)} frames, {len(answers)} answered" + " " * 10)
    finally:
        process.send_signal(2)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        executor.shutdown()
        player.destroy_node()
        rclpy.try_shutdown(context=context)
        log.close()
        os.unlink(log.name)
    records = []
    for index, (stamp_ns, pose, _) in enumerate(items):
        if stamp_ns in answers:
            msg, received = answers[stamp_ns]
            record = _record(index, stamp_ns, pose, msg, sent[stamp_ns], received)
            record.loop_key = loops.get(stamp_ns, -1)
        else:
            record = QueryRecord(index, stamp_ns, np.full(7, np.nan) if pose is None else np.asarray(pose, np.float64),
                                 BAD if stamp_ns in bad else DROPPED, note=bad.get(stamp_ns, "no answer from the node"))
        records.append(record)
    return records
