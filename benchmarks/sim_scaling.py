"""Simulator cost at scale: world generation, render time per frame and bag bytes per frame, for a
lap of --frames frames (default 10 000), sampled at --samples places spread over the lap. Prints figures.

    .venv/bin/python benchmarks/sim_scaling.py [--frames 10000] [--samples 60] [--width 640 --height 480]
"""

import argparse
import platform
import time

import cv2
import numpy as np
import torch

from vpr_ros.sim.run import SimRun


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()
    start = time.perf_counter()
    run = SimRun({"frames": args.frames, "width": args.width, "height": args.height})
    world_s = time.perf_counter() - start
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"world for {args.frames} frames: route {run.length_m:.0f} m, {len(run.world.walls.a)} wall segments, "
          f"{len(run.world.textures)} textures, built in {world_s:.2f} s")
    picks = set(np.linspace(0, args.frames - 1, args.samples).astype(int).tolist())
    for lap in (0, 1):
        stamps, poses, _ = run.trajectory(lap)
        look, cars = run.appearance(lap), run.world.cars(lap)
        times, jpeg = [], []
        for i in sorted(picks):
            for j in (i, i + 1):  # the second frame of a pair reuses the first's textures, as in a real run
                if j >= args.frames:
                    continue
                t0 = time.perf_counter()
                image = run.renderer.render(poses[j], look, cars, np.random.default_rng(j))
                if j == i + 1:
                    times.append(time.perf_counter() - t0)
                    jpeg.append(len(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1]))
        ms = 1e3 * np.median(times)
        print(f"lap {lap + 1} ({look.name}): render {ms:.0f} ms per frame p50 (p95 {1e3 * np.percentile(times, 95):.0f}); "
              f"a lap ~{ms * args.frames / 6e4:.0f} min; raw {args.width * args.height * 3 / 1e6:.2f} MB per frame "
              f"({args.width * args.height * 3 * args.frames / 1e9:.1f} GB a lap), JPEG 95 {np.mean(jpeg) / 1e3:.0f} KB "
              f"({np.mean(jpeg) * args.frames / 1e9:.2f} GB a lap)")


if __name__ == "__main__":
    main()
