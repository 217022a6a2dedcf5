"""Soak vpr_localizer: N minutes of camera frames at R Hz, as a robot would leave it running. Prints
figures per minute: resident memory, answer latency p50/p95/max, answers, answers out of order,
frames the node dropped, the longest gap between answers; then RSS growth from minute 1 to the last.

The node starts from its console script in its own process with the shipped params file (map and
image topic set; re-ranking as shipped unless --rerank), on a map of the Corridor references; a
camera stand-in in this process publishes 640x480 rgb8 Corridor frames at the rate (reliable QoS,
shared-memory Fast DDS unless --no-fastdds-shm). Latency is image published -> PlaceHypotheses
received.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--rate 30] [--rerank xfeat-mnn]
"""

import argparse
import math
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from common import REPO, corridor_available
from node_harness import (Camera, Process, camera_frames, corridor_map, isolate_ros, node_command, out_of_order,
                          params_file, rss_mib)


def diagnostics_listener(camera: Camera) -> dict:
    """The latest values of the node's /diagnostics status, updated in place."""
    from diagnostic_msgs.msg import DiagnosticArray

    latest: dict = {}

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            if "vpr_localizer" in status.name:
                latest.update({kv.key: kv.value for kv in status.values}, message=status.message)

    camera.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    return latest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz")
    parser.add_argument("--rerank", default=None, help="override the shipped re-ranking (off: global only)")
    parser.add_argument("--params-file", type=Path, default=REPO / "config" / "localize.yaml")
    parser.add_argument("--no-fastdds-shm", action="store_true", help="default Fast DDS (UDP) instead of shared memory")
    parser.add_argument("--map", type=Path, help="a saved map (default: the Corridor references', built here)")
    args = parser.parse_args()
    if not corridor_available():
        return 0
    isolate_ros(shm=not args.no_fastdds_shm)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        values = {"map_path": str(args.map.resolve() if args.map else corridor_map(tmp)), "image_topic": "/bench/image"}
        if args.rerank is not None:
            values["rerank"] = args.rerank
        path = params_file(tmp, args.params_file, values)
        log = tmp / "node.log"
        with Process(node_command(path), log) as node:
            camera = Camera("/bench/image")
            diagnostics = diagnostics_listener(camera)
            try:
                if not camera.wait_for_node():
                    print(f"the node did not subscribe:\n{log.read_text()}")
                    return 1
                messages = camera.messages(camera_frames())
                camera.warm_up(messages)
                seconds = args.minutes * 60
                print(f"soak: vpr_localizer, 640x480 rgb8 at {args.rate:g} Hz for {args.minutes:g} min, "
                      f"Fast DDS {'UDP' if args.no_fastdds_shm else 'shared memory'}, node pid {node.proc.pid}")
                print(f"{'min':>3} {'RSS MiB':>8} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'answers':>7} "
                      f"{'published':>9} {'out of order':>12} {'node dropped':>12} {'max gap s':>9}", flush=True)
                streamer = threading.Thread(target=camera.stream, args=(messages, args.rate, seconds),
                                            kwargs={"first_stamp_ns": 2 * 10**12}, daemon=True)
                start = time.perf_counter()
                streamer.start()
                rss_by_minute: list[float] = []
                seen = 0
                last_answer = start
                dropped_before = 0
                for minute in range(1, math.ceil(args.minutes) + 1):
                    samples = []
                    end = start + min(minute * 60, seconds)
                    while time.perf_counter() < end:
                        samples.append(rss_mib(node.proc.pid))
                        time.sleep(min(5.0, max(0.0, end - time.perf_counter())))
                    answers = camera.answers[seen:]
                    ordered = out_of_order(camera.answers[max(0, seen - 1):]) if answers else 0
                    latency = [(a.received - camera.sent[a.stamp_ns]) * 1e3 for a in answers if a.stamp_ns in camera.sent]
                    gaps = np.diff([last_answer] + [a.received for a in answers] + [time.perf_counter()])
                    last_answer = answers[-1].received if answers else last_answer
                    published = sum(1 for t in camera.sent.values() if end - 60 <= t < end)
                    dropped_total = int(diagnostics.get("dropped", 0))
                    rss = float(np.mean(samples)) if samples else math.nan
                    rss_by_minute.append(rss)
                    pct = (lambda q: float(np.percentile(latency, q))) if latency else (lambda q: math.nan)
                    print(f"{minute:3d} {rss:8.0f} {pct(50):7.0f} {pct(95):7.0f} {pct(100):7.0f} {len(answers):7d} "
                          f"{published:9d} {ordered:12d} {dropped_total - dropped_before:12d} {gaps.max():9.2f}", flush=True)
                    dropped_before = dropped_total
                    seen += len(answers)
                streamer.join(timeout=10)
                time.sleep(2.0)
            finally:
                camera.close()
        total_out_of_order = out_of_order(camera.answers)
        growth = (rss_by_minute[-1] - rss_by_minute[0]) / rss_by_minute[0] * 100 if len(rss_by_minute) > 1 else math.nan
        print(f"RSS minute 1 {rss_by_minute[0]:.0f} MiB -> minute {len(rss_by_minute)} {rss_by_minute[-1]:.0f} MiB "
              f"({growth:+.1f} %); answers {len(camera.answers)}, out of order {total_out_of_order}; "
              f"node diagnostics at the end: {diagnostics.get('message', 'none received')}; node exit code {node.returncode}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
