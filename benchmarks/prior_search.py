"""Search with a position prior: how much faster a large map answers, and what it does to recall and to false
loop closures on the demo's query lap.

    python benchmarks/prior_search.py speed [--frames 100000] [--sigma 10] [--queries 300]
    python benchmarks/prior_search.py accuracy --map demo_run/map --bag demo_run/run/lap_3 [--sigma 10]

speed: a city-like map of --frames frames along a grid of streets (100 m blocks, a frame every 5 m), with
random unit descriptors of the default preset's dimension (256 after PCA); each query is a map frame's
descriptor with noise, its prior the frame's position plus N(0, sigma^2) noise. The whole-map search and the
prior's search (the region from the map's position grid, then faiss's ID selector) run on the same index
and queries, alternating; the ratio of their medians is the figure. Flat (the default) and, for reference,
HNSW32 and IVF1024,Flat.

accuracy: the query lap replayed through the core pipeline with the shipped defaults, without a prior and
with one of --sigma metres around each frame's true position (seeded), scored as vpr_eval scores it.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.map.index import DescriptorIndex
from vpr_ros.core.inputs.sync import PositionPrior
from vpr_ros.core.retrieval.prior import RadiusPolicy, RegionFinder


def street_grid(frames: int, block_m: float = 100.0, spacing_m: float = 5.0) -> np.ndarray:
    """frames x 2 positions along the streets of a square grid, as many streets as it takes."""
    per_street = None
    for side in range(2, 10_000):
        length = side * block_m
        per_street = int(length / spacing_m)
        if 2 * (side + 1) * per_street >= frames:
            break
    along = np.arange(per_street) * spacing_m
    lines = [np.stack([along, np.full_like(along, i * block_m)], 1) for i in range(side + 1)]
    lines += [np.stack([np.full_like(along, i * block_m), along], 1) for i in range(side + 1)]
    return np.concatenate(lines)[:frames]


def speed(args) -> dict:
    rng = np.random.default_rng(0)
    xy = street_grid(args.frames)
    pose = np.zeros((len(xy), 7))
    pose[:, :2], pose[:, 6] = xy, 1.0
    frames = FrameTable.build(np.arange(len(xy)), [""] * len(xy), pose=pose)
    vectors = rng.standard_normal((len(xy), args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.choice(len(xy), args.queries, replace=False)
    queries = vectors[picks] + 0.05 * rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    priors = [PositionPrior((*(xy[i] + rng.normal(0, args.sigma, 2)), 0.0), np.eye(3) * args.sigma ** 2, 0)
              for i in picks]
    policy = RadiusPolicy()
    finder = RegionFinder(policy, 1.0)  # as the Localizer keeps it: the map's position grid built once
    finder.region(frames, priors[0], 0)
    out = {"frames": len(xy), "dim": args.dim, "queries": args.queries, "sigma_m": args.sigma,
           "radius_m": policy.radius(priors[0]), "indexes": {}}
    for factory, params in (("Flat", None), ("HNSW32", {"efSearch": 64}), ("IVF1024,Flat", {"nprobe": 16})):
        index = DescriptorIndex(args.dim, factory, params)
        index.train(vectors[rng.choice(len(xy), min(len(xy), 50_000), replace=False)])
        index.add(vectors)
        whole, region_ms, subset, sizes, hits = [], [], [], [], [0, 0]
        for q, prior, truth in zip(queries, priors, picks):
            t0 = time.perf_counter()
            _, ids = index.search(q[None], 5)
            t1 = time.perf_counter()
            region = finder.region(frames, prior, 0)
            t2 = time.perf_counter()
            _, sub_ids = index.search(q[None], 5, region.mask)
            t3 = time.perf_counter()
            whole.append(t1 - t0), region_ms.append(t2 - t1), subset.append(t3 - t1)
            sizes.append(region.frames or len(xy))
            hits[0] += int(ids[0, 0] == truth)
            hits[1] += int(sub_ids[0, 0] == truth)
        entry = {"whole_map_ms_p50": 1e3 * float(np.median(whole)),
                 "prior_ms_p50": 1e3 * float(np.median(subset)),
                 "of_which_region_ms_p50": 1e3 * float(np.median(region_ms)),
                 "speedup": float(np.median(whole) / np.median(subset)),
                 "mean_region_frames": float(np.mean(sizes)),
                 "top1_correct_whole": hits[0] / args.queries, "top1_correct_prior": hits[1] / args.queries}
        out["indexes"][factory] = entry
        print(f"{factory:13} whole map p50 {entry['whole_map_ms_p50']:7.3f} ms   with the prior p50 "
              f"{entry['prior_ms_p50']:7.3f} ms (region {entry['of_which_region_ms_p50']:.3f} ms)   x"
              f"{entry['speedup']:.1f}   {entry['mean_region_frames']:.0f} of {len(xy)} frames searched   top-1 right "
              f"{hits[0]}/{args.queries} -> {hits[1]}/{args.queries}", flush=True)
    return out


def accuracy(args) -> dict:
    from vpr_ros.tools.eval import evaluate_map_bag

    out = {"map": str(args.map), "bag": str(args.bag), "sigma_m": args.sigma, "runs": {}}
    for label, sigma in (("no prior", None), (f"prior {args.sigma} m", args.sigma)):
        start = time.perf_counter()
        report, _, _ = evaluate_map_bag(args.map, args.bag, "/camera/image_raw", "/ground_truth", None, args.distance,
                                        LocalizerConfig(), camera_info_topic="/camera/camera_info", progress=False,
                                        prior_sigma_m=sigma, prior_seed=args.seed)
        loop = report["loop_closure"]
        entry = {"recall": report["recall"], "recall_global": report.get("recall_global"),
                 "loop_accepted": loop["accepted"], "loop_false": loop["false"], "loop_precision": loop["precision"],
                 "search_ms_p50": report["latency_ms"]["search"]["p50"], "prior": report.get("prior"),
                 "seconds": time.perf_counter() - start}
        out["runs"][label] = entry
        searched = (f", {report['prior']['mean_searched_frames']:.0f} of {report['map_size']} frames searched"
                    if sigma else "")
        print(f"{label:12} R@1 {entry['recall']['1']:.3f} (global {entry['recall_global']['1']:.3f})  loop closures "
              f"{loop['accepted']} accepted, {loop['false']} false{searched}", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--frames", type=int, default=100_000)
    s.add_argument("--dim", type=int, default=256)
    s.add_argument("--queries", type=int, default=300)
    s.add_argument("--sigma", type=float, default=10.0)
    a = sub.add_parser("accuracy")
    a.add_argument("--map", type=Path, required=True)
    a.add_argument("--bag", type=Path, required=True)
    a.add_argument("--sigma", type=float, default=10.0)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--distance", type=float, default=5.0)
    for p in (s, a):
        p.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    out = speed(args) if args.what == "speed" else accuracy(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
