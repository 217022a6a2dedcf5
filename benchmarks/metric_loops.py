"""Metric loop closures against the simulator's ground truth: the error of every accepted loop closure's
relative pose, the consistency of its covariance (NEES), and the error of the localised camera pose.

    python benchmarks/metric_loops.py --run demo_run/run --map demo_run/map [--lap lap_2] \
        [--depth map|query|both] [--rerank xfeat-mnn] [--set name=value ...]

The run is a `vpr_sim` output with depth; the map is built from its lap 1 with --camera-info-topic and
--depth-topic. `--depth map` uses the map's keypoint depths only (the query's depth image is withheld),
`query` only the query's depth image (the map's keypoint depths are dropped in memory), `both` gives the
localizer both. Settings are LocalizerConfig's defaults (the shipped ones) unless --set changes them.

Errors are in the module convention of core/matching/metric.py: translation error |t_true - t| (m),
rotation error the angle of R_true R^T (degrees); NEES = e^T P^-1 e of the 6-vector e, which has mean 6
when the covariance P is right. The localised pose is compared with the query camera's true position.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.constraints import camera_pose
from vpr_ros.core.localizer import Localizer
from vpr_ros.core.maps.bag_source import BagDepth, read_bag_frames, read_camera_info, read_static_transform
from vpr_ros.core.maps.map_store import VPRMap
from vpr_ros.core.matching.metric import pose_error
from vpr_ros.core.transforms import compose, inverse, pose_matrices


def _summary(values) -> dict:
    values = np.asarray(values, np.float64)
    if not len(values):
        return {"n": 0}
    return {"n": int(len(values)), "median": float(np.median(values)), "p95": float(np.percentile(values, 95)),
            "mean": float(values.mean()), "max": float(values.max())}


def run(run_dir: Path, map_dir: Path, lap: str, depth_mode: str, overrides: dict, limit: int = 0) -> dict:
    bag = run_dir / lap
    frames = read_bag_frames(bag, "/camera/image_raw", "/odom")
    load = frames.loader()
    depth = BagDepth(bag, "/camera/depth/image_raw")
    K, _, optical = read_camera_info(bag, "/camera/camera_info")
    body_camera = read_static_transform(bag, "base_link", optical)
    vpr_map = VPRMap.load(map_dir)
    if depth_mode == "query" and vpr_map.local is not None:
        vpr_map.local.depth = None
    if vpr_map.camera is None or vpr_map.camera.camera_in_body is None:
        raise SystemExit("the map records no camera mounting: build it with --camera-info-topic")
    config = LocalizerConfig(**overrides)
    localizer = Localizer(config, vpr_map)
    t_err, r_err, nees, pos_err, old_pos_err, notes, metric_ms = [], [], [], [], [], {}, []
    accepted = 0
    table = frames.frames
    count = len(table) if not limit else min(limit, len(table))
    start = time.perf_counter()
    for i in range(count):
        image = load(table.sources[i])
        stamp = int(table.stamp_ns[i])
        query_depth = depth(stamp) if depth_mode in ("query", "both") else None
        result = localizer.process(image, stamp, camera_K=K, depth=query_depth)
        if result.loop is None:
            continue
        accepted += 1
        if result.metric is None:
            notes[result.scale_note] = notes.get(result.scale_note, 0) + 1
            continue
        metric_ms.append(result.timings_ms.get("metric", float("nan")))
        world_query = compose(table.pose[i], body_camera)
        world_match = compose(result.loop.hypothesis.pose, vpr_map.camera.camera_in_body)
        truth = compose(inverse(world_query), world_match)
        true_r, true_t = pose_matrices(truth)
        e = pose_error(result.metric.rotation, result.metric.translation, true_r, true_t)
        t_err.append(float(np.linalg.norm(e[:3])))
        r_err.append(float(np.degrees(np.linalg.norm(e[3:]))))
        nees.append(float(e @ np.linalg.solve(result.metric.covariance, e)))
        located = camera_pose(result.loop, result.metric, vpr_map.camera)
        pos_err.append(float(np.linalg.norm(located[0][:3] - world_query[:3])))
        old_pos_err.append(float(np.linalg.norm(np.asarray(result.loop.hypothesis.pose[:3]) - world_query[:3])))
    seconds = time.perf_counter() - start
    return {"lap": str(bag), "map": str(map_dir), "depth": depth_mode, "frames": count, "accepted": accepted,
            "metric": len(t_err), "fallback_notes": notes, "translation_error_m": _summary(t_err),
            "rotation_error_deg": _summary(r_err), "nees": _summary(nees),
            "nees_within_2x": float(np.mean(np.asarray(nees) <= 12.59)) if nees else None,  # chi2(6) 95 %: 12.59
            "camera_position_error_m": _summary(pos_err), "map_frame_position_error_m": _summary(old_pos_err),
            "metric_ms": _summary(metric_ms), "seconds": round(seconds, 1),
            "config": {k: v for k, v in dataclasses.asdict(config).items() if k in overrides}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="vpr_sim output folder (with depth)")
    parser.add_argument("--map", type=Path, required=True, help="map of lap 1, built with depth")
    parser.add_argument("--lap", default="lap_2")
    parser.add_argument("--depth", choices=("map", "query", "both"), default="map")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a LocalizerConfig setting (e.g. rerank=xfeat-lighterglue)")
    parser.add_argument("--limit", type=int, default=0, help="first N frames only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    overrides = {}
    fields = {f.name: f for f in dataclasses.fields(LocalizerConfig)}
    for item in args.set:
        name, _, value = item.partition("=")
        default = fields[name].default
        overrides[name] = value if isinstance(default, str) or default is None else type(default)(value)
    report = run(args.run, args.map, args.lap, args.depth, overrides, args.limit)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
