"""Does "verified" mean the same place across keypoint budgets and matchers? (issue 22)

For every query of a dataset with ground truth, its true reference and `--wrong` references of other places
(the most similar by global descriptor, so the hard ones, then random far ones) are matched with each matcher
at each keypoint budget, and each pair is verified twice: by the count and ratio rules alone (the gate before
issue 22), with the a contrario test added (geometry.py, shipped), and two gates that were tried and not
shipped: more inliers than 99 % of the map's own hardest wrong pairs (each reference against its most
similar references of other places) and a minimum of 5 % of the keypoint budget. Prints, per matcher and
budget, how many right and wrong pairs each gate verifies.

    .venv/bin/python benchmarks/verification.py --dataset ../shared/data/corridor
    .venv/bin/python benchmarks/verification.py --map /tmp/demo/map --bag /tmp/demo/run/lap_2 --every 4

A dataset is an image folder (query/, ref/, ground_truth.csv); a map with a bag of another traversal uses
the bag's poses (a reference within --distance metres is the same place, beyond 3 x --distance another).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from vpr_ros.core.inputs.images import batch_to_tensor, read_image
from vpr_ros.core.matching.geometry import GeometricVerifier
from vpr_ros.core.matching.local_features import LocalExtractor
from vpr_ros.core.matching.matchers import MATCHERS, Matcher


def dataset_pairs(root: Path, every: int):
    from vpr_ros.core.evaluation.datasets import ImageFolderDataset
    from vpr_ros.core.maps.frames import FrameTable
    from vpr_ros.core.maps.map_builder import build_map, load_image_file

    ds = ImageFolderDataset.load(root)
    picked = list(range(0, len(ds.queries), every))
    refs = [read_image(p) for p in ds.refs]
    vpr_map = build_map(root.name, FrameTable.build(np.zeros(len(refs), np.int64), ds.refs), load_image_file,
                        "default", progress=False)
    queries = [read_image(ds.queries[i]) for i in picked]
    same = [ds.positives[i] for i in picked]
    far = [{j for j in range(len(refs)) if min((abs(j - k) for k in ds.positives[i]), default=0) > 10}
           for i in picked]
    keys = np.arange(len(refs))
    ref_far = [set(np.flatnonzero(np.abs(keys - k) > 6)) for k in keys]  # 3 x the 2-frame positive window
    return vpr_map, queries, refs, same, far, ref_far


def bag_pairs(map_dir: Path, bag: Path, every: int, distance: float):
    from vpr_ros.core.maps.map_builder import SourceLoader
    from vpr_ros.core.maps.map_store import VPRMap
    from vpr_ros.tools.eval import replay_inputs

    vpr_map = VPRMap.load(map_dir, with_uncertainty=False)
    loader = SourceLoader()
    refs = [loader(s) for s in vpr_map.frames.sources]
    items, queries = replay_inputs(bag, "/camera/image_raw", "/odom", None)
    xyz = vpr_map.frames.pose[:, :3]
    picked = list(range(0, len(items), every))
    images = [items[i][2]() for i in picked]
    d = [np.linalg.norm(xyz - queries.pose[i, :3], axis=1) for i in picked]
    ref_far = [set(np.flatnonzero(np.linalg.norm(xyz - p, axis=1) > 3 * distance)) for p in xyz]
    return (vpr_map, images, refs, [set(np.flatnonzero(x <= distance)) for x in d],
            [set(np.flatnonzero(x > 3 * distance)) for x in d], ref_far)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path)
    parser.add_argument("--map", type=Path)
    parser.add_argument("--bag", type=Path)
    parser.add_argument("--distance", type=float, default=5.0)
    parser.add_argument("--every", type=int, default=2, help="use every n-th query")
    parser.add_argument("--wrong", type=int, default=3, help="wrong references per query (hardest first)")
    parser.add_argument("--matchers", default="xfeat-mnn,xfeat-lighterglue")
    parser.add_argument("--budgets", default="512,2048")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    vpr_map, queries, refs, same, far, ref_far = (dataset_pairs(args.dataset, args.every) if args.dataset
                                         else bag_pairs(args.map, args.bag, args.every, args.distance))
    descriptor, ref_desc = vpr_map.descriptor, vpr_map.descriptors
    with torch.inference_mode():
        query_desc = np.concatenate([descriptor.describe(batch_to_tensor(queries[s:s + 8], descriptor.input_size))
                                     for s in range(0, len(queries), 8)])
    pairs = []  # (query, reference, right)
    for q, (pos, wrong) in enumerate(zip(same, far)):
        if not pos or not wrong:
            continue
        sims = ref_desc @ query_desc[q]
        best = max(pos, key=lambda k: sims[k])
        hard = sorted(wrong, key=lambda k: -sims[k])[:args.wrong]
        pairs += [(q, best, True)] + [(q, k, False) for k in hard]
    print(f"{len(queries)} queries, {len(refs)} references: {sum(r for *_, r in pairs)} right pairs, "
          f"{sum(not r for *_, r in pairs)} wrong pairs (the most similar references of other places)")
    null_pairs = []  # each reference against its 3 most similar references of other places
    for k in np.random.default_rng(0).choice(len(refs), min(len(refs), 120), replace=False):
        sims = ref_desc @ ref_desc[k]
        null_pairs += [(int(k), j) for j in sorted(ref_far[k], key=lambda j: -sims[j])[:3]]
    print("| matcher | keypoints | matches p50 (right / wrong) | gate | right verified | wrong verified |")
    print("|---|---|---|---|---|---|")
    for budget in [int(b) for b in args.budgets.split(",")]:
        extractor = LocalExtractor("xfeat", budget)
        start = time.perf_counter()
        q_feat = extractor.extract(queries)
        r_feat = {k: extractor.extract([refs[k]])[0]
                  for k in sorted({k for _, k, _ in pairs} | {k for pair in null_pairs for k in pair})}
        extract_s = time.perf_counter() - start
        for name in args.matchers.split(","):
            if MATCHERS[name].features != "xfeat":
                continue
            matcher = Matcher(name)
            counts = []
            for a, b in null_pairs:
                m = matcher.match(r_feat[a], [r_feat[b]])[0]
                counts.append(GeometricVerifier().verify(r_feat[a].keypoints[m.query_idx], r_feat[b].keypoints[m.map_idx],
                                                         r_feat[a].image_size, r_feat[b].image_size).inlier_count)
            measured = int(np.floor(np.quantile(counts, 0.99))) + 1
            share = int(np.ceil(0.05 * budget))
            gates = {"count and ratio (before)": GeometricVerifier(max_log_nfa=np.inf),
                     "+ a contrario (shipped)": GeometricVerifier(),
                     f"min_inliers = 99 % of the map's wrong pairs + 1 ({measured})": GeometricVerifier(
                         min_inliers=max(15, measured)),
                     f"min_inliers = 5 % of the keypoints ({share})": GeometricVerifier(min_inliers=max(15, share))}
            results = []
            for q, k, right in pairs:
                m = matcher.match(q_feat[q], [r_feat[k]])[0]
                p0, p1 = q_feat[q].keypoints[m.query_idx], r_feat[k].keypoints[m.map_idx]
                checks = [g.verify(p0, p1, q_feat[q].image_size, r_feat[k].image_size) for g in gates.values()]
                results.append((right, len(m), [c.verified for c in checks], checks[0].inlier_count))
            right = [r for r in results if r[0]]
            wrong = [r for r in results if not r[0]]
            for g, gate in enumerate(gates):
                print(f"| {name} | {budget} | {np.median([r[1] for r in right]):.0f} / "
                      f"{np.median([r[1] for r in wrong]):.0f} | {gate} | "
                      f"{sum(r[2][g] for r in right)} / {len(right)} | {sum(r[2][g] for r in wrong)} / {len(wrong)} |")
            inliers = {kind: np.array([r[3] for r in rows]) for kind, rows in (("right", right), ("wrong", wrong))}
            print(f"  {name} at {budget}: inliers of right pairs p5/p10/p50 "
                  f"{np.percentile(inliers['right'], [5, 10, 50]).round().astype(int).tolist()}, of wrong pairs "
                  f"p50/p90/p95/max {np.percentile(inliers['wrong'], [50, 90, 95, 100]).round().astype(int).tolist()}")
        print(f"  (extraction at {budget} keypoints: {extract_s:.0f} s)")


if __name__ == "__main__":
    main()
