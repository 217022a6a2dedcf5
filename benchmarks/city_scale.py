"""A city-scale map: a real map's frames among synthetic ones, up to a million, indexed with an ivfpq preset.

The real map's even frames join the city; its odd frames (real descriptors, the same lap) are the queries
"in the same conditions", and --queries frames of --query-bag (another lap, another time of day) the queries
"in other conditions".

    .venv/bin/python benchmarks/city_scale.py --real-map maps/lap1 --query-bag runs/street/lap_2 \
        --image-topic /camera/image_raw/compressed --frames 1000000 --index ivfpq-1m --out /tmp/city

Writes OUT/map (the vpr_ros map: loadable by the node and vpr_eval as any other) and prints, as JSON:
- build: seconds to train the index (on a sample), add the shards, merge them on disk, and save the map;
- bytes per frame in the index (index.faiss + index.ivfdata) and in the whole map;
- load: seconds for VPRMap.load in a fresh process (3 runs; page cache warm after the build);
- queries of two kinds, one at a time on FAISS_THREADS threads: the real query lap's descriptors and
  perturbed synthetic ones: search p50/p90 ms, and 1-recall@10 against an exact search over all frames
  (the exact nearest frame is in the index's top 10), also without the preset's exact refine; for the real
  queries also Recall@1 within --distance of the query's true position, against this map and the real map;
- the same queries on an exact (Flat) index of the same frames, for the speed ratio.

The synthetic frames are routes of 500 frames with the real descriptors' statistics (route_descriptors).
Real frames keep their poses; synthetic ones have none. A real query from another time of day often has
no close map frame at all: its exact nearest frame is then a near-tie among distractors, which no compressed
index resolves, so the real queries' recall is also given for those whose exact top-1 is the right place.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.inputs.images import batch_to_tensor
from vpr_ros.core.build.bag_source import read_bag_frames
from vpr_ros.core.map.frames import FrameTable, Session
from vpr_ros.core.map.index import DescriptorIndex
from vpr_ros.core.map.store import VPRMap


def route_descriptors(count: int, dim: int, seed: int, route: int = 500, rho: float = 0.68) -> np.ndarray:
    """Routes of `route` frames, each an AR(1) walk x[t+1] = rho x[t] + sqrt(1 - rho^2) e: isotropic
    noise, so that unrelated frames have cosine 0 +- 1/sqrt(dim) and frame t and t+k about rho^k, as the
    real map's PCA-whitened descriptors do (measured on the simulator's lap: 0.68 at one frame, 0.15 at five,
    0.00 +- 0.062 unrelated)."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, route):
        m = min(route, count - start)
        noise = rng.standard_normal((m, dim)).astype(np.float32)
        for t in range(1, m):
            noise[t] = rho * noise[t - 1] + np.sqrt(1 - rho ** 2) * noise[t]
        out[start:start + m] = noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def latencies(index: DescriptorIndex, queries: np.ndarray, k: int = 10) -> tuple[list[float], np.ndarray]:
    ms, ids = [], []
    for q in queries:
        t = time.perf_counter()
        ids.append(index.search(q[None], k)[1][0])
        ms.append((time.perf_counter() - t) * 1e3)
    return ms, np.asarray(ids)


