"""Is the node as fast as the core it wraps? Per-stage times of vpr_localizer against the same frames
through Localizer.process in a plain process, and the node's end-to-end latency, in one run. Prints
figures.

For each input rate (default 2 Hz and 30 Hz): first a plain Python process (no ROS) runs
Localizer.process on the frames a camera would have delivered, newest first when it falls behind
(what the node's queue_size 1 does); then vpr_localizer is started from its console script with
the shipped params file (map, topic and --rerank set) and a camera stand-in in this process publishes
640x480 rgb8 at the rate. End to end is image published -> PlaceHypotheses received; processing
is the node's own `pipeline` stage (Localizer.process). Figures are after 3 warm-up frames.

    .venv/bin/python benchmarks/node_latency.py [--rates 2,30] [--seconds 30] [--rerank xfeat-mnn]
        [--params-file config/localize.yaml] [--no-fastdds-shm]

To measure another checkout (one that has vpr_ros.ros.parameters.localizer_config; the figures for
3619809 in docs/benchmarks.md were taken with an earlier copy of this script), run it with
PYTHONPATH=<checkout> and --params-file <checkout>/config/localize.yaml: the node and the plain
process then run that checkout's code.
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from common import REPO, corridor_available
from node_harness import (Camera, Process, camera_frames, corridor_map, isolate_ros, node_command, node_parameters,
                          out_of_order, params_file)
from vpr_ros.ros.parameters import localizer_config

STAGES = ("descriptor", "local_features", "match", "verify", "uncertainty", "pipeline")


def plain(map_dir: str, params: dict, rate: float, seconds: float) -> dict:
    """Localizer.process in this (ROS-free) process on frames arriving at `rate`, newest first."""
    from vpr_ros.core.pipeline.localizer import Localizer
    from vpr_ros.core.map.store import VPRMap

    config = localizer_config(params)
    localizer = Localizer(config, VPRMap.load(map_dir, checkpoint=config.checkpoint or None))  # as the node loads it
    frames = camera_frames()
    for i in range(3):
        localizer.process(frames[i], 10**12 + i * 10**9)
    stages: dict[str, list[float]] = {}
    period, start, last = 1.0 / rate, time.perf_counter(), -1
    while True:
        index = int((time.perf_counter() - start) / period)
        if index * period >= seconds:
            break
        if index == last:  # caught up: wait for the next frame like an idle node
            time.sleep(max(0.0, start + (index + 1) * period - time.perf_counter()))
            continue
        last = index
        result = localizer.process(frames[index % len(frames)], 2 * 10**12 + round(index * period * 1e9))
        for stage, ms in result.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    return {"stages": stages}


SINK = """
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("vpr_bench_sink")
node.create_subscription(Image, "/bench/image", lambda msg: None, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
try:
    rclpy.spin(node)
except BaseException:
    pass
"""


def run_plain(map_dir: Path, params_path: Path, rate: float, seconds: float) -> dict:
    """The plain process, while the camera stand-in streams at `rate` to a subscriber that only
    receives (the same inter-process load as in the node run)."""
    with Process([sys.executable, "-c", SINK], params_path.parent / "sink.log"):
        camera = Camera("/bench/image")
        try:
            if not camera.wait_for_node(60):
                raise RuntimeError("the image sink did not subscribe")
            plain = subprocess.Popen([sys.executable, __file__, "--plain", str(map_dir), "--params-file",
                                      str(params_path), "--rates", str(rate), "--seconds", str(seconds)],
                                     stdout=subprocess.PIPE, text=True)
            camera.stream(camera.messages(camera_frames()), rate, 3600, until=lambda: plain.poll() is not None)
            out, _ = plain.communicate()
        finally:
            camera.close()
    if plain.returncode != 0:
        raise RuntimeError(f"the plain process failed with exit code {plain.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def run_node(params_path: Path, rate: float, seconds: float, log: Path) -> dict:
    with Process(node_command(params_path), log) as node:
        camera = Camera("/bench/image")
        try:
            if not camera.wait_for_node():
                raise RuntimeError(f"the node did not subscribe; see {log}")
            messages = camera.messages(camera_frames())
            camera.warm_up(messages)
            published = camera.stream(messages, rate, seconds, first_stamp_ns=2 * 10**12)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (not camera.answers or camera.answers[-1].stamp_ns < max(camera.sent)):
                time.sleep(0.05)
            time.sleep(1.0)
        finally:
            camera.close()
    answers = [a for a in camera.answers if a.stamp_ns in camera.sent]
    stages: dict[str, list[float]] = {}
    for a in answers:
        for stage, ms in a.stages.items():
            stages.setdefault(stage, []).append(ms)
    return {"stages": stages, "e2e": [(a.received - camera.sent[a.stamp_ns]) * 1e3 for a in answers],
            "published": published, "answered": len(answers), "out_of_order": out_of_order(answers),
            "returncode": node.returncode}


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="2,30", help="camera rates, Hz, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="streaming time per rate")
    parser.add_argument("--rerank", default="xfeat-mnn", help="re-ranking (off: global retrieval only)")
    parser.add_argument("--params-file", type=Path, default=REPO / "config" / "localize.yaml",
                        help="the shipped params file of the checkout under test")
    parser.add_argument("--no-fastdds-shm", action="store_true", help="default Fast DDS (UDP) instead of shared memory")
    parser.add_argument("--map", type=Path, help="a saved map (default: the Corridor references', built here)")
    parser.add_argument("--plain", metavar="MAP", help=argparse.SUPPRESS)  # internal: the plain-process half
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    if args.plain:
        params = node_parameters(yaml.safe_load(args.params_file.read_text()))
        print(json.dumps(plain(args.plain, params, rates[0], args.seconds)))
        return 0
    if not corridor_available():
        return 0
    isolate_ros(shm=not args.no_fastdds_shm)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        map_dir = args.map.resolve() if args.map else corridor_map(tmp)
        path = params_file(tmp, args.params_file, {"map_path": str(map_dir), "image_topic": "/bench/image",
                                                   "qos_reliability": "reliable", "rerank": args.rerank})
        import vpr_ros

        print(f"vpr_localizer vs Localizer.process in a plain process: vpr_ros from {Path(vpr_ros.__file__).parent}, "
              f"params {args.params_file}, rerank {args.rerank}, 640x480 rgb8, {args.seconds:.0f} s per rate, "
              f"Fast DDS {'UDP' if args.no_fastdds_shm else 'shared memory 32 MB'}")
        header = "  ".join(f"{s:>14}" for s in STAGES)
        for rate in rates:
            ref = run_plain(map_dir, path, rate, args.seconds)
            node = run_node(path, rate, args.seconds, tmp / f"node_{rate:g}.log")
            print(f"\n{rate:g} Hz: stage p50 ms {header}")
            for name, out in (("plain process", ref), ("node", node)):
                print(f"  {name:22}" + "  ".join(f"{pct(out['stages'].get(s, []), 50):14.1f}" for s in STAGES))
            ratios = [pct(node["stages"].get(s, []), 50) / pct(ref["stages"].get(s, []), 50) for s in STAGES]
            print(f"  {'node / plain':22}" + "  ".join(f"{r:14.2f}" for r in ratios))
            e2e, proc = node["e2e"], node["stages"].get("pipeline", [])
            print(f"  node end to end p50 {pct(e2e, 50):.0f} ms, p95 {pct(e2e, 95):.0f} ms, max {pct(e2e, 100):.0f} ms; "
                  f"processing p95 {pct(proc, 95):.0f} ms; e2e p95 / processing p95 {pct(e2e, 95) / pct(proc, 95):.2f}")
            print(f"  answered {node['answered']} of {node['published']} published (newest wins), "
                  f"{node['out_of_order']} out of order; plain process answered {len(ref['stages'].get('pipeline', []))}; "
                  f"node exit code {node['returncode']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
