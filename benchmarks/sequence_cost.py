"""Per-frame cost of sequence matching (core/retrieval/sequence.py) on a large ordered map, beside the
single-image search it adds to, in the same run.

The map is a synthetic route of --frames descriptors (--dim, 256 as the default preset's PCA gives
maps of 1000 frames or more) whose neighbours are alike; queries are noisy views of frames along it at a
varying speed. Per window length L the script times, per frame: the similarity row against every map
frame (what the Localizer computes), the window update, and the top-k by sequence score with the place
fitted to the best alignment; and, for scale, faiss's exact top-10 search of the same query. Medians
over --queries frames after a warm-up.

    .venv/bin/python benchmarks/sequence_cost.py [--frames 10000] [--lengths 10,20,30] [--json F]
"""

import argparse
import json
import statistics
import time

import numpy as np

from vpr_ros.core.retrieval.sequence import SequenceMatcher  # vpr_ros first: it sets the thread counts
from vpr_ros.core.runtime.threads import cpu_threads

import faiss


def route(frames: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(frames, dim)).astype(np.float32), axis=0) * 0.3
    walk += rng.normal(size=(frames, dim)).astype(np.float32) * 3
    return walk / np.linalg.norm(walk, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--lengths", default="10,20,30")
    parser.add_argument("--max-step", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json")
    args = parser.parse_args()
    m = route(args.frames, args.dim)
    index = faiss.IndexFlatIP(args.dim)
    index.add(m)
    rng = np.random.default_rng(1)
    truth = np.minimum(1000 + np.cumsum(rng.integers(0, 3, args.queries + 40)), args.frames - 1)
    queries = m[truth] + rng.normal(size=(len(truth), args.dim)).astype(np.float32) * 0.09
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    out = {"frames": args.frames, "dim": args.dim, "max_step": args.max_step, "cpu_threads": cpu_threads(),
           "lengths": {}}
    search = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q[None], 10)
        search.append((time.perf_counter() - t0) * 1e3)
    out["faiss_flat_top10_ms"] = round(statistics.median(search[40:]), 3)
    for length in (int(v) for v in args.lengths.split(",")):
        matcher = SequenceMatcher(length, args.max_step)
        matcher.set_map(np.zeros(args.frames, np.int64))
        row_ms, update_ms, rank_ms, right = [], [], [], 0
        for t, q in enumerate(queries):
            t0 = time.perf_counter()
            row = m @ q
            t1 = time.perf_counter()
            score = matcher.update(row, t * 250_000_000)
            t2 = time.perf_counter()
            top = np.argpartition(-score, 9)[:10]
            top = top[np.argsort(-score[top])]
            if matcher.full:  # the place at the end of the best alignment's line, as the Localizer ranks
                place = matcher.place(int(top[0]))
                top = np.concatenate([[place], top[top != place]])[:10]
            t3 = time.perf_counter()
            if t >= 40:
                row_ms.append((t1 - t0) * 1e3)
                update_ms.append((t2 - t1) * 1e3)
                rank_ms.append((t3 - t2) * 1e3)
                right += abs(int(top[0]) - int(truth[t])) <= 2
        row, update, rank = (round(statistics.median(v), 3) for v in (row_ms, update_ms, rank_ms))
        out["lengths"][length] = {"similarity_row_ms": row, "update_ms": update, "top_k_ms": rank,
                                  "total_ms": round(row + update + rank, 3),
                                  "top1_within_2": round(right / len(row_ms), 3)}
        print(f"L={length:3d}: similarity row {row:.2f} ms + window update {update:.2f} ms + top-10 and place {rank:.2f} ms "
              f"= {row + update + rank:.2f} ms per frame (faiss flat top-10 of the same query: "
              f"{out['faiss_flat_top10_ms']:.2f} ms); top-1 within 2 keys {right / len(row_ms):.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