def summary(ms: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p90_ms": round(float(np.percentile(ms, 90)), 3)}


def exact_top1(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    best, top = np.full(len(queries), -np.inf, np.float32), np.zeros(len(queries), np.int64)
    for start in range(0, len(vectors), 200_000):
        sims = queries @ np.asarray(vectors[start:start + 200_000]).T
        arg = sims.argmax(axis=1)
        better = sims[np.arange(len(queries)), arg] > best
        best[better], top[better] = sims[np.arange(len(queries)), arg][better], arg[better] + start
    return top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-map", type=Path, required=True)
    parser.add_argument("--query-bag", type=Path, required=True)
    parser.add_argument("--image-topic", required=True)
    parser.add_argument("--pose-topic", default="/ground_truth")
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--index", default="ivfpq-1m")
    parser.add_argument("--queries", type=int, default=300, help="real queries (evenly spread over the lap)")
    parser.add_argument("--distance", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sweep-nprobe", default="", help="also: 1-recall@10 and p50 at these nprobe (e.g. 128,256)")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    report = {"machine": f"{os.cpu_count()} CPUs", "frames": args.frames, "index": args.index}

    full = VPRMap.load(args.real_map)
    # the real map's even frames go into the city; its odd frames are real queries in the same conditions
    real = VPRMap.create(full.name, full.descriptor, full.descriptors[0::2], full.frames.select(np.arange(0, len(full), 2)),
                         full.frame_id)
    revisits, revisit_poses = full.descriptors[1::2], full.frames.pose[1::2, :3]
    descriptor = GlobalDescriptor(real.descriptor.preset, **{**real.descriptor.conf, "index": args.index})
    descriptor.load_fitted(real.descriptor.state_dict())
    synthetic = args.frames - len(real)
    t0 = time.perf_counter()
    vectors = np.concatenate([real.descriptors, route_descriptors(synthetic, real.descriptor.dim, seed=0)])
    frames = real.frames.select(np.arange(len(real)))
    frames.name_session(Session("real"))
    fake = FrameTable.build(np.zeros(synthetic, np.int64), [f"synthetic:{i}" for i in range(synthetic)],
                            session=Session("synthetic"))
    frames.extend(fake)
    report["generate_s"] = round(time.perf_counter() - t0, 1)

    work = args.out / "work"
    t0 = time.perf_counter()
    city = VPRMap.create("city", descriptor, vectors, frames, real.frame_id, work_dir=work)
    report["index_build_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    path = city.save(args.out / "map", overwrite=True)
    report["save_s"] = round(time.perf_counter() - t0, 1)
    index_bytes = sum((path / name).stat().st_size for name in ("index.faiss", "index.ivfdata"))
    map_bytes = sum(p.stat().st_size for p in path.iterdir())
    report["index_bytes_per_frame"] = round(index_bytes / args.frames, 1)
    report["map_bytes_per_frame"] = round(map_bytes / args.frames, 1)
    report["search_params"] = city.index.search_params
    del city

    code = ("import time; t=time.perf_counter(); from vpr_ros.core.map.store import VPRMap; i=time.perf_counter(); "
            f"m=VPRMap.load({str(path)!r}); e=time.perf_counter(); print(e-i, i-t, len(m))")
    loads = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()[-1].split()
             for _ in range(3)]
    report["load_s"] = [round(float(run[0]), 3) for run in loads]
    report["import_s"] = round(float(loads[-1][1]), 3)

    loaded = VPRMap.load(path)
    bag = read_bag_frames(args.query_bag, args.image_topic, args.pose_topic)
    load = bag.loader()
    rows = np.unique(np.linspace(0, len(bag.frames) - 1, args.queries).round().astype(int))
    real_queries = np.concatenate([real.descriptor.describe(batch_to_tensor([load(bag.frames.sources[i])
                                                                            for i in rows[s:s + 8]],
                                                                           real.descriptor.input_size))
                                   for s in range(0, len(rows), 8)])
    rng = np.random.default_rng(1)
    picked = rng.choice(np.arange(len(real), args.frames), 500, replace=False)
    noisy = vectors[picked] + rng.standard_normal((500, vectors.shape[1])).astype(np.float32) * (0.8 / 16)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    flat = DescriptorIndex(vectors.shape[1], "Flat")
    flat.add(vectors)
    unrefined = DescriptorIndex.read(path / "index.faiss", loaded.index.dim, loaded.index.factory,
                                     {k: v for k, v in loaded.index.search_params.items() if k != "refine"})
    for name, queries, truth in (("real_same_conditions", revisits, revisit_poses),
                                 ("real_other_conditions", real_queries, bag.frames.pose[rows, :3]),
                                 ("synthetic", noisy, None)):
        ms, ids = latencies(loaded.index, queries)
        _, raw_ids = latencies(unrefined, queries)
        flat_ms, flat_ids = latencies(flat, queries[:100])
        exact = exact_top1(loaded.descriptors, queries)
        entry = {"queries": len(queries), **summary(ms),
                 "one_recall_at_10": round(float(np.mean([e in r for e, r in zip(exact, ids)])), 4),
                 "one_recall_at_10_without_refine": round(float(np.mean([e in r for e, r in zip(exact, raw_ids)])), 4),
                 "flat": summary(flat_ms)}
        entry["speedup_vs_flat"] = round(entry["flat"]["p50_ms"] / entry["p50_ms"], 1)
        if truth is not None:
            def recall_at_1(top: np.ndarray, poses: np.ndarray, has: np.ndarray) -> float:
                ok = [has[t] and np.linalg.norm(poses[t, :3] - q) <= args.distance for t, q in zip(top, truth)]
                return round(float(np.mean(ok)), 4)

            entry["recall_at_1_city"] = recall_at_1(ids[:, 0], loaded.frames.pose, loaded.frames.has_pose)
            entry["recall_at_1_real_map_alone"] = recall_at_1(real.index.search(queries, 1)[1][:, 0], real.frames.pose,
                                                              real.frames.has_pose)
            entry["top1_synthetic"] = int(np.sum(ids[:, 0] >= len(real)))
            right = np.array([loaded.frames.has_pose[e] and np.linalg.norm(loaded.frames.pose[e, :3] - q) <= args.distance
                              for e, q in zip(exact, truth)])
            entry["exact_top1_right"] = int(right.sum())
            entry["one_recall_at_10_where_exact_is_right"] = round(float(np.mean(
                [e in r for e, r, ok in zip(exact, ids, right) if ok])), 4) if right.any() else None
        report[name] = entry
        print(name, entry, flush=True)
    sweep = {}
    for nprobe in [int(v) for v in args.sweep_nprobe.split(",") if v]:
        loaded.index.search_params = {**loaded.index.search_params, "nprobe": nprobe}
        for name, queries in (("real_same_conditions", revisits), ("synthetic", noisy)):
            ms, ids = latencies(loaded.index, queries)
            exact = exact_top1(loaded.descriptors, queries)
            sweep.setdefault(nprobe, {})[name] = {
                **summary(ms), "one_recall_at_10": round(float(np.mean([e in r for e, r in zip(exact, ids)])), 4)}
        print("nprobe", nprobe, sweep[nprobe], flush=True)
    if sweep:
        report["nprobe_sweep"] = sweep
    print(json.dumps(report, indent=1))
    (args.out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
