"""`vpr_eval`: Recall@N and per-stage latency of a descriptor preset on an image-folder dataset.

The dataset is in the ../shared/data/corridor format (`query/`, `ref/`, `ground_truth.csv`). The
references become the map (vocabulary and PCA fitted on them, as a robot's map would be); each query
is then answered alone (batch of one, as on a robot) and timed per stage. With `--rerank MATCHER`,
the first `--top-k` global candidates are re-ranked by local matching and geometric verification
(the map stores the matcher's local features) and the re-ranked recalls are reported too.
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
from vpr_ros.core.geometry import GeometricVerifier
from vpr_ros.core.map_store import VPRMap
from vpr_ros.core.matchers import MATCHERS
from vpr_ros.core.reranker import Reranker
from vpr_ros.core.confidence_eval import evaluate_confidence
from vpr_ros.core.uncertainty_training import train_uncertainty
from vpr_ros.tools import add_bag_topic_arguments
from vpr_ros.tools.plots import confidence_plots

RECALL_NS = (1, 5, 10)


def query_each(vpr_map: VPRMap, images, top_k: int, reranker: Reranker | None = None) -> dict:
    """Answer each image alone (batch of one, as on a robot).

    Returns `global` (Q x max(top_k, 10) ids), with a reranker `reranked` (the first top_k re-ranked,
    the rest in global order), `latency_ms` per stage, and with a reranker `ms_per_pair` (matching and
    verification per candidate pair) and `skipped` (queries whose confident first candidate alone was
    verified).
    """
    extractor = reranker.extractor_for(vpr_map.local_conf) if reranker else None
    stages: dict[str, list[float]] = {}
    ranked, reranked, per_pair, skipped = [], [], [], 0
    descriptors, similarities, published = [], [], []
    for image in images:
        result = vpr_map.query([image], k=max(top_k, max(RECALL_NS)))
        ranked.append(result.ids[0])
        descriptors.append(result.descriptors[0])
        similarities.append(result.similarities[0])
        ids, sims, inliers = result.ids[0, :top_k], result.similarities[0, :top_k], None
        timings = dict(result.timings_ms)
        if reranker is not None:
            start = time.perf_counter()
            features = extractor.extract([image])[0]
            timings["local_features"] = (time.perf_counter() - start) * 1e3
            rerank = reranker.rerank(features, result.ids[0, :top_k], result.similarities[0, :top_k], vpr_map.local)
            timings.update(rerank.timings_ms)
            timings["rerank_total"] = timings["local_features"] + timings["match"] + timings["verify"]
            timings["total"] += timings["rerank_total"]
            reranked.append(np.concatenate([rerank.ids, result.ids[0, len(rerank.ids):]]))
            ids = rerank.ids
            sims = np.array([c.global_similarity for c in rerank.candidates])
            inliers = np.array([c.verification.inlier_count if c.verification else 0 for c in rerank.candidates])
            if rerank.pairs_matched:
                per_pair.append((rerank.timings_ms["match"] + rerank.timings_ms["verify"]) / rerank.pairs_matched)
            skipped += rerank.skipped
        published.append((ids, sims, inliers))
        for stage, ms in timings.items():
            stages.setdefault(stage, []).append(ms)
    out = {"global": np.stack(ranked), "latency_ms": {stage: latency_summary(v) for stage, v in stages.items()},
           "descriptors": np.stack(descriptors), "similarities": np.stack(similarities), "published": published}
    if reranker is not None:
        out.update(reranked=np.stack(reranked), ms_per_pair=latency_summary(per_pair), skipped=skipped)
    return out


def _recalls(answers: dict, positives, reranker: Reranker | None, top_k: int) -> dict:
    report = {"recall": {str(n): r for n, r in recall_at_n(answers["global"], positives, RECALL_NS).items()},
              "latency_ms": answers["latency_ms"]}
    if reranker is not None:
        report["rerank"] = {
            "matcher": reranker.matcher.name, "top_k": top_k, "skip_margin": reranker.skip_margin,
            "min_inliers": reranker.verifier.min_inliers,
            "recall": {str(n): r for n, r in recall_at_n(answers["reranked"], positives, RECALL_NS).items()},
            "matcher_ms_per_pair": answers["ms_per_pair"], "queries_skipped": answers["skipped"],
        }
    return report


def _confidence(vpr_map: VPRMap, answers: dict, positives, reranker: Reranker | None) -> dict:
    published = [(ids[ids >= 0], sims[ids >= 0], None if inl is None else inl[ids >= 0])
                 for ids, sims, inl in answers["published"]]
    return evaluate_confidence(vpr_map.uncertainty, vpr_map, answers["descriptors"], published, positives,
                               reranker.matcher.name if reranker else None)


def evaluate_dataset(root: Path, preset: str, top_k: int = 10, progress: bool = True,
                     reranker: Reranker | None = None, max_keypoints: int = 512,
                     uncertainty: dict | None = None) -> dict:
    """Build a map from the dataset's references, query every query image, return the report dict.
    With `uncertainty` (training options, {} for the defaults), train the map's uncertainty model
    first and report the confidence metrics."""
    dataset = ImageFolderDataset.load(root)
    frames = FrameTable.build(np.zeros(len(dataset.refs), np.int64), dataset.refs)
    start = time.perf_counter()
    vpr_map = build_map(root.name, frames, load_image_file, preset, progress=progress,
                        local_features=reranker.matcher.features if reranker else None, max_keypoints=max_keypoints)
    build_s = time.perf_counter() - start
    if uncertainty is not None:
        vpr_map.uncertainty = train_uncertainty(vpr_map, uncertainty, [reranker] if reranker else [])
    answers = query_each(vpr_map, (read_image(path) for path in dataset.queries), top_k, reranker)
    extra = {"confidence": _confidence(vpr_map, answers, dataset.positives, reranker)} if uncertainty is not None else {}
    return {
        "dataset": str(root),
        "preset": preset,
        "descriptor_dim": vpr_map.descriptor.dim,
        "fingerprint": vpr_map.descriptor.fingerprint(),
        "num_queries": len(dataset.queries),
        "map_size": len(vpr_map),
        **_recalls(answers, dataset.positives, reranker, top_k),
        **extra,
        "map_build_s": build_s,
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "cuda": torch.cuda.is_available()},
    }


def evaluate_map_bag(map_dir: Path, bag: Path, image_topic: str, pose_topic: str | None,
                     tf_frames: tuple[str, str] | None, distance_m: float, top_k: int = 10,
                     reranker: Reranker | None = None, uncertainty: bool = False) -> dict:
    """Query every image of a bag against a map; a candidate is correct within `distance_m` of the query."""
    from vpr_ros.core.bag_source import read_bag_frames

    vpr_map = VPRMap.load(map_dir)
    if reranker is not None:
        reranker.check_map(vpr_map.local_conf)
    if not vpr_map.frames.has_pose.any():
        raise ValueError(f"map {map_dir} has no poses; a bag evaluation needs them for ground truth")
    if uncertainty and vpr_map.uncertainty is None:
        raise ValueError(f"map {map_dir} has no uncertainty model; train one with vpr_train_uncertainty")
    queries = read_bag_frames(bag, image_topic, pose_topic, tf_frames)
    if not queries.frames.has_pose.any():
        raise ValueError("the query bag yields no poses; pass --pose-topic or --tf-frames")
    posed = queries.frames.select(np.flatnonzero(queries.frames.has_pose))
    map_xyz = np.where(vpr_map.frames.has_pose[:, None], vpr_map.frames.pose[:, :3], np.inf)
    positives = [set(np.flatnonzero(np.linalg.norm(map_xyz - xyz, axis=1) <= distance_m).tolist())
                 for xyz in posed.pose[:, :3]]
    load = queries.loader()
    answers = query_each(vpr_map, (load(source) for source in posed.sources), top_k, reranker)
    extra = {"confidence": _confidence(vpr_map, answers, positives, reranker)} if uncertainty else {}
    return {
        "map": str(map_dir), "bag": str(bag), "preset": vpr_map.descriptor.preset,
        "descriptor_dim": vpr_map.descriptor.dim, "fingerprint": vpr_map.descriptor.fingerprint(),
        "num_queries": len(positives), "map_size": len(vpr_map), "distance_m": distance_m,
        "queries_without_true_match": sum(1 for p in positives if not p),
        **_recalls(answers, positives, reranker, top_k),
        **extra,
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
    parser.add_argument("--top-k", type=int, default=10,
                        help="candidates per query (re-ranked ones with --rerank; at least 10 are retrieved)")
    parser.add_argument("--rerank", choices=sorted(MATCHERS), help="re-rank the top-k by local matching")
    parser.add_argument("--max-keypoints", type=int, default=512, help="with --rerank and --dataset: keypoints per image")
    parser.add_argument("--min-inliers", type=int, default=GeometricVerifier().min_inliers,
                        help="with --rerank: inliers a verified candidate needs")
    parser.add_argument("--skip-margin", type=float,
                        help="with --rerank: verify only the first candidate when it leads by this cosine margin")
    parser.add_argument("--uncertainty", action="store_true",
                        help="report how well each confidence tells a correct top-1 from a wrong one (with "
                             "--dataset: train the map's uncertainty model first; with --map: use the map's)")
    parser.add_argument("--json", type=Path, help="write the full report to this JSON file")
    parser.add_argument("--plots", type=Path, help="write PNG plots into this folder (with --uncertainty)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.top_k < 1:
        parser.error("--top-k must be positive")
    if args.map and not (args.bag and args.image_topic):
        parser.error("--map needs --bag and --image-topic")
    try:
        reranker = (Reranker(args.rerank, GeometricVerifier(min_inliers=args.min_inliers), skip_margin=args.skip_margin)
                    if args.rerank else None)
        if args.dataset:
            report = evaluate_dataset(args.dataset, args.preset, args.top_k, not args.quiet, reranker,
                                      args.max_keypoints, {} if args.uncertainty else None)
        else:
            report = evaluate_map_bag(args.map, args.bag, args.image_topic, args.pose_topic,
                                      tuple(args.tf_frames) if args.tf_frames else None, args.distance,
                                      args.top_k, reranker, args.uncertainty)
    except (FileNotFoundError, ValueError) as exc:
        print(f"vpr_eval: error: {exc}", file=sys.stderr)
        return 2
    recall = "  ".join(f"R@{n} {report['recall'][str(n)]:.3f}" for n in RECALL_NS)
    print(f"{report.get('dataset') or report['bag']}  preset {report['preset']} ({report['descriptor_dim']}-d)  "
          f"{report['num_queries']} queries / {report['map_size']} map frames")
    print(f"  global    {recall}")
    if "rerank" in report:
        rerank = report["rerank"]
        recall = "  ".join(f"R@{n} {rerank['recall'][str(n)]:.3f}" for n in RECALL_NS)
        print(f"  reranked  {recall}  ({rerank['matcher']}, top {rerank['top_k']}, "
              f"{rerank['matcher_ms_per_pair']['p50']:.1f} ms per pair p50, "
              f"{rerank['queries_skipped']} queries verified their first candidate only)")
    for stage, lat in report["latency_ms"].items():
        print(f"  {stage:11} p50 {lat['p50']:7.1f} ms  p95 {lat['p95']:7.1f} ms")
    if "confidence" in report:
        conf = report["confidence"]
        print(f"  confidence of the top-1 ({conf['top1_accuracy']:.3f} of {conf['queries']} correct):")
        for name, m in conf["methods"].items():
            if "skipped" in m:
                print(f"    {name:9} skipped: {m['skipped']}")
                continue
            print(f"    {name:9} AUC-PR {m['auc_pr']:.3f}  AUROC {m['auroc']:.3f}  P@R100 "
                  f"{m['precision_at_recall_100']:.3f}  P@R90 {m['precision_at_recall_90']:.3f}"
                  + (f"  ECE {m['ece']:.3f}" if "ece" in m else ""))
        if args.plots:
            for path in confidence_plots(conf, args.plots, Path(report.get("dataset") or report["bag"]).name):
                print(f"  plot: {path}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"  report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
