"""Does "verified" mean the same place? Right pairs against the hardest wrong pairs, at two keypoint budgets.

For every `--every`-th query of a dataset with ground truth, its best true reference and the `--wrong` most
similar references of other places (by global descriptor: the look-alikes) are matched with each matcher at
each keypoint budget and verified. Each pair is then judged by the gates below, and the measures that
separate the two kinds are printed as percentiles:

- `inliers`, `ratio` (of the matches), `log10 NFA` (geometry.py's a contrario test);
- `share`: inliers over the smaller keypoint count of the two images (the budget);
- `coverage`: how much of each image the inliers span (geometry.inlier_coverage, the smaller of the two);
- `homography share`: homography inliers over the two-view model's: near 1 for a rotation or a short step,
  lower when the views are far apart in depth (parallax).

Gates: the count, ratio and a contrario rules (shipped before issue 41), and the same with the structure
rule (GeometricVerifier's `min_keypoint_share` and `min_inlier_coverage`, shipped since issue 41).

    .venv/bin/python benchmarks/verification.py --dataset ../shared/data/corridor
    .venv/bin/python benchmarks/verification.py --map runs/cond/map --bag runs/cond/run/lap_6 --every 2

A dataset is an image folder (query/, ref/, ground_truth.csv); a map with a bag of another traversal uses
the bag's poses (a reference within --distance metres is the same place, beyond 3 x --distance another).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from vpr_ros.core.evaluation.metrics import auroc
from vpr_ros.core.inputs.images import batch_to_tensor, read_image
from vpr_ros.core.matching.geometry import GeometricVerifier, inlier_coverage
from vpr_ros.core.matching.local_features import LocalExtractor
from vpr_ros.core.matching.matchers import MATCHERS, Matcher


def dataset_pairs(root: Path, every: int):
    from vpr_ros.core.build.map_builder import build_map
    from vpr_ros.core.build.sources import load_image_file
    from vpr_ros.core.evaluation.datasets import ImageFolderDataset
    from vpr_ros.core.map.frames import FrameTable

    ds = ImageFolderDataset.load(root)
    picked = list(range(0, len(ds.queries), every))
    refs = [read_image(p) for p in ds.refs]
    vpr_map = build_map(root.name, FrameTable.build(np.zeros(len(refs), np.int64), ds.refs), load_image_file,
                        "default", progress=False)
    queries = [read_image(ds.queries[i]) for i in picked]
    same = [ds.positives[i] for i in picked]
    far = [{j for j in range(len(refs)) if min((abs(j - k) for k in ds.positives[i]), default=0) > 10}
           for i in picked]
    return vpr_map, queries, refs, same, far


def bag_pairs(map_dir: Path, bag: Path, every: int, distance: float, pose_topic: str):
    from vpr_ros.core.build.sources import SourceLoader
    from vpr_ros.core.map.store import VPRMap
    from vpr_ros.tools.eval import replay_inputs

    vpr_map = VPRMap.load(map_dir, with_uncertainty=False)
    loader = SourceLoader()
    refs = [loader(s) for s in vpr_map.frames.sources]
    items, queries = replay_inputs(bag, "/camera/image_raw", pose_topic, None)
    xyz = vpr_map.frames.pose[:, :3]
    picked = list(range(0, len(items), every))
    images = [items[i][2]() for i in picked]
    d = [np.linalg.norm(xyz - queries.pose[i, :3], axis=1) for i in picked]
    return (vpr_map, images, refs, [set(np.flatnonzero(x <= distance)) for x in d],
            [set(np.flatnonzero(x > 3 * distance)) for x in d])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path)
    parser.add_argument("--map", type=Path)
    parser.add_argument("--bag", type=Path)
    parser.add_argument("--pose-topic", default="/ground_truth")
    parser.add_argument("--distance", type=float, default=5.0)
    parser.add_argument("--every", type=int, default=2, help="use every n-th query")
    parser.add_argument("--wrong", type=int, default=3, help="wrong references per query (hardest first)")
    parser.add_argument("--matchers", default="xfeat-mnn,xfeat-lighterglue")
    parser.add_argument("--budgets", default="512,2048")
    parser.add_argument("--save", type=Path, help="write every pair's measures here (.npz per matcher and budget)")
    args = parser.parse_args()
    vpr_map, queries, refs, same, far = (dataset_pairs(args.dataset, args.every) if args.dataset
                                         else bag_pairs(args.map, args.bag, args.every, args.distance, args.pose_topic))
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
    shipped = GeometricVerifier()
    gates = {"count, ratio, a contrario (before)": GeometricVerifier(min_keypoint_share=0.0, min_inlier_coverage=0.0),
             f"+ share >= {shipped.min_keypoint_share:g}": GeometricVerifier(min_inlier_coverage=0.0),
             f"+ coverage >= {shipped.min_inlier_coverage:g}": GeometricVerifier(min_keypoint_share=0.0),
             "+ both (shipped)": shipped}
    print("| matcher | keypoints | gate | right verified | wrong verified |")
    print("|---|---|---|---|---|")
    for budget in [int(b) for b in args.budgets.split(",")]:
        extractor = LocalExtractor("xfeat", budget)
        start = time.perf_counter()
        q_feat = extractor.extract(queries)
        r_feat = {k: extractor.extract([refs[k]])[0] for k in sorted({k for _, k, _ in pairs})}
        extract_s = time.perf_counter() - start
        for name in args.matchers.split(","):
            if MATCHERS[name].features != "xfeat":
                continue
            matcher = Matcher(name)
            rows = []
            for q, k, right in pairs:
                m = matcher.match(q_feat[q], [r_feat[k]])[0]
                p0, p1 = q_feat[q].keypoints[m.query_idx], r_feat[k].keypoints[m.map_idx]
                keypoints = (len(q_feat[q]), len(r_feat[k]))
                checks = [g.verify(p0, p1, q_feat[q].image_size, r_feat[k].image_size, keypoints=keypoints)
                          for g in gates.values()]
                v = checks[0]
                coverage = inlier_coverage(p0[v.inliers], p1[v.inliers], q_feat[q].image_size, r_feat[k].image_size)
                rows.append((right, [c.verified for c in checks], v.inlier_count, v.inlier_ratio, -v.log_nfa,
                             v.inlier_count / max(min(keypoints), 1), coverage, v.homography_share,
                             -v.log_nfa / max(min(keypoints), 1)))
            right = [r for r in rows if r[0]]
            wrong = [r for r in rows if not r[0]]
            if args.save is not None:
                args.save.mkdir(parents=True, exist_ok=True)
                np.savez(args.save / f"{name}.{budget}.npz", right=np.array([r[0] for r in rows]),
                         verified=np.array([r[1] for r in rows]),
                         measures=np.array([r[2:] for r in rows], np.float64))
            for g, gate in enumerate(gates):
                print(f"| {name} | {budget} | {gate} | {sum(r[1][g] for r in right)} / {len(right)} | "
                      f"{sum(r[1][g] for r in wrong)} / {len(wrong)} |")
            # each measure (higher = more like the right place): the threshold that keeps 95 % of the right pairs,
            # and how many of the wrong pairs the gate verified lie at or above it
            for column, label in ((2, "inliers"), (3, "ratio"), (4, "-log10 NFA"), (5, "share"), (6, "coverage"),
                                  (7, "homography share"), (8, "-log10 NFA per keypoint")):
                rv = np.array([r[column] for r in right], np.float64)
                wv = np.array([r[column] for r in wrong if r[1][0]], np.float64)  # wrong pairs the old gate passed
                rv, wv = np.nan_to_num(rv, posinf=0.0, neginf=0.0), np.nan_to_num(wv, posinf=0.0, neginf=0.0)
                if not len(rv) or not len(wv):
                    continue
                separation = auroc(np.concatenate([rv, wv]), np.r_[np.ones(len(rv), bool), np.zeros(len(wv), bool)])
                keep = float(np.percentile(rv, 5))
                print(f"  {name} at {budget}, {label}: right p5/p50 {np.round(np.percentile(rv, [5, 50]), 3).tolist()}, "
                      f"wrong verified p50/p90 {np.round(np.percentile(wv, [50, 90]), 3).tolist()}; AUROC {separation:.2f}; "
                      f">= {keep:.3g} keeps 95 % of right and {int((wv >= keep).sum())} / {len(wv)} wrong")
        print(f"  (extraction at {budget} keypoints: {extract_s:.0f} s)")


if __name__ == "__main__":
    main()
