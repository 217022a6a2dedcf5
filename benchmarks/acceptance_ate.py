"""The acceptance policy judged by what it does to the map: loop closures and trajectory error (the pose-graph
back-end with vpr/pose as fixes, localize mode) as functions of the acceptance settings.

    .venv/bin/python benchmarks/acceptance_ate.py --map demo_run/map --bag demo_run/run/lap_3 [--json out.json]

Each setting replays the bag through the core pipeline (the node's Localizer) against the map with its depth
images and odometry; the back-end (core/posegraph, shipped GraphSettings) takes the odometry and every localised
pose; ATE is evo's, unaligned (the map frame is the truth's). Settings: accept_min_probability 0.5 ... 0.99 and
the automatic point (-1), with and without temporal agreement (temporal_window 1 / 0), re-ranked with the
matcher the map's calibrators were fitted with (--rerank) and without re-ranking (similarity threshold).
"""

import argparse
import json
import sys
import time
from pathlib import Path

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.tools.eval import evaluate_map_bag

TOPICS = {"image": "/camera/image_raw", "pose": "/ground_truth", "odom": "/odom", "info": "/camera/camera_info",
          "depth": "/camera/depth/image_raw"}


def settings(rerank: str, probabilities: list[float]) -> list[tuple[str, LocalizerConfig]]:
    out = []
    for window in (1, 0):
        for p in probabilities:
            name = f"rerank {rerank}, p >= {'auto' if p < 0 else p}, temporal {'on' if window else 'off'}"
            out.append((name, LocalizerConfig(rerank=rerank, top_k=10, rerank_top_k=5, accept_min_probability=p,
                                              temporal_window=window)))
        out.append((f"rerank off, p >= auto, temporal {'on' if window else 'off'}",
                    LocalizerConfig(rerank="off", top_k=10, temporal_window=window)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", type=Path, required=True)
    parser.add_argument("--bag", type=Path, required=True)
    parser.add_argument("--rerank", default="xfeat-lighterglue", help="the matcher the map's calibrators know")
    parser.add_argument("--probabilities", type=float, nargs="+", default=[0.5, 0.7, 0.9, 0.95, 0.99, -1.0])
    parser.add_argument("--distance", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for name, config in settings(args.rerank, args.probabilities):
        start = time.perf_counter()
        report, _, _ = evaluate_map_bag(args.map, args.bag, TOPICS["image"], TOPICS["pose"], None, args.distance, config,
                                        camera_info_topic=TOPICS["info"], progress=False, depth_topic=TOPICS["depth"],
                                        odom_topic=TOPICS["odom"])
        loop, t = report["loop_closure"], report["trajectory"]
        row = {"setting": name, "accepted": loop["accepted"], "false": loop["false"], "precision": loop["precision"],
               "fixes": t["graph"]["fixes"], "odometry_ate_m": t["odometry"]["ate_rmse_m"],
               "ate_m": t["optimised"]["ate_rmse_m"], "ate_ratio": t["ate_ratio"],
               "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(f"{name:52} closures {row['accepted']:3d} ({row['false']} false)  fixes {row['fixes']:3d}  "
              f"ATE {row['ate_m']:.3f} m (odometry {row['odometry_ate_m']:.2f} m, {row['ate_ratio']:.1f}x)  "
              f"[{row['seconds']:.0f} s]", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"map": str(args.map), "bag": str(args.bag), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
