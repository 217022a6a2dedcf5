"""Describing a map's frames in this process and on 1 and 2 Ray workers (a local Ray runtime), in one run.

    .venv/bin/python benchmarks/ray_build.py --space maps/lap1 --bag runs/street/lap_2 \
        --image-topic /camera/image_raw/compressed --frames 240

The frames are described in `--space`'s descriptor space (its fitted vocabulary and PCA), so every run does
the same work: decode each image and compute its global descriptor (and --local-features when given),
shard by shard. Ray's start-up is timed apart (once per process); each run's map must equal the first's.
Prints frames per second for each run and the ratios.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from vpr_ros.core.maps.bag_source import read_bag_frames
from vpr_ros.core.maps.distributed import ray_runtime
from vpr_ros.core.maps.map_builder import SourceLoader, build_map
from vpr_ros.core.maps.map_store import VPRMap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, required=True, help="a map whose descriptor space the frames go into")
    parser.add_argument("--bag", type=Path, required=True)
    parser.add_argument("--image-topic", required=True)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--shard-frames", type=int, default=16)
    parser.add_argument("--local-features", default=None)
    args = parser.parse_args()
    space = VPRMap.load(args.space)
    frames = read_bag_frames(args.bag, args.image_topic).frames
    frames = frames.select(np.arange(min(args.frames, len(frames))))
    t0 = time.perf_counter()
    ray_runtime("auto")
    report = {"machine": f"{os.cpu_count()} CPUs", "frames": len(frames), "ray_start_s": round(time.perf_counter() - t0, 2)}
    reference = None
    for name, ray, workers in (("this process", None, None), ("ray, 1 worker", "auto", 1),
                               ("ray, 2 workers", "auto", 2), ("this process again", None, None)):
        with tempfile.TemporaryDirectory() as work:
            t0 = time.perf_counter()
            built = build_map("bench", frames, SourceLoader(), space=space, work_dir=work, ray=ray, ray_workers=workers,
                              shard_frames=args.shard_frames, local_features=args.local_features)
            seconds = time.perf_counter() - t0
        if reference is None:
            reference = built.descriptors
        report[name] = {"seconds": round(seconds, 1), "frames_per_s": round(len(frames) / seconds, 2),
                        "max_difference": float(np.abs(built.descriptors - reference).max())}
        print(name, report[name], flush=True)
    report["ratio_2_to_1_workers"] = round(report["ray, 2 workers"]["frames_per_s"] / report["ray, 1 worker"]["frames_per_s"], 2)
    report["ratio_2_workers_to_this_process"] = round(
        report["ray, 2 workers"]["frames_per_s"] / report["this process"]["frames_per_s"], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
