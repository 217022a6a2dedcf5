"""`vpr_eval`: Recall@N and per-stage latency of a descriptor preset on an image-folder dataset.

The dataset is in the ../shared/data/corridor format (`query/`, `ref/`, `ground_truth.csv`). The
references become the map (vocabulary and PCA fitted on them, as a robot's map would be); each query
is then answered alone (batch of one, as on a robot) and timed per stage.
"""

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vpr_ros.core.datasets import ImageFolderDataset, read_image
from vpr_ros.core.descriptors import PRESETS
from vpr_ros.core.frames import FrameTable
from vpr_ros.core.map_builder import build_map, load_image_file
from vpr_ros.core.metrics import latency_summary, recall_at_n
from vpr_ros.core.recognizer import PlaceRecognizer
from vpr_ros.tools import add_bag_topic_arguments

RECALL_NS = (1, 5, 10)


def query_each(recognizer: PlaceRecognizer, images, top_k: int) -> tuple[np.ndarray, dict[str, dict]]:
    """Answer each image alone (batch of one, as on a robot): Q x top_k ids and per-stage latency."""
    stages: dict[str, list[float]] = {}
    ranked = []
    for image in images:
        result = recognizer.query([image], k=top_k)
        ranked.append(result.ids[0])
        for stage, ms in result.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    return np.stack(ranked), {stage: latency_summary(v) for stage, v in stages.items()}


def evaluate_dataset(root: Path, preset: str, top_k: int = 10, progress: bool = True) -> dict:
    """Build a map from the dataset's references, query every query image, return the report dict."""
    dataset = ImageFolderDataset.load(root)
    frames = FrameTable.build(np.zeros(len(dataset.refs), np.int64), dataset.refs)
    start = time.perf_counter()
    vpr_map = build_map(root.name, frames, load_image_file, preset, progress=progress)
    build_s = time.perf_counter() - start
    ranked, latency = query_each(PlaceRecognizer(vpr_map.descriptor, vpr_map.index),
                                 (read_image(path) for path in dataset.queries), top_k)
    recall = recall_at_n(ranked, dataset.positives, RECALL_NS)
    return {
        "dataset": str(root),
        "preset": preset,
        "descriptor_dim": vpr_map.descriptor.dim,
        "fingerprint": vpr_map.descriptor.fingerprint(),
        "num_queries": len(dataset.queries),
        "map_size": len(vpr_map),
        "recall": {str(n): r for n, r in recall.items()},
        "latency_ms": latency,
        "map_build_s": build_s,
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "cuda": torch.cuda.is_available()},
    }


def evaluate_map_bag(map_dir: Path, bag: Path, image_topic: str, pose_topic: str | None,
                     tf_frames: tuple[str, str] | None, distance_m: float, top_k: int = 10) -> dict:
    """Query every image of a bag against a map; a candidate is correct within `distance_m` of the query."""
    from vpr_ros.core.bag_source import read_bag_frames
    from vpr_ros.core.map_store import VPRMap

    vpr_map = VPRMap.load(map_dir)
    if not vpr_map.frames.has_pose.any():
        raise ValueError(f"map {map_dir} has no poses; a bag evaluation needs them for ground truth")
    queries = read_bag_frames(bag, image_topic, pose_topic, tf_frames)
    if not queries.frames.has_pose.any():
        raise ValueError("the query bag yields no poses; pass --pose-topic or --tf-frames")
    posed = queries.frames.select(np.flatnonzero(queries.frames.has_pose))
    map_xyz = np.where(vpr_map.frames.has_pose[:, None], vpr_map.frames.pose[:, :3], np.inf)
    positives = [set(np.flatnonzero(np.linalg.norm(map_xyz - xyz, axis=1) <= distance_m).tolist())
                 for xyz in posed.pose[:, :3]]
    load = queries.loader()
    ranked, latency = query_each(PlaceRecognizer(vpr_map.descriptor, vpr_map.index),
                                 (load(source) for source in posed.sources), top_k)
    recall = recall_at_n(ranked, positives, RECALL_NS)
    return {
        "map": str(map_dir), "bag": str(bag), "preset": vpr_map.descriptor.preset,
        "descriptor_dim": vpr_map.descriptor.dim, "fingerprint": vpr_map.descriptor.fingerprint(),
        "num_queries": len(ranked), "map_size": len(vpr_map), "distance_m": distance_m,
        "queries_without_true_match": sum(1 for p in positives if not p),
        "recall": {str(n): r for n, r in recall.items()},
        "latency_ms": latency,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpr_eval", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, help="image-folder dataset: query/, ref/, ground_truth.csv")
    source.add_argument("--map", type=Path, help="map directory to query with the images of --bag")
    parser.add_argument("--bag", type=Path, help="with --map: bag of query images with poses")
    add_bag_topic_arguments(parser)
    parser.add_argument("--distance", type=float, default=25.0,
                        help="with --map: a match within this many metres is correct (25 m as in the VPR literature)")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS), help="descriptor preset")
    parser.add_argument("--top-k", type=int, default=10, help="candidates retrieved per query")
    parser.add_argument("--json", type=Path, help="write the full report to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.top_k < max(RECALL_NS):
        parser.error(f"--top-k must be at least {max(RECALL_NS)} to report Recall@{max(RECALL_NS)}")
    if args.map and not (args.bag and args.image_topic):
        parser.error("--map needs --bag and --image-topic")
    try:
        if args.dataset:
            report = evaluate_dataset(args.dataset, args.preset, args.top_k, progress=not args.quiet)
        else:
            report = evaluate_map_bag(args.map, args.bag, args.image_topic, args.pose_topic,
                                      tuple(args.tf_frames) if args.tf_frames else None, args.distance,
                                      args.top_k)
    except (FileNotFoundError, ValueError) as exc:
        print(f"vpr_eval: error: {exc}", file=sys.stderr)
        return 2
    recall = "  ".join(f"R@{n} {report['recall'][str(n)]:.3f}" for n in RECALL_NS)
    print(f"{report.get('dataset') or report['bag']}  preset {report['preset']} ({report['descriptor_dim']}-d)  "
          f"{report['num_queries']} queries / {report['map_size']} map frames")
    print(f"  {recall}")
    for stage, lat in report["latency_ms"].items():
        print(f"  {stage:11} p50 {lat['p50']:7.1f} ms  p95 {lat['p95']:7.1f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"  report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
