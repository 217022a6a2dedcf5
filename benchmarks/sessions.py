"""A query lap against each single-session map and against their merge: what a second session adds.

    python benchmarks/sessions.py --maps demo_run/maps/lap_1 demo_run/maps/lap_2 demo_run/map \
        --bag demo_run/run/lap_3 [--bag other_run/lap_3] [--json out.json]

Each map is replayed through the core pipeline (the node's Localizer) twice: global retrieval alone (top
10), and re-ranked the way `make demo` does (XFeat + LighterGlue on the first 5 of 10, temporal window 0).
Recall@N counts a hypothesis right when its map frame lies within --distance metres of the query's true
position, whatever session it comes from.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.tools.eval import evaluate_map_bag

SETTINGS = {"global": LocalizerConfig(rerank="off", top_k=10, temporal_window=0),
            "re-ranked": LocalizerConfig(rerank="xfeat-lighterglue", top_k=10, rerank_top_k=5, temporal_window=0)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=Path, nargs="+", required=True)
    parser.add_argument("--bag", type=Path, action="append", required=True)
    parser.add_argument("--distance", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    out = []
    for bag in args.bag:
        for map_dir in args.maps:
            for name, config in SETTINGS.items():
                start = time.perf_counter()
                report, _, _ = evaluate_map_bag(map_dir, bag, "/camera/image_raw", "/ground_truth", None, args.distance, config,
                                                camera_info_topic="/camera/camera_info", progress=False)
                loop = report["loop_closure"]
                row = {"bag": str(bag), "map": str(map_dir), "map_frames": report["map_size"], "ranking": name,
                       "recall": report["recall"], "loop_accepted": loop["accepted"], "loop_false": loop["false"],
                       "sessions": report.get("sessions"), "seconds": round(time.perf_counter() - start, 1)}
                out.append(row)
                print(f"{bag.parent.name}/{bag.name} vs {map_dir.name:6} ({row['map_frames']:3} frames) {name:9} "
                      f"R@1 {row['recall']['1']:.3f}  R@5 {row['recall']['5']:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
