"""Per-stage latency of one query frame for every descriptor backend and device present, search
against maps of 10k / 100k / 1M frames, and the whole Localizer end to end on a 100k-frame map.
Prints a table of medians (and writes it as JSON with --json).

Stages: preprocess (resize and tensor), descriptor (each backend, device, precision, with and without
CUDA graphs), search (the project's DescriptorIndex: faiss flat on the CPU, torch matmul top-k or
faiss-gpu on a GPU), descriptor + search together, local features, matcher (per pair on the CPU;
one batched call for all pairs on CUDA), verification (per pair, and all pairs in parallel threads),
and `Localizer.process` end to end with top-`--pairs` re-ranking. Every figure is the median of
`--repeats` runs after `--warmup` runs, with the device synchronised before each clock read.

Maps at 10k+ frames use the preset's PCA (256-d), fitted here on random vectors (as a real map's
would be on its own descriptors), so search time depends on the size and dimension, not on values.
The end-to-end map holds the first 40 Corridor reference frames (real descriptors and local
features) among random unit vectors up to 100k frames; its local feature table is a sparse file
on disk, so only the 40 real rows take space.

    .venv/bin/python benchmarks/stages.py [--sizes 10000,100000,1000000] [--repeats 30] [--json F]
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import faiss
import numpy as np
import torch

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.inputs.images import list_images, read_image
from vpr_ros.core.inputs.images import batch_to_tensor, batch_to_uint8
from vpr_ros.core.pipeline.localizer import Localizer
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.map.index import DescriptorIndex
from vpr_ros.core.map.store import VPRMap
from vpr_ros.core.matching.geometry import GeometricVerifier
from vpr_ros.core.matching.local_features import LocalExtractor, LocalFeatureTable
from vpr_ros.core.matching.matchers import Matcher
from vpr_ros.core.matching.reranker import Reranker
from vpr_ros.core.runtime.backends import make_backend

from common import CORRIDOR, clock, machine as common_machine



def timed(fn, warmup: int, repeats: int, device: str = "cpu", gap_s: float = 0.0) -> float:
    """Median milliseconds of fn() (common.clock)."""
    return statistics.median(clock(fn, device, warmup, repeats, gap_s))


def unit_rows(rng, n: int, dim: int) -> np.ndarray:
    data = rng.standard_normal((n, dim), dtype=np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def fitted_descriptor(refs: list[np.ndarray]) -> GlobalDescriptor:
    """The default preset with its vocabulary from `refs` and a 256-d PCA, as maps of >= 1000 frames get."""
    descriptor = GlobalDescriptor("default")
    descriptor.fit_vocabulary([batch_to_tensor(refs, descriptor.input_size)])
    descriptor.fit_projection(unit_rows(np.random.default_rng(0), 1200, descriptor.dim))
    return descriptor


def descriptor_variants(device: str) -> list[dict]:
    if device == "cpu":
        return [{"name": "torch"}, {"name": "onnxruntime"}]
    return [{"name": "torch", "precision": "fp32", "cuda_graphs": False},
            {"name": "torch", "precision": "fp32", "cuda_graphs": True},
            {"name": "torch", "precision": "fp16", "cuda_graphs": False},
            {"name": "torch", "precision": "fp16", "cuda_graphs": True},
            {"name": "onnxruntime"}, {"name": "tensorrt"}]


def large_map(descriptor: GlobalDescriptor, refs: list[np.ndarray], extractor: LocalExtractor, size: int,
              folder: Path) -> VPRMap:
    """`size` frames: the real refs first (descriptors, local features), then random unit vectors."""
    real = descriptor.describe(batch_to_tensor(refs, descriptor.input_size))
    descriptors = np.concatenate([real, unit_rows(np.random.default_rng(2), size - len(refs), descriptor.dim)])
    conf = extractor.config()
    m, d = conf["max_keypoints"], conf["dim"]
    columns = {"keypoints": ((size, m, 2), np.float32), "descriptors": ((size, m, d), np.float16),
               "scores": ((size, m), np.float16), "counts": ((size,), np.int32), "image_size": ((size, 2), np.int32)}
    arrays = {name: np.lib.format.open_memmap(folder / f"{name}.npy", "w+", dtype, shape)
              for name, (shape, dtype) in columns.items()}  # sparse files: untouched rows take no disk
    table = LocalFeatureTable(**arrays)
    real_table = LocalFeatureTable.build(extractor.extract(refs), m, d)
    for name in LocalFeatureTable.COLUMNS:
        getattr(table, name)[:len(refs)] = getattr(real_table, name)
    frames = FrameTable.build(np.arange(size), [f"frame{i}" for i in range(size)])
    return VPRMap.create(f"bench-{size}", descriptor, descriptors, frames, local=table, local_conf=conf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=CORRIDOR, help="the Corridor images (ref/, query/)")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=256, help="descriptor dimension of the large maps (PCA)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=10, help="re-ranked candidates per frame")
    parser.add_argument("--e2e-size", type=int, default=100000, help="map frames of the end-to-end run (0: skip)")
    parser.add_argument("--matchers", default="xfeat-lighterglue,xfeat-mnn")
    parser.add_argument("--devices", default="", help="comma-separated (default: cpu, and cuda when present)")
    parser.add_argument("--json", type=Path, help="write the rows and the machine here")
    parser.add_argument("--profile", action="store_true", help="print a torch profile of the end-to-end frames")
    args = parser.parse_args()
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    machine = f"{common_machine()}, faiss {faiss.__version__}"
    print(f"machine: {machine}", flush=True)
    refs = [read_image(p) for p in list_images(args.data / "ref")[:40]]
    query = read_image(list_images(args.data / "query")[10])
    rows: list[tuple[str, str, float]] = []

    def row(stage: str, device: str, ms: float) -> None:
        rows.append((stage, device, ms))
        print(f"  {stage:60} {device:5} {ms:9.3f} ms", flush=True)

    descriptor = fitted_descriptor(refs[:30])
    size = descriptor.input_size
    row("preprocess (640x480 -> tensor)", "cpu", timed(lambda: batch_to_tensor([query], size), args.warmup, args.repeats))
    tensor = batch_to_tensor([query], size)
    backends = {}
    for device in devices:
        for variant in descriptor_variants(device):
            options = {k: v for k, v in variant.items() if k != "name"}
            try:
                backend = make_backend(variant["name"], descriptor, device, **options)
            except (ValueError, ImportError) as exc:
                print(f"  {variant['name']}/{device}: skipped ({exc})", flush=True)
                continue
            backends[backend.label] = backend
            row(f"descriptor {backend.label}", device, timed(lambda: backend.describe(tensor), args.warmup,
                                                             args.repeats, device))
    rng = np.random.default_rng(1)
    query_vector = unit_rows(rng, 1, args.dim)
    for n in (int(s) for s in args.sizes.split(",")):
        data = unit_rows(rng, n, args.dim)
        for device in devices:
            index = DescriptorIndex(args.dim, device=device)
            index.add(data)
            row(f"search {n // 1000}k x {args.dim}-d top-10 ({index.label})", device,
                timed(lambda: index.search(query_vector, 10), args.warmup, args.repeats, device))
            if n == 100000 and device != "cpu":
                best = min((b for label, b in backends.items() if f"/{device}" in label),
                           key=lambda b: timed(lambda: b.describe(tensor), 2, 10, device), default=None)
                if best is not None:
                    row(f"descriptor + search 100k ({best.label})", device,
                        timed(lambda: index.search(best.describe(tensor), 10), args.warmup, args.repeats, device))
                    row(f"preprocess + descriptor + search 100k ({best.label})", device,
                        timed(lambda: index.search(best.describe(batch_to_uint8([query], size)), 10),
                              args.warmup, args.repeats, device))
                    row(f"preprocess + descriptor + search 100k, frames at 10 Hz ({best.label})", device,
                        timed(lambda: index.search(best.describe(batch_to_uint8([query], size)), 10),
                              args.warmup, args.repeats, device, gap_s=0.1))
            del index
        del data
    verifier = GeometricVerifier()
    for device in devices:
        extractor = LocalExtractor("xfeat", 512, device=device)
        row("local features (xfeat, 512)", device, timed(lambda: extractor.extract([query]), 3, 15, device))
        q_feat = extractor.extract([query])[0]
        cands = extractor.extract(refs[:args.pairs])
        for name in args.matchers.split(","):
            matcher = Matcher(name, device=device)
            ms = timed(lambda: matcher.match(q_feat, cands), 2, 10, device)
            row(f"matcher {name}, {len(cands)} pairs in one call ({matcher.precision})", device, ms)
            row(f"matcher {name} per pair", device, ms / len(cands))
        matches = Matcher(args.matchers.split(",")[0], device=device).match(q_feat, cands)
        if device == "cpu":
            m = matches[0]
            row(f"verification per pair ({len(m)} matches)", "cpu",
                timed(lambda: verifier.verify(q_feat.keypoints[m.query_idx], cands[0].keypoints[m.map_idx],
                                              q_feat.image_size, cands[0].image_size), 2, 20))
            reranker = Reranker(Matcher("xfeat-mnn"), verifier)
            pairs = list(zip(cands, matches))
            row(f"verification, {len(pairs)} pairs in {reranker.verify_workers} threads", "cpu",
                timed(lambda: reranker.verify_pairs(q_feat, pairs), 2, 10))
    if args.e2e_size:
        with tempfile.TemporaryDirectory(prefix="vpr_bench_") as folder:
            vpr_map = large_map(descriptor, refs, LocalExtractor("xfeat", 512), args.e2e_size, Path(folder))
            for device, workers in [(d, w) for d in devices for w in ((0, 1) if d != "cpu" else (0,))]:
                config = LocalizerConfig(top_k=args.pairs, rerank="xfeat-lighterglue", device=device)
                localizer = Localizer(config, vpr_map)
                if workers:  # verification on the calling thread, for comparison with the thread pool
                    localizer.reranker.verify_workers = workers
                stages: dict[str, list[float]] = {}

                def process():
                    result = localizer.process(query, 0)
                    for stage, ms in result.timings_ms.items():
                        stages.setdefault(stage, []).append(ms)

                total = timed(process, args.warmup, args.repeats, device)

                label = (f"{localizer.backend_label}; {vpr_map.index.label}; "
                         f"{localizer.reranker.verify_workers} verify threads")
                for stage, samples in stages.items():
                    row(f"  e2e stage {stage}", device, statistics.median(samples[args.warmup:]))
                if args.profile and device != "cpu" and not workers:
                    from torch.profiler import ProfilerActivity, profile

                    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device != "cpu" else [])
                    with profile(activities=activities) as prof:
                        for _ in range(5):
                            process()
                    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=30), flush=True)
                row(f"end to end, {args.e2e_size // 1000}k map, top-{args.pairs} LighterGlue ({label})", device, total)
                if not workers:
                    row(f"end to end, frames at 10 Hz ({localizer.backend_label})", device,
                        timed(process, 2, 10, device, gap_s=0.1))
                vpr_map.index.to_device("cpu")
    print(f"\n{'stage':82} {'device':6} {'median ms':>10}")
    for stage, device, ms in rows:
        print(f"{stage:82} {device:6} {ms:10.3f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
