"""End-to-end latency of vpr_localizer: image published -> PlaceHypotheses received. Prints figures.

Builds a map of the Corridor references (with XFeat local features) in a temporary folder, starts
`vpr_localizer` as its own process (the console script, loopback only, a private domain), publishes
the Corridor query images upscaled to 640x480 at --rate Hz (below the processing rate, so the
figures are the pipeline's, not queueing), and times each hypotheses message against its image's
publish time. Runs once per configuration: global retrieval only, and re-ranking with each matcher
given in --rerank.

    .venv/bin/python benchmarks/node_latency.py [--frames 60] [--rate 2] [--rerank xfeat-lighterglue,xfeat-mnn]
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

CORRIDOR = Path(__file__).resolve().parents[2] / "shared" / "data" / "corridor"
REPO = Path(__file__).resolve().parents[1]


def build_map(folder: Path) -> Path:
    from vpr_ros.core.datasets import list_images
    from vpr_ros.core.frames import FrameTable
    from vpr_ros.core.map_builder import build_map as build, load_image_file

    refs = list_images(CORRIDOR / "ref")
    frames = FrameTable.build(np.arange(len(refs)) * 10**9, refs)
    return build("corridor", frames, load_image_file, local_features="xfeat").save(folder / "corridor")


def run(map_dir: Path, rerank: str, frames: int, rate: float, qos_name: str) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vpr_ros_interfaces.msg import PlaceHypotheses

    from vpr_ros.core.datasets import list_images, read_image
    from vpr_ros.core.metrics import latency_summary

    script = Path(sys.executable).parent / "vpr_localizer"
    node = subprocess.Popen([str(script), "--ros-args", "--params-file", str(REPO / "config" / "localize.yaml"),
                             "-p", f"map_path:={map_dir}", "-p", "image_topic:=/bench/image",
                             "-p", f"qos_reliability:={qos_name}", *(["-p", f"rerank:={rerank}"] if rerank else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("vpr_latency_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    received: dict[int, float] = {}
    stages: dict[str, list[float]] = {}

    def on_hypotheses(msg):
        received[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = time.perf_counter()
        for t in msg.timing:
            stages.setdefault(t.stage, []).append(t.ms)

    probe.create_subscription(PlaceHypotheses, "vpr/hypotheses", on_hypotheses, qos)
    pub = probe.create_publisher(Image, "/bench/image", qos)
    queries = [cv2.resize(read_image(p), (640, 480)) for p in list_images(CORRIDOR / "query")]
    sent: dict[int, float] = {}
    # the probe spins on its own thread and sleeps between frames: a spin_once polling loop costs
    # enough CPU on 2 cores to slow the node under test by 1.5-2x
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 120
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        warmup = 3
        for i in range(frames + warmup):
            rgb = queries[i % len(queries)]
            msg = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=rgb.tobytes())
            stamp = (1000 + i) * 10**9
            msg.header.stamp.sec = stamp // 10**9
            if i >= warmup:
                sent[stamp] = time.perf_counter()
            pub.publish(msg)
            time.sleep(1.0 / rate)
        until = time.monotonic() + 10
        while not set(sent) <= set(received) and time.monotonic() < until:
            time.sleep(0.05)
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        probe.destroy_node()
        rclpy.shutdown(context=context)
        node.terminate()
        node.wait(timeout=30)
    latency = [(received[s] - sent[s]) * 1e3 for s in sent if s in received]
    return {"e2e": latency_summary(latency), "lost": len(sent) - len(latency),
            "stages": {k: latency_summary(v[3:]) for k, v in stages.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rate", type=float, default=2.0, help="images per second")
    parser.add_argument("--rerank", default="xfeat-lighterglue,xfeat-mnn")
    parser.add_argument("--qos", default="reliable", choices=("reliable", "sensor_data"),
                        help="QoS of the node's image subscription (the publisher is reliable)")
    parser.add_argument("--fastdds-shm", action="store_true",
                        help="both processes use config/fastdds_shm.xml (32 MB shared-memory segment)")
    args = parser.parse_args()
    if not (CORRIDOR / "ground_truth.csv").is_file():
        print(f"skipped: {CORRIDOR} not found")
        return 0
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="vpr_bench_log_"))
    if args.fastdds_shm:
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_shm.xml")
    with tempfile.TemporaryDirectory() as tmp:
        map_dir = build_map(Path(tmp))
        print(f"vpr_localizer end to end, 640x480 rgb8 at {args.rate} Hz, {args.frames} frames, map of 111 frames, "
              f"{args.qos} QoS{', Fast DDS shared memory 32 MB' if args.fastdds_shm else ''}")
        for rerank in ["", *[r for r in args.rerank.split(",") if r]]:
            out = run(map_dir, rerank, args.frames, args.rate, args.qos)
            e2e = out["e2e"]
            stages = "  ".join(f"{k} {v['p50']:.0f}" for k, v in out["stages"].items()
                               if k in ("descriptor", "local_features", "match", "verify", "pipeline"))
            print(f"  rerank {rerank or 'off':18} p50 {e2e['p50']:6.1f} ms  p95 {e2e['p95']:6.1f} ms  "
                  f"(lost {out['lost']})   stage p50 ms: {stages}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
