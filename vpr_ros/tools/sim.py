"""`vpr_sim`: render a deterministic simulated robot run into rosbag2 (mcap) bags, one per lap.

    vpr_sim OUT [--frames 200] [--laps 2] [--seed 0] [--image-format raw|jpeg|png]

OUT/lap_1, OUT/lap_2, ...: rosbag2 directories with sensor_msgs/Image (or CompressedImage),
sensor_msgs/CameraInfo, a drifting odometry on /odom (nav_msgs/Odometry, odom -> base_link, with its
covariance; --odom-drift 0: the truth), the truth on /ground_truth (nav_msgs/Odometry, map -> base_link),
TF (odom -> base_link, map -> base_link_truth, static base_link -> camera_optical) and an aligned depth image (sensor_msgs/Image 16UC1, millimetres) on
/camera/depth/image_raw (--no-depth: none). OUT/run.json: the configuration, the camera, each lap's appearance and
how different its frames are from lap 1's at the same place (mean absolute grey-level difference).
The same options give the same bags, byte for byte; a run already complete with the same options
is kept (--overwrite renders it again).
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from vpr_ros.sim.bag_writer import IMAGE_FORMATS, BagWriter
from vpr_ros.sim.render import APPEARANCES
from vpr_ros.sim.run import RUN_DEFAULTS, SimRun

THUMB = (64, 48)  # frames are compared between laps at this size


def _thumb(image: np.ndarray) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


def generate(out: Path, conf: dict, image_format: str = "raw", overwrite: bool = False,
             progress: bool = True) -> dict:
    """Render every lap of the run into OUT/lap_<n>; returns (and writes) run.json's content."""
    run = SimRun(conf)
    description = {**run.describe(), "image_format": image_format}
    meta_path = out / "run.json"
    if meta_path.is_file() and not overwrite:
        previous = json.loads(meta_path.read_text())
        same = {k: previous.get(k) for k in ("config", "image_format")} == {
            "config": description["config"], "image_format": image_format}
        if same and previous.get("complete") and all((out / lap["bag"]).is_dir() for lap in previous["laps"]):
            if progress:
                print(f"vpr_sim: {out} already holds this run (--overwrite renders it again)")
            return previous
    out.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)
    reference, laps = None, []
    for lap in range(run.conf["laps"]):
        bag = out / f"lap_{lap + 1}"
        partial = out / f".lap_{lap + 1}.partial"
        for stale in (bag, partial):
            if stale.exists():
                shutil.rmtree(stale)
        start, thumbs = time.perf_counter(), []
        with BagWriter(partial, image_format) as writer:
            for frame in run.frames(lap):
                writer.write_frame(frame.stamp_ns, frame.image, run.camera.K, frame.pose,
                                   odometry=(frame.odometry, frame.odometry_covariance))
                if frame.depth is not None:
                    writer.write_depth(frame.stamp_ns, frame.depth)
                thumbs.append(_thumb(frame.image))
                if progress and (frame.index + 1) % 50 == 0:
                    print(f"\r  lap {lap + 1}: {frame.index + 1}/{run.conf['frames']} frames", end="", flush=True)
        partial.rename(bag)
        seconds = time.perf_counter() - start
        thumbs = np.stack(thumbs)
        entry = {**description["laps"][lap], "bag": bag.name, "frames": len(thumbs),
                 "render_write_s": round(seconds, 2), "ms_per_frame": round(1e3 * seconds / len(thumbs), 1),
                 "bytes": sum(p.stat().st_size for p in bag.rglob("*") if p.is_file())}
        if reference is None:
            reference = thumbs
            entry["consecutive_frame_difference"] = float(np.abs(np.diff(thumbs, axis=0)).mean()) if len(thumbs) > 1 else 0.0
        else:
            entry["difference_to_lap_1"] = float(np.abs(thumbs - reference).mean())
        laps.append(entry)
        if progress:
            print(f"\r  lap {lap + 1}: {len(thumbs)} frames ({entry['appearance']['name']}) -> {bag} "
                  f"in {seconds:.0f} s ({entry['ms_per_frame']:.0f} ms per frame)")
    description.update(laps=laps, complete=True)
    meta_path.write_text(json.dumps(description, indent=2) + "\n")
    return description


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpr_sim", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output directory (gets lap_1/, lap_2/, ..., run.json)")
    d = RUN_DEFAULTS
    parser.add_argument("--frames", type=int, default=d["frames"], help="frames per lap")
    parser.add_argument("--laps", type=int, default=d["laps"], help="traversals of the route")
    parser.add_argument("--seed", type=int, default=d["seed"], help="world, trajectory and appearance seed")
    parser.add_argument("--spacing", type=float, default=d["spacing_m"], help="metres between frames")
    parser.add_argument("--rate", type=float, default=d["rate_hz"], help="frames per second in the stamps")
    parser.add_argument("--width", type=int, default=d["width"])
    parser.add_argument("--height", type=int, default=d["height"])
    parser.add_argument("--hfov", type=float, default=d["hfov_deg"], help="horizontal field of view (degrees)")
    parser.add_argument("--appearances", default=",".join(d["appearances"]),
                        help=f"appearance of lap 1, 2, ... (cycling), from {sorted(APPEARANCES)}")
    parser.add_argument("--lateral", type=float, default=d["lateral_m"],
                        help="laps after the first: amplitude (m) of the lateral wander off lap 1's path")
    parser.add_argument("--camera-offsets", default="0,0,0",
                        help="camera of lap 1, 2, ... (cycling) as 'height_m,lateral_m,pitch_deg' triples separated by "
                             "';', added to the lap's camera as if another robot drove it (e.g. '0,0,0;-0.8,1.0,6')")
    parser.add_argument("--image-format", choices=IMAGE_FORMATS, default="raw",
                        help="raw: sensor_msgs/Image rgb8; jpeg/png: sensor_msgs/CompressedImage (10k-frame runs)")
    parser.add_argument("--no-depth", action="store_true",
                        help="no depth topic (by default /camera/depth/image_raw, 16UC1 millimetres, aligned to the "
                             "colour image, with a stereo camera's noise and holes)")
    parser.add_argument("--odom-drift", type=float, default=d["odometry_drift"],
                        help="factor on the odometry's default drift (1 %% scale error, a random-walking heading bias: "
                             "about 1-2 %% of the distance travelled; docs/simulator.md); 0: /odom is the truth")
    parser.add_argument("--overwrite", action="store_true", help="render again even if OUT holds this run")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    conf = {"seed": args.seed, "frames": args.frames, "laps": args.laps, "spacing_m": args.spacing,
            "rate_hz": args.rate, "width": args.width, "height": args.height, "hfov_deg": args.hfov,
            "appearances": tuple(a.strip() for a in args.appearances.split(",") if a.strip()),
            "lateral_m": args.lateral, "depth": not args.no_depth, "odometry_drift": args.odom_drift}
    try:
        conf["camera_offsets"] = tuple(tuple(float(v) for v in part.split(",")) for part in args.camera_offsets.split(";"))
    except ValueError:
        parser.error(f"--camera-offsets: expected 'height,lateral,pitch' triples separated by ';', got {args.camera_offsets!r}")
    try:
        run = generate(args.out, conf, args.image_format, args.overwrite, not args.quiet)
    except (ValueError, FileExistsError, OSError) as exc:
        print(f"vpr_sim: error: {exc}", file=sys.stderr)
        return 2
    drift = run.get("odometry_drift") or {}
    if drift:
        print(f"odometry: {drift['distance_m']:.0f} m travelled, drifted {drift['max_error_m']:.2f} m at most "
              f"({drift['max_error_percent']:.2f} % of the distance; truth on /ground_truth)")
    for lap in run["laps"]:
        diff = lap.get("difference_to_lap_1", lap.get("consecutive_frame_difference"))
        what = "vs lap 1 at the same place" if "difference_to_lap_1" in lap else "between consecutive frames"
        print(f"{args.out / lap['bag']}: {lap['frames']} frames, {lap['appearance']['name']}, "
              f"mean |difference| {diff:.1f} grey levels {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
