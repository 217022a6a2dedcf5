"""`vpr_demo`: the README's first command: simulate a robot run, map its first lap, localize the second
lap with the node through a real ROS graph, and report.

Steps (each kept when its output already exists with the same settings, so a second run is quick):
1. `vpr_sim`: two laps of a procedural street, the second at dusk, off the first lap's path, with other
   parked cars (rosbag2 mcap: Image, aligned depth Image, CameraInfo, ground-truth Odometry and TF);
2. `vpr_build_map` from lap 1 (global descriptors, XFeat local features with their depth, the camera);
3. `vpr_train_uncertainty` on that map (BayesCap head and calibrators, with the re-ranker);
4. `vpr_eval --through-node`: lap 2 is played at its recorded rate to a running `vpr_localizer`
   (re-ranking with LighterGlue, calibrated probabilities, depth images for metric loop closures) over
   loopback, on a private ROS domain; the answers, metric poses included, are scored against the ground
   truth and written as JSON and a self-contained HTML report.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from vpr_ros.tools import doctor

DEMO = {"frames": 160, "rate_hz": 1.25, "seed": 0}  # 1 frame per metre at 1.25 m/s: a walking-speed robot
TOPICS = ["--image-topic", "/camera/image_raw", "--pose-topic", "/odom", "--camera-info-topic", "/camera/camera_info"]
DEPTH = ["--depth-topic", "/camera/depth/image_raw"]


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(start: float) -> None:
    print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)


def _map_ready(map_dir: Path, run_json: Path) -> bool:
    """The map exists, is newer than the run it was built from, and has its uncertainty model and depth."""
    meta = map_dir / "map.json"
    if not meta.is_file() or meta.stat().st_mtime < run_json.stat().st_mtime:
        return False
    content = json.loads(meta.read_text())
    return bool(content.get("uncertainty")) and bool(content.get("local_depth") or not content.get("local_features"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpr_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_run"), help="working folder (bags, map, report)")
    parser.add_argument("--frames", type=int, default=DEMO["frames"], help="frames per lap")
    parser.add_argument("--rerank", default="xfeat-lighterglue", help="matcher, or 'off' for global retrieval only")
    parser.add_argument("--distance", type=float, default=5.0,
                        help="a map frame within this many metres is the query's place (street scale)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed of lap 2 (0: lockstep)")
    parser.add_argument("--skip-doctor", action="store_true", help="do not check the environment first")
    parser.add_argument("--overwrite", action="store_true", help="redo every step")
    args = parser.parse_args(argv)
    rerank = None if args.rerank in ("", "off") else args.rerank
    begin = time.perf_counter()
    if not args.skip_doctor:
        start = _step("checking the environment (vpr_doctor)")
        status = doctor.main([])
        if status != 0:
            return status
        _done(start)

    from vpr_ros.tools import build_map, eval as vpr_eval, sim, train_uncertainty

    out = args.out
    start = _step(f"simulating two laps of {args.frames} frames (vpr_sim)")
    sim_args = [str(out / "run"), "--frames", str(args.frames), "--rate", str(DEMO["rate_hz"]),
                "--seed", str(DEMO["seed"])] + (["--overwrite"] if args.overwrite else [])
    if sim.main(sim_args) != 0:
        return 1
    _done(start)
    map_dir = out / "map"
    if args.overwrite or not _map_ready(map_dir, out / "run" / "run.json"):
        start = _step("building the map from lap 1 (vpr_build_map)")
        features = ["--local-features", "xfeat", *DEPTH] if rerank else []
        status = build_map.main([str(map_dir), "--bag", str(out / "run" / "lap_1"), *TOPICS, *features,
                                 "--overwrite", "--quiet"])
        if status != 0:
            return status
        _done(start)
        start = _step("training the uncertainty model and calibrators (vpr_train_uncertainty)")
        status = train_uncertainty.main([str(map_dir), *(["--rerank", rerank] if rerank else []), "--quiet"])
        if status != 0:
            return status
        _done(start)
    else:
        print(f"\n== the map in {map_dir} is up to date")
    start = _step("localizing lap 2 with vpr_localizer through a ROS graph (vpr_eval --through-node)")
    status = vpr_eval.main([
        "--map", str(map_dir), "--bag", str(out / "run" / "lap_2"), *TOPICS, *DEPTH,
        "--distance", str(args.distance), "--through-node", "--rate", str(args.rate),
        "--top-k", "10", "--temporal-window", "0", "--rerank", rerank or "off",
        *(["--rerank-top-k", "5"] if rerank else []),
        "--json", str(out / "report.json"), "--html", str(out / "report.html")])
    if status != 0:
        return status
    _done(start)
    print(f"\nDemo finished in {time.perf_counter() - begin:.0f} s. Report: {(out / 'report.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
