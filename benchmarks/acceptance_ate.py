"""The acceptance policy judged by what it does to the map: loop closures and trajectory error (the pose-graph
back-end with vpr/pose as fixes, localize mode) as functions of the acceptance settings.

    .venv/bin/python benchmarks/acceptance_ate.py --map demo_run/map --bag demo_run/run/lap_3 [--json out.json]

Each setting replays the bag through the core pipeline (the node's Localizer) against the map with its depth
images and odometry; the back-end (core/posegraph, shipped GraphSettings) takes the odometry and every localised
pose; ATE is evo's, unaligned (the map frame is the truth's). Settings: the shipped ones (LocalizerConfig())
with accept_min_probability 0.5 ... 0.99 and the risk-controlled threshold (-1, accept_max_false_rate), with and
without temporal agreement (temporal_window 1 / 0), re-ranked with --rerank (the shipped matcher; the map's
calibrators must know it) and, unless --no-global, without re-ranking (similarity threshold).
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


def settings(rerank: str, probabilities: list[float], windows: list[int], with_global: bool
             ) -> list[tuple[str, LocalizerConfig]]:
    out = []
    for window in windows:
        for p in probabilities:
            rule = f"risk {LocalizerConfig.accept_max_false_rate:g}" if p < 0 else f"p >= {p}"
            name = f"rerank {rerank}, {rule}, temporal {'on' if window else 'off'}"
            out.append((name, LocalizerConfig(rerank=rerank, accept_min_probability=p, temporal_window=window)))
        if with_global:
            out.append((f"rerank off, risk {LocalizerConfig.accept_max_false_rate:g}, temporal {'on' if window else 'off'}",
                        LocalizerConfig(rerank="off", accept_min_probability=-1.0, temporal_window=window)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", type=Path, required=True)
    parser.add_argument("--bag", type=Path, required=True)
    parser.add_argument("--rerank", default=LocalizerConfig.rerank, help="the matcher the map's calibrators know")
    parser.add_argument("--probabilities", type=float, nargs="+", default=[0.5, 0.7, 0.9, 0.95, 0.99, -1.0])
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 0], help="temporal_window values")
    parser.add_argument("--no-global", action="store_true", help="skip the settings without re-ranking")
    parser.add_argument("--distance", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for name, config in settings(args.rerank, args.probabilities, args.windows, not args.no_global):
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
