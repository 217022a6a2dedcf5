"""`vpr_demo`: the README's first command: simulate three visits of a street, map the first two as two
sessions of one map, localize the third with the node through a real ROS graph, and report.

Steps (each kept when its output already exists with the same settings, so a second run is quick):
1. `vpr_sim`: three laps of a procedural street (day, dusk, overcast), the later ones off the first lap's
   path, with other parked cars (rosbag2 mcap: Image, aligned depth Image, CameraInfo, a drifting odometry
   on /odom, the truth on /ground_truth, TF); the maps are built from the truth, as a surveyed map would be;
2. `vpr_build_map` from lap 1 (global descriptors, XFeat local features with their depth, the camera), and
   from lap 2 in lap 1's descriptor space (`--descriptor-from`);
3. `vpr_merge_maps`: the two sessions as one map;
4. `vpr_train_uncertainty` on the merged map (BayesCap head and calibrators, for the re-ranker the node runs);
5. `vpr_eval` (core replay, global retrieval): lap 3 against each single-session map and the merged one,
   so that what the second session adds is shown;
6. `vpr_eval --through-node`: lap 3 is played at its recorded rate to a running `vpr_localizer` on the
   merged map, started as a robot starts it: its console script with the shipped config/localize.yaml
   (re-ranking with the shipped matcher, calibrated probabilities, the shipped acceptance), plus the
   replay's topics and depth images for metric loop closures; over loopback, on a private ROS domain.
   The answers, metric poses and each match's session included, are scored against the ground truth and
   written as JSON and a self-contained HTML report; the pose-graph back-end (vpr_pose_graph, its own
   process in the same graph) takes the lap's drifting odometry and vpr/pose as fixes, and the trajectory
   error of the odometry alone and of the corrected path is printed.
"""

import argparse
import json
import textwrap
import sys
import time
from pathlib import Path

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.tools import doctor

DEMO = {"frames": 160, "rate_hz": 1.25, "seed": 0, "laps": 3}  # 1 frame per metre at 1.25 m/s: a walking-speed robot
TOPICS = ["--image-topic", "/camera/image_raw", "--pose-topic", "/ground_truth", "--camera-info-topic", "/camera/camera_info"]
DEPTH = ["--depth-topic", "/camera/depth/image_raw"]


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(start: float) -> None:
    print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)


def _map_ready(map_dir: Path, run_json: Path, rerank: str | None) -> bool:
    """The map exists, is newer than the run it was built from, and has depth and an uncertainty model with a
    calibrator for the re-ranking the node runs."""
    meta = map_dir / "map.json"
    if not meta.is_file() or meta.stat().st_mtime < run_json.stat().st_mtime:
        return False
    content = json.loads(meta.read_text())
    if not content.get("uncertainty") or not (content.get("local_depth") or not content.get("local_features")):
        return False
    from vpr_ros.core.uncertainty.model import META_FILE, ranking_key

    try:
        calibrators = json.loads((map_dir / META_FILE).read_text())["calibrators"]
    except (OSError, ValueError, KeyError):
        return False
    return ranking_key(rerank) in calibrators


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpr_demo", description=textwrap.fill(__doc__.split("\n\n")[0].replace("\n", " "), 100),
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_run"), help="working folder (bags, map, report)")
    parser.add_argument("--frames", type=int, default=DEMO["frames"], help="frames per lap")
    parser.add_argument("--rerank", default=LocalizerConfig.rerank,
                        help="matcher, or 'off' for global retrieval only (default: the shipped one)")
    parser.add_argument("--distance", type=float, default=5.0,
                        help="a map frame within this many metres is the query's place (street scale)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed of lap 3 through the node (0: lockstep)")
    parser.add_argument("--skip-doctor", action="store_true", help="do not check the environment first")
    parser.add_argument("--overwrite", action="store_true", help="redo every step")
    args = parser.parse_args(argv)
    from vpr_ros.ros.launch_args import environment, shared_memory_environment

    # the images and depth images go to the node over Fast DDS's shared memory, as the launch file sets it up on
    # a robot; set before the environment check makes this process's first participant (read once per process)
    with environment(shared_memory_environment()):
        return _run(args)


def _run(args) -> int:
    rerank = None if args.rerank in ("", "off") else args.rerank
    begin = time.perf_counter()
    if not args.skip_doctor:
        start = _step("checking the environment (vpr_doctor)")
        status = doctor.main([])
        if status != 0:
            return status
        _done(start)

    from vpr_ros.tools import build_map, eval as vpr_eval, merge_maps, sim, train_uncertainty

    out = args.out
    start = _step(f"simulating three laps of {args.frames} frames (vpr_sim)")
    sim_args = [str(out / "run"), "--frames", str(args.frames), "--rate", str(DEMO["rate_hz"]),
                "--seed", str(DEMO["seed"]), "--laps", str(DEMO["laps"])] + (["--overwrite"] if args.overwrite else [])
    if sim.main(sim_args) != 0:
        return 1
    _done(start)
    map_dir, sessions = out / "map", [out / "maps" / "lap_1", out / "maps" / "lap_2"]
    if args.overwrite or not _map_ready(map_dir, out / "run" / "run.json", rerank):
        features = ["--local-features", "xfeat", *DEPTH] if rerank else ["--local-features", "none"]
        for lap, session in enumerate(sessions, start=1):
            start = _step(f"building the map of lap {lap}" + (" in lap 1's descriptor space" if lap > 1 else "")
                          + " (vpr_build_map)")
            space = ["--descriptor-from", str(sessions[0])] if lap > 1 else []
            status = build_map.main([str(session), "--bag", str(out / "run" / f"lap_{lap}"), *TOPICS, *features,
                                     *space, "--robot", "demo_robot", "--overwrite", "--quiet"])
            if status != 0:
                return status
            _done(start)
        start = _step("merging the two sessions into one map (vpr_merge_maps)")
        status = merge_maps.main([*map(str, sessions), str(map_dir), "--overwrite", "--quiet"])
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
    start = _step("lap 3 against each session's map and the merged one (vpr_eval, global retrieval)")
    table = {}
    for name, path in (("lap 1 map", sessions[0]), ("lap 2 map", sessions[1]), ("merged map", map_dir)):
        report, _, _ = vpr_eval.evaluate_map_bag(path, out / "run" / "lap_3", TOPICS[1], TOPICS[3], None, args.distance,
                                                 LocalizerConfig(rerank="off", top_k=10, temporal_window=0),
                                                 progress=False)
        table[name] = {"map_frames": report["map_size"], "recall": report["recall"]}
        print(f"   lap 3 against the {name} ({report['map_size']} frames): R@1 {report['recall']['1']:.3f}, "
              f"R@5 {report['recall']['5']:.3f}")
    (out / "sessions.json").write_text(json.dumps(table, indent=2) + "\n")
    _done(start)
    start = _step("localizing lap 3 on the merged map with vpr_localizer through a ROS graph (vpr_eval --through-node)")
    status = vpr_eval.main([
        "--map", str(map_dir), "--bag", str(out / "run" / "lap_3"), *TOPICS, *DEPTH,
        "--distance", str(args.distance), "--through-node", "--rate", str(args.rate), "--rerank", rerank or "off",
        "--odom-topic", "/odom", "--trajectories", str(out / "trajectories"),
        "--json", str(out / "report.json"), "--html", str(out / "report.html")])
    if status != 0:
        return status
    _done(start)
    print(f"\nDemo finished in {time.perf_counter() - begin:.0f} s. Report: {(out / 'report.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
