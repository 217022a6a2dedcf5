"""Per-stage latency of one query frame for every descriptor backend and device present, and search
against maps of 10k / 100k / 1M frames. Prints a table of medians.

Stages: preprocess (decode-free resize and tensor), descriptor (per backend and device), search
(faiss flat inner product; torch matmul top-k on a GPU), local features, matcher per pair (each
matcher), verification per pair, and the total of a frame with top-`--pairs` re-ranking. Every figure
is the median of `--repeats` runs after `--warmup` runs, with the device synchronised before each
clock read. Maps at 10k+ frames use the preset's PCA (256-d), so their descriptors here are random
unit vectors of that size: search time depends on the size and dimension, not on the values.

    .venv/bin/python benchmarks/stages.py [--sizes 10000,100000,1000000] [--repeats 30]
"""

import argparse
import platform
import statistics
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from vpr_ros.core.backends import make_backend
from vpr_ros.core.datasets import list_images, read_image
from vpr_ros.core.descriptors import GlobalDescriptor
from vpr_ros.core.geometry import GeometricVerifier
from vpr_ros.core.images import batch_to_tensor
from vpr_ros.core.local_features import LocalExtractor
from vpr_ros.core.matchers import Matcher

CORRIDOR = Path(__file__).resolve().parents[2] / "shared" / "data" / "corridor"


def timed(fn, warmup: int, repeats: int, sync=lambda: None) -> float:
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=256, help="descriptor dimension of the large maps (PCA)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=5, help="re-ranked candidates per frame in the total")
    parser.add_argument("--matchers", default="xfeat-lighterglue,xfeat-mnn")
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, CUDA "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}, faiss {faiss.__version__}")
    refs = [read_image(p) for p in list_images(CORRIDOR / "ref")[:30]]
    query = read_image(list_images(CORRIDOR / "query")[10])
    rows = []
    descriptor = GlobalDescriptor("default")
    descriptor.fit_vocabulary([batch_to_tensor(refs, descriptor.input_size)])
    raw = np.random.default_rng(0).standard_normal((1200, descriptor.dim)).astype(np.float32)
    descriptor.fit_projection(raw / np.linalg.norm(raw, axis=1, keepdims=True))  # a 256-d PCA, as maps >= 1000 frames get
    size = descriptor.input_size
    rows.append(("preprocess (640x480)", "cpu", timed(lambda: batch_to_tensor([query], size), args.warmup, args.repeats)))
    tensor = batch_to_tensor([query], size)
    for device in devices:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        for name in ("torch", "onnxruntime", "tensorrt"):
            try:
                backend = make_backend(name, descriptor, device)
            except ValueError as exc:
                print(f"  {name}/{device}: skipped ({exc})")
                continue
            with torch.inference_mode():
                rows.append((f"descriptor {backend.label}", device,
                             timed(lambda: backend.describe(tensor), args.warmup, args.repeats, sync)))
    rng = np.random.default_rng(1)
    q = rng.standard_normal((1, args.dim)).astype(np.float32)
    q /= np.linalg.norm(q)
    search_ms = {}
    for n in (int(s) for s in args.sizes.split(",")):
        data = rng.standard_normal((n, args.dim), dtype=np.float32)
        data /= np.linalg.norm(data, axis=1, keepdims=True)
        index = faiss.IndexFlatIP(args.dim)
        index.add(data)
        search_ms[n] = timed(lambda: index.search(q, 10), args.warmup, args.repeats)
        rows.append((f"search {n // 1000}k x {args.dim}-d (faiss flat)", "cpu", search_ms[n]))
        if torch.cuda.is_available():
            gpu = torch.from_numpy(data).cuda().half()
            qg = torch.from_numpy(q).cuda().half()
            rows.append((f"search {n // 1000}k x {args.dim}-d (matmul top-k fp16)", "cuda",
                         timed(lambda: torch.topk(gpu @ qg.T, 10, dim=0), args.warmup, args.repeats,
                               torch.cuda.synchronize)))
        del data, index
    extractor = LocalExtractor("xfeat", 512)
    rows.append(("local features (xfeat, 512)", "cpu", timed(lambda: extractor.extract([query]), 2, 10)))
    q_feat, m_feat = extractor.extract([query])[0], extractor.extract([refs[10]])[0]
    verifier = GeometricVerifier()
    per_pair = {}
    for name in args.matchers.split(","):
        matcher = Matcher(name)
        with torch.inference_mode():
            ms = timed(lambda: matcher.match(q_feat, [m_feat] * args.pairs), 2, 10) / args.pairs
        per_pair[name] = ms
        rows.append((f"matcher {name} per pair", "cpu", ms))
    with torch.inference_mode():
        matches = Matcher(args.matchers.split(",")[0]).match(q_feat, [m_feat])[0]
    verify_ms = timed(lambda: verifier.verify(q_feat.keypoints[matches.query_idx], m_feat.keypoints[matches.map_idx],
                                              q_feat.image_size, m_feat.image_size), 2, 20)
    rows.append((f"verification per pair ({len(matches)} matches)", "cpu", verify_ms))
    print(f"\n{'stage':52} {'device':6} {'median ms':>10}")
    for stage, device, ms in rows:
        print(f"{stage:52} {device:6} {ms:10.2f}")
    desc_cpu = next(ms for stage, device, ms in rows if stage == "descriptor torch/cpu")
    pre = rows[0][2]
    local = next(ms for stage, _, ms in rows if stage.startswith("local features"))
    for n, s in search_ms.items():
        for name, pair in per_pair.items():
            total = pre + desc_cpu + s + local + args.pairs * (pair + verify_ms)
            print(f"total, torch/cpu, {n // 1000}k map, top-{args.pairs} {name}: {total:.0f} ms")


if __name__ == "__main__":
    main()
