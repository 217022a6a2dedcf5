"""What the node benchmarks share (beside common.py): a saved Corridor map, vpr_localizer started as a robot starts it (its
console script in its own process, a params file), a camera stand-in that publishes 640x480 rgb8 at
a fixed rate from another process, and the node's resident memory. Not a benchmark itself.

The node and the camera stand-in talk over loopback only, in a private domain; with shm=True both use
config/fastdds_shm.xml (the launch file's default, `fastdds_shm:=true`).
"""

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from common import CORRIDOR, REPO, corridor_map as build_corridor_map


def isolate_ros(shm: bool) -> None:
    """Loopback only, a private domain and log folder; the shared-memory profile when asked. Call
    before rclpy.init (the middleware reads these when a participant is created)."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="vpr_bench_log_"))
    if shm:
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_shm.xml")
    else:
        os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)


def corridor_map(folder: Path) -> Path:
    """A map of the Corridor references with XFeat local features, saved under `folder`."""
    return build_corridor_map().save(folder / "corridor")


def camera_frames(count: int = 30) -> list[np.ndarray]:
    """Corridor queries upscaled to 640x480 rgb8, as a camera would send them."""
    from vpr_ros.core.inputs.images import list_images, read_image

    return [np.ascontiguousarray(cv2.resize(read_image(p), (640, 480))) for p in list_images(CORRIDOR / "query")[:count]]


def node_parameters(data: dict) -> dict:
    """The vpr_localizer parameters of a params file's YAML: under `/**/vpr_localizer` (the shipped file since
    the namespace work) or `vpr_localizer` (older checkouts, which node_latency.py may compare against)."""
    key = "/**/vpr_localizer" if "/**/vpr_localizer" in data else "vpr_localizer"
    return data[key]["ros__parameters"]


def params_file(folder: Path, base: Path, values: dict) -> Path:
    """`base` (a shipped config/localize.yaml) with `values` changed, written into `folder`."""
    data = yaml.safe_load(base.read_text())
    node_parameters(data).update(values)
    path = folder / "bench_params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, MiB (0 when it is gone)."""
    pids, total = {pid}, 0.0
    try:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) in pids:
                pids.add(int(stat.parent.name))
        for p in pids:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    except OSError:
        pass
    return total


def node_command(params: Path) -> list[str]:
    """vpr_localizer as its console script runs it, with a params file."""
    return [str(Path(sys.executable).parent / "vpr_localizer"), "--ros-args", "--params-file", str(params)]


class Process:
    """A child process with its output in a log file; SIGINT on exit, then its exit code in returncode."""

    def __init__(self, command: list[str], log: Path):
        self.command, self.log = command, log
        self.returncode: int | None = None

    def __enter__(self) -> "Process":
        self._out = open(self.log, "w")
        self.proc = subprocess.Popen(self.command, stdout=self._out, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.returncode = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
        self._out.close()


@dataclass
class Answer:
    stamp_ns: int
    received: float  # perf_counter
    stages: dict = field(default_factory=dict)


class Camera:
    """A probe node: publishes frames on `topic` (reliable QoS, depth 10), records each frame's publish
    time by stamp, and receives the node's PlaceHypotheses."""

    def __init__(self, topic: str):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from vpr_ros_interfaces.msg import PlaceHypotheses

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("vpr_bench_camera", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._Image = Image
        self.pub = self.node.create_publisher(Image, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.sent: dict[int, float] = {}
        self.answers: list[Answer] = []
        self.node.create_subscription(PlaceHypotheses, "vpr/hypotheses", self._on_answer,
                                      QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        # spin on a thread that sleeps in the middleware's wait: a polling loop would steal CPU from the node
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def _on_answer(self, msg) -> None:
        now = time.perf_counter()
        self.answers.append(Answer(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, now,
                                   {t.stage: t.ms for t in msg.timing}))

    def wait_for_node(self, timeout_s: float = 180) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.pub.get_subscription_count() > 0

    def messages(self, frames: list[np.ndarray]) -> list:
        out = []
        for rgb in frames:
            h, w = rgb.shape[:2]
            out.append(self._Image(height=h, width=w, encoding="rgb8", step=w * 3, data=rgb.tobytes()))
        return out

    def stream(self, messages: list, rate_hz: float, seconds: float, first_stamp_ns: int = 10**12,
               until=None) -> int:
        """Publish at `rate_hz` on absolute ticks for `seconds` (or until until() holds); return the
        number published. Stamps are first_stamp_ns + i / rate."""
        period = 1.0 / rate_hz
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < seconds and not (until and until()):
            msg = messages[i % len(messages)]
            stamp = first_stamp_ns + round(i * period * 1e9)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
            self.sent[stamp] = time.perf_counter()
            self.pub.publish(msg)
            i += 1
            delay = start + i * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        return i

    def warm_up(self, messages: list, frames: int = 3) -> None:
        """Frames at 1 Hz until the node has answered `frames` of them (its models are loaded and run
        once), then forget them: what is measured starts after."""
        self.stream(messages[:frames], 1.0, 120, first_stamp_ns=10**12, until=lambda: len(self.answers) >= frames)
        time.sleep(2.0)
        self.answers.clear()
        self.sent.clear()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self._spinner.join(timeout=5)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def out_of_order(answers: list[Answer]) -> int:
    """Answers whose image stamp is older than an answer already received."""
    latest, count = -1, 0
    for a in answers:
        if a.stamp_ns < latest:
            count += 1
        latest = max(latest, a.stamp_ns)
    return count
