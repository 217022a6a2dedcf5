"""Benchmark of re-ranking: prints figures; not a test.

1. Corridor Recall@1/5 after re-ranking the top K in {1, 5, 10, 20} global candidates (default
   preset), per matcher. Each query's top 20 are matched and verified once; a smaller K re-orders
   its first K candidates with the same outcomes (Reranker.order), exactly what re-ranking K does.
2. "Match only when needed": for the default matcher and K, the skip margins in --margins: Recall@1,
   pairs matched per query and re-ranking ms per query, against always matching.
3. Matcher ms per pair (matching + verification) at 512 / 1024 / 2048 keypoints on real Corridor
   pairs (upscaled to 640x480), with the keypoints actually found.

    .venv/bin/python benchmarks/rerank.py [--matchers xfeat-lighterglue,...] [--k 5] [--margins 0.02,0.05]
"""

import argparse
import time

import numpy as np
import torch

from vpr_ros.core.evaluation.datasets import ImageFolderDataset
from vpr_ros.core.evaluation.metrics import latency_summary, recall_at_n
from vpr_ros.core.inputs.images import read_image
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.build.map_builder import build_map
from vpr_ros.core.build.sources import load_image_file
from vpr_ros.core.matching.geometry import GeometricVerifier
from vpr_ros.core.matching.local_features import LocalExtractor
from vpr_ros.core.matching.matchers import MATCHERS, Matcher
from vpr_ros.core.matching.reranker import Reranker
from vpr_ros.core.retrieval.recognizer import search

from common import CORRIDOR, corridor_available

KS = (1, 5, 10, 20)


def corridor_rerank(data, matchers, keypoints: int, k: int, margins: list[float], device: str) -> None:
    refs = FrameTable.build(np.zeros(len(data.refs), np.int64), data.refs)
    queries = [read_image(p) for p in data.queries]
    for name in matchers:
        reranker = Reranker(name, device=device)
        vpr_map = build_map("corridor", refs, load_image_file, local_features=reranker.matcher.features,
                            max_keypoints=keypoints)
        extractor = reranker.extractor_for(vpr_map.local_conf)
        results, per_pair, answers = [], [], []
        for image in queries:
            answer = search(vpr_map, [image], k=max(KS))
            features = extractor.extract([image])[0]
            result = reranker.rerank(features, answer.ids[0], answer.similarities[0], vpr_map.local)
            results.append(result)
            answers.append((features, answer))
            per_pair.append((result.timings_ms["match"] + result.timings_ms["verify"]) / result.pairs_matched)
        global_ids = np.stack([a.ids[0] for _, a in answers])
        base = recall_at_n(global_ids, data.positives, (1, 5))
        line = [f"{name:18} global R@1 {base[1]:.3f}"]
        for kk in KS:
            ranked = []
            for result, (_, answer) in zip(results, answers):
                head = Reranker.order([c for c in result.candidates if c.global_rank < kk])
                ranked.append(np.concatenate([[c.key for c in head], answer.ids[0, kk:]]))
            r = recall_at_n(np.stack(ranked), data.positives, (1, 5))
            line.append(f"K={kk}: R@1 {r[1]:.3f} R@5 {r[5]:.3f}")
        lat = latency_summary(per_pair)
        verified = np.mean([result.candidates[0].verified for result in results])
        print("  ".join(line) + f"   {lat['p50']:.0f} ms/pair p50, first candidate verified {verified:.2f}")
        if name == matchers[0] and margins:
            skip_study(reranker, vpr_map, answers, data, k, margins)


def skip_study(reranker, vpr_map, answers, data, k: int, margins: list[float]) -> None:
    for margin in [None, *margins]:
        reranker.skip_margin = margin
        ranked, pairs, ms = [], [], []
        for features, answer in answers:
            result = reranker.rerank(features, answer.ids[0, :k], answer.similarities[0, :k], vpr_map.local)
            ranked.append(np.concatenate([result.ids, answer.ids[0, k:]]))
            pairs.append(result.pairs_matched)
            ms.append(result.timings_ms["match"] + result.timings_ms["verify"])
        r = recall_at_n(np.stack(ranked), data.positives, (1, 5))
        print(f"    skip_margin {str(margin):5} K={k}: R@1 {r[1]:.3f}  pairs/query {np.mean(pairs):.2f}  "
              f"match+verify {np.mean(ms):.0f} ms/query mean, p50 {np.median(ms):.0f}")
    reranker.skip_margin = None


def pair_latency(data, matchers, budgets, repeats: int, device: str) -> None:
    pairs = [(read_image(data.queries[q]), read_image(data.refs[q])) for q in (5, 30, 60, 90)]
    verifier = GeometricVerifier()
    for name in matchers:
        matcher = Matcher(name, device=device)
        for budget in budgets:
            extractor = LocalExtractor(matcher.features, budget, device=device)
            feats = [extractor.extract([a, b]) for a, b in pairs]
            samples = []
            for _ in range(repeats):
                for fa, fb in feats:
                    start = time.perf_counter()
                    m = matcher.match(fa, [fb])[0]
                    if device == "cuda":
                        torch.cuda.synchronize()
                    verifier.verify(fa.keypoints[m.query_idx], fb.keypoints[m.map_idx], fa.image_size, fb.image_size)
                    samples.append((time.perf_counter() - start) * 1e3)
            lat = latency_summary(samples[len(feats):])  # first round is warm-up
            found = np.mean([len(f) for pair in feats for f in pair])
            print(f"  {name:18} {budget:5d} kpts (found {found:6.0f}): p50 {lat['p50']:7.1f} ms  "
                  f"p95 {lat['p95']:7.1f} ms per pair")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matchers", default=",".join(MATCHERS))
    parser.add_argument("--keypoints", type=int, default=512, help="map and query keypoints for the recall study")
    parser.add_argument("--k", type=int, default=5, help="K of the skip-margin study")
    parser.add_argument("--margins", default="0.02,0.05,0.1")
    parser.add_argument("--budgets", default="512,1024,2048")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-recall", action="store_true")
    parser.add_argument("--device", help="cpu or cuda for the local features and matchers (default: cuda when present)")
    args = parser.parse_args()
    if not corridor_available():
        return 0
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    data = ImageFolderDataset.load(CORRIDOR)
    matchers = args.matchers.split(",")
    if not args.skip_recall:
        print(f"corridor re-ranking ({args.keypoints} keypoints, default preset)")
        corridor_rerank(data, matchers, args.keypoints, args.k, [float(m) for m in args.margins.split(",") if m],
                        device)
    print("matching + verification per pair")
    pair_latency(data, matchers, [int(b) for b in args.budgets.split(",")], args.repeats, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
