"""Benchmark of global retrieval: prints figures; not a test.

1. Corridor Recall@1/5 per descriptor preset (../shared/data/corridor; skipped when absent).
2. Descriptor and search latency p50/p95 for one 640x480 frame, per preset (warm-up, then repeats).
3. Bytes per map frame: descriptor file and index, per index type.
4. Search latency on a synthetic map of --frames frames (default 1M): Flat versus IVF-PQ.

    .venv/bin/python benchmarks/retrieval.py [--frames 1000000] [--dim 256] [--repeats 50]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.descriptors.models import PUBLISHED_PRESETS
from vpr_ros.core.descriptors.presets import PRESETS
from vpr_ros.core.evaluation.metrics import latency_summary
from vpr_ros.core.inputs.images import batch_to_tensor
from vpr_ros.core.map.index import DescriptorIndex

from common import CORRIDOR, clock, corridor_available

OWN_PRESETS = [p for p in PRESETS if p not in PUBLISHED_PRESETS]  # published ones: benchmarks/published_models.py


def timed(fn, repeats: int, warmup: int = 3) -> dict:
    """latency_summary of fn()'s milliseconds (common.clock; describe() returns host arrays, so it syncs)."""
    return latency_summary(clock(fn, warmup=warmup, repeats=repeats))


def corridor_recall() -> None:
    from vpr_ros.core.config import LocalizerConfig
    from vpr_ros.core.evaluation.dataset_eval import evaluate_dataset

    if not corridor_available():
        return
    print("corridor (global retrieval only)")
    for preset in OWN_PRESETS:
        report = evaluate_dataset(CORRIDOR, preset, LocalizerConfig(rerank="off", device="cpu"), progress=False)
        r = report["recall"]
        print(f"  {preset:12} {report['descriptor_dim']:5d}-d  R@1 {r['1']:.3f}  R@5 {r['5']:.3f}  R@10 {r['10']:.3f}")


def frame_latency(repeats: int) -> None:
    print("one 640x480 frame (batch 1): p50 / p95 ms")
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    for preset in OWN_PRESETS:
        descriptor = GlobalDescriptor(preset)
        if descriptor.needs_vocabulary:
            # the vocabulary needs 39 local features per cluster (global_descriptor.fit_vocabulary): 8 frames of noise
            samples = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
            descriptor.fit_vocabulary([batch_to_tensor(samples, descriptor.input_size)])
        tensor = batch_to_tensor([frame], descriptor.input_size)
        pre = timed(lambda: batch_to_tensor([frame], descriptor.input_size), repeats)
        desc = timed(lambda: descriptor.describe(tensor), repeats)
        index = DescriptorIndex(descriptor.dim)
        index.add(rng.standard_normal((10_000, descriptor.dim)).astype(np.float32))
        query = descriptor.describe(tensor)
        search = timed(lambda: index.search(query, 10), repeats)
        map_bytes = 2 * 4 * descriptor.dim  # descriptors.npy + Flat index, float32
        print(f"  {preset:12} {map_bytes:6d} B/map frame (Flat)  preprocess {pre['p50']:6.1f} / {pre['p95']:6.1f}   descriptor {desc['p50']:6.1f} / "
              f"{desc['p95']:6.1f}   search (10k frames) {search['p50']:6.2f} / {search['p95']:6.2f}")


def large_map(frames: int, dim: int, repeats: int) -> None:
    print(f"synthetic map: {frames} frames, {dim}-d (clustered unit vectors)")
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4096, dim)).astype(np.float32)
    data = np.empty((frames, dim), np.float32)
    for start in range(0, frames, 100_000):
        stop = min(frames, start + 100_000)
        data[start:stop] = centers[rng.integers(0, len(centers), stop - start)]
        data[start:stop] += 0.5 * rng.standard_normal((stop - start, dim)).astype(np.float32)
    faiss.normalize_L2(data)
    queries = data[rng.integers(0, frames, 100)] + 0.05 * rng.standard_normal((100, dim)).astype(np.float32)
    faiss.normalize_L2(queries)
    nlist = int(4 * np.sqrt(frames))
    pq_m = 64  # 64 sub-quantizers x 8 bits = 64 bytes of codes per frame
    configs = [("Flat", {}), (f"IVF{nlist},PQ{pq_m}", {"nprobe": 16}), (f"IVF{nlist},PQ{pq_m}", {"nprobe": 64})]
    exact = None
    for factory, params in configs:
        index = DescriptorIndex(dim, factory, params)
        start = time.perf_counter()
        index.train(data[rng.choice(frames, size=min(frames, 100 * nlist), replace=False)])
        index.add(data)
        build_s = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            index.write(Path(tmp) / "i.faiss")
            size = (Path(tmp) / "i.faiss").stat().st_size
        order = iter(np.tile(np.arange(len(queries)), repeats + 10))
        lat = timed(lambda: index.search(queries[[next(order)]], 10), repeats)
        _, ids = index.search(queries, 10)
        if exact is None:
            exact = ids
        recall = np.mean([exact[q, 0] in ids[q] for q in range(len(queries))])
        print(f"  {factory:18} {str(params):16} build {build_s:6.1f} s  {size / frames:7.1f} B/frame  "
              f"search p50 {lat['p50']:7.2f} ms  p95 {lat['p95']:7.2f} ms  1-recall@10 vs Flat {recall:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--skip-corridor", action="store_true")
    args = parser.parse_args(argv)
    print(f"torch threads {torch.get_num_threads()}, faiss {faiss.__version__}, cuda {torch.cuda.is_available()}")
    if not args.skip_corridor:
        corridor_recall()
    frame_latency(args.repeats)
    large_map(args.frames, args.dim, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
