"""Loop-closure precision and recall of node configurations on Corridor (real images), through the
core Localizer the node runs. Prints figures. By default it compares the shipped defaults of
config/localize.yaml with the previous shipped defaults (global similarity >= 0.5 alone).

    .venv/bin/python benchmarks/loop_precision.py [--corridor ../shared/data/corridor]

A loop closure is correct when its map frame is one of the query's matching references
(ground_truth.csv); recall is correct loop closures over queries.
"""

import argparse
import csv
from pathlib import Path

import yaml

from common import CORRIDOR, REPO, corridor_available, corridor_map


def shipped() -> dict:
    from node_harness import node_parameters

    return node_parameters(yaml.safe_load((REPO / "config" / "localize.yaml").read_text()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corridor", type=Path, default=CORRIDOR)
    parser.add_argument("--queries", type=int, default=0, help="only the first this-many queries (0: all)")
    args = parser.parse_args()
    if not corridor_available(args.corridor):
        return 0
    from vpr_ros.core.config import LocalizerConfig
    from vpr_ros.core.inputs.images import read_image
    from vpr_ros.core.pipeline.localizer import Localizer
    from vpr_ros.ros.parameters import localizer_config

    vpr_map = corridor_map(args.corridor)
    index = {Path(r).name: i for i, r in enumerate(vpr_map.frames.sources)}
    with open(args.corridor / "ground_truth.csv") as handle:
        truth = {row["query"]: {index[Path(r).name] for r in row["matching_refs"].split()} for row in csv.DictReader(handle)}
    queries = sorted(truth)[:args.queries or None]
    p = shipped()
    configs = {
        "shipped defaults": localizer_config({**p, "device": "cpu"}),
        "previous defaults (rerank off, temporal_window 0)": LocalizerConfig(
            top_k=5, rerank="off", accept_min_similarity=0.5, temporal_window=0, device="cpu"),
    }
    images = [read_image(args.corridor / q) for q in queries]
    print(f"Corridor: {len(vpr_map)} map frames, {len(queries)} queries in order")
    for name, config in configs.items():
        localizer = Localizer(config, vpr_map)
        accepted = correct = 0
        for i, (query, image) in enumerate(zip(queries, images)):
            result = localizer.process(image, (1000 + i) * 10**9)
            if result.loop is not None:
                accepted += 1
                correct += result.loop.hypothesis.key in truth[query]
        precision = correct / accepted if accepted else float("nan")
        print(f"  {name:50} loop closures {accepted:3d}, false {accepted - correct:2d}, "
              f"precision {precision:.3f}, recall {correct / len(queries):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
