"""Metric loop closures against the simulator's ground truth, by where the depth comes from: the map's keypoint
depths only, the query's depth image only, or both (the RGB-D residual), plus the depth-free baseline.

    python benchmarks/metric_loops.py --run demo_run/run --map demo_run/maps/lap_1 [--lap lap_2] \
        [--set rerank=xfeat-lighterglue --set temporal_window=0 ...] [--json out.json]

The run is a `vpr_sim` output with depth (the default); the map is built from its lap 1 with
--camera-info-topic and --depth-topic (make demo's demo_run/maps/lap_1 is). Every variant replays the lap
through the core pipeline (the node's Localizer) with LocalizerConfig's defaults, the shipped ones, unless
--set changes them, and is scored by core/evaluation/metric_eval.py (the figures vpr_eval prints): errors of the correct
loop closures' relative poses, NEES of their covariances (mean 6 when right), and the localised camera
position against the map frame's. Run it twice for the same machine figures.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.evaluation.metric_eval import metric_report
from vpr_ros.core.evaluation.replay import replay_core
from vpr_ros.core.build.bag_source import BagDepth, read_camera_info, read_static_transform
from vpr_ros.core.map.store import VPRMap
from vpr_ros.tools.eval import ground_truth, replay_inputs

VARIANTS = ("both", "map", "query", "none")  # whose depth the localizer gets


def run_variant(run_dir: Path, map_dir: Path, lap: str, variant: str, config: LocalizerConfig,
                distance_m: float) -> dict:
    bag = run_dir / lap
    vpr_map = VPRMap.load(map_dir)
    if variant in ("query", "none") and vpr_map.local is not None:
        vpr_map.local.depth = None  # as if the map had been built without --depth-topic
    items, queries = replay_inputs(bag, "/camera/image_raw", "/ground_truth", None)
    positives, _ = ground_truth(vpr_map, queries, distance_m, None, None)
    K, _, optical = read_camera_info(bag, "/camera/camera_info")
    depth = BagDepth(bag, "/camera/depth/image_raw") if variant in ("both", "query") else None
    start = time.perf_counter()
    records = replay_core(vpr_map, items, config, K, depth=depth)
    seconds = time.perf_counter() - start
    report = metric_report(records, vpr_map, read_static_transform(bag, "base_link", optical), positives) or {}
    metric_ms = [r.timings_ms["metric"] for r in records if "metric" in r.timings_ms]
    report.update(variant=variant, seconds=round(seconds, 1),
                  metric_ms_p50=sorted(metric_ms)[len(metric_ms) // 2] if metric_ms else None)
    return report


def _line(report: dict) -> str:
    if not report.get("translation_error_m", {}).get("count"):
        return (f"{report['variant']:6} {report.get('metric', 0)} of {report.get('loop_closures', 0)} metric; "
                f"{report.get('direction_only', {})}")
    t, r, n = report["translation_error_m"], report["rotation_error_deg"], report["nees"]
    c, m = report["camera_position_error_m"], report["map_frame_position_error_m"]
    return (f"{report['variant']:6} {report['metric']:3} of {report['loop_closures']:3} metric | translation "
            f"{t['p50']:.3f} / {t['p95']:.3f} m | rotation {r['p50']:.2f} / {r['p95']:.2f} deg | NEES mean "
            f"{n['mean']:.1f} median {n['p50']:.1f} | camera position {c['p50']:.3f} m (map frame "
            f"{m['p50']:.2f} m) | PnP {report['metric_ms_p50']:.1f} ms p50")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="vpr_sim output folder (with depth)")
    parser.add_argument("--map", type=Path, required=True, help="map of lap 1, built with depth")
    parser.add_argument("--lap", default="lap_2")
    parser.add_argument("--distance", type=float, default=5.0, help="a map frame within this many metres is right")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a LocalizerConfig setting (e.g. rerank=xfeat-lighterglue)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    fields = {f.name: f for f in dataclasses.fields(LocalizerConfig)}
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        default = fields[name].default
        overrides[name] = value if isinstance(default, str) or default is None else type(default)(value)
    config = LocalizerConfig(**overrides)
    print(f"{args.run / args.lap} against {args.map}; settings changed from the shipped ones: {overrides or 'none'}")
    print("(errors: median / p95 over the correct loop closures; NEES mean is 6 when the covariance is right)")
    reports = []
    for variant in args.variants.split(","):
        reports.append(run_variant(args.run, args.map, args.lap, variant, config, args.distance))
        print(_line(reports[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"settings": overrides, "reports": reports}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
