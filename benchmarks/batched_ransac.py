"""Batched torch RANSAC (matching/ransac.py) against OpenCV USAC_MAGSAC (matching/geometry.py), in one run:

1. Synthetic two-view scenes with known geometry (K, R, t, inlier set), at several inlier ratios:
   inliers found against the true inlier set, the verified decision, and the rotation error with
   intrinsics (essential matrix), for both verifiers.
2. Real Corridor pairs: each of 37 queries against 5 reference frames (2 right, 1 exact, 2 far),
   matched by xfeat-mnn and xfeat-lighterglue: the share of pairs with the same verified decision and
   of verified pairs whose inlier counts agree within 10 %; as a yardstick, the same figures between
   two OpenCV estimators (MAGSAC++ and GC-RANSAC, USAC_ACCURATE) and MAGSAC++ against itself on the
   same matches in another order (its random samples change with the order).
3. Time for K candidate pairs of M matches: OpenCV one pair after another, OpenCV in the re-ranker's
   threads, kornia's torch RANSAC (fundamental, its defaults) one pair after another on --device, and
   one batched call on --device (after warm-up, synchronised, median of --repeats).

    .venv/bin/python benchmarks/batched_ransac.py [--device cuda] [--pairs 10] [--matches 512] [--json F]
"""

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

import vpr_ros  # noqa: F401  (before torch's OpenMP starts: the wait policy)
from vpr_ros.core.inputs.images import read_image
from vpr_ros.core.matching.geometry import GeometricVerifier
from vpr_ros.core.matching.local_features import LocalExtractor
from vpr_ros.core.matching.matchers import Matcher
from vpr_ros.core.matching.ransac import BatchedVerifier
from vpr_ros.core.runtime.threads import cpu_threads

from common import CORRIDOR, machine

K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
SIZE = (640, 480)


def scene(rng: np.random.Generator, inlier_ratio: float, n: int = 400, noise_px: float = 0.7):
    """Matches between two views of random points 4-15 m away: (query pts, map pts, true inliers, R, t),
    with T_query_match = (R, t) as the verifiers report it."""
    points = np.c_[rng.uniform(-4, 4, n), rng.uniform(-3, 3, n), rng.uniform(4, 15, n)]
    axis = rng.normal(size=3)
    rotation = cv2.Rodrigues(axis / np.linalg.norm(axis) * np.radians(rng.uniform(2, 20)))[0]
    translation = rng.normal(size=3)
    translation *= rng.uniform(0.3, 1.5) / np.linalg.norm(translation)
    in_map = (points - translation) @ rotation  # x_map = R' (x_query - t)

    def project(p):
        uv = p @ K.T
        return uv[:, :2] / uv[:, 2:] + rng.normal(0, noise_px, (len(p), 2))

    query, match = project(points), project(in_map)
    outlier = rng.random(n) > inlier_ratio
    match[outlier] = rng.uniform([0, 0], SIZE, (outlier.sum(), 2))
    return query, match, ~outlier, rotation, translation


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1))))


def synthetic(batched: BatchedVerifier, reference: GeometricVerifier, ratios, per_ratio: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for ratio in ratios:
        scenes = [scene(rng, ratio) for _ in range(per_ratio)]
        for calibrated in (False, True):
            kk = (K, K) if calibrated else (None, None)
            ours = batched.verify_batch([(q, m, None) for q, m, *_ in scenes], SIZE, [SIZE] * len(scenes), *kk)
            for (q, m, truth, rotation, _), mine in zip(scenes, ours):
                theirs = reference.verify(q, m, SIZE, SIZE, *kk)
                row = {"ratio": ratio, "calibrated": calibrated}
                for name, v in (("opencv", theirs), ("torch", mine)):
                    row[f"{name}_recall"] = float((v.inliers & truth).sum() / truth.sum())
                    row[f"{name}_precision"] = float((v.inliers & truth).sum() / max(v.inliers.sum(), 1))
                    row[f"{name}_verified"] = v.verified
                    row[f"{name}_rot_deg"] = angle_deg(v.rotation, rotation) if v.rotation is not None else None
                rows.append(row)
    return rows


def corridor(root: Path, batched: BatchedVerifier, reference: GeometricVerifier) -> dict:
    queries = list(range(0, 111, 3))
    extractor = LocalExtractor("xfeat", 512)
    query_features = extractor.extract([read_image(root / "query" / f"{q:07d}.jpg") for q in queries])
    ref_features = extractor.extract([read_image(root / "ref" / f"{r:07d}.jpg") for r in range(111)])
    out = {}
    for name in ("xfeat-mnn", "xfeat-lighterglue"):
        matcher = Matcher(name)
        pairs = []  # (opencv MAGSAC, opencv GC-RANSAC, torch, MAGSAC on the matches reordered)
        rng = np.random.default_rng(0)
        for qf, q in zip(query_features, queries):
            candidates = [(q + d) % 111 for d in (-2, 0, 2, 30, 60)]
            stored = [ref_features[c] for c in candidates]
            matches = matcher.match(qf, stored)
            points = [(qf.keypoints[m.query_idx], f.keypoints[m.map_idx], m.scores) for f, m in zip(stored, matches)]
            ours = batched.verify_batch(points, qf.image_size, [f.image_size for f in stored])
            for (p0, p1, _), f, mine in zip(points, stored, ours):
                magsac = reference.verify(p0, p1, qf.image_size, f.image_size)
                order = rng.permutation(len(p0))
                reordered = reference.verify(p0[order], p1[order], qf.image_size, f.image_size)
                pairs.append((magsac, _gc_ransac(reference, p0, p1, qf.image_size, f.image_size), mine, reordered))
        out[name] = {"pairs": len(pairs), "opencv_verified": sum(p[0].verified for p in pairs),
                     "torch_verified": sum(p[2].verified for p in pairs),
                     "torch_vs_magsac": _agreement([(p[0], p[2]) for p in pairs]),
                     "gcransac_vs_magsac": _agreement([(p[0], p[1]) for p in pairs]),
                     "magsac_reordered_vs_magsac": _agreement([(p[0], p[3]) for p in pairs])}
    return out


def _gc_ransac(reference: GeometricVerifier, p0, p1, size0, size1):
    """The same verifier with OpenCV's GC-RANSAC (USAC_ACCURATE) in place of MAGSAC++."""
    magsac = cv2.USAC_MAGSAC
    try:
        cv2.USAC_MAGSAC = cv2.USAC_ACCURATE  # geometry.py reads the flag at call time
        return reference.verify(p0, p1, size0, size1)
    finally:
        cv2.USAC_MAGSAC = magsac


def _agreement(pairs) -> dict:
    same = [a.verified == b.verified for a, b in pairs]
    relative = [abs(a.inlier_count - b.inlier_count) / a.inlier_count for a, b in pairs if a.verified]
    return {"same_decision": round(float(np.mean(same)), 3),
            "count_within_10pct": round(float(np.mean(np.array(relative) <= 0.1)), 3),
            "median_relative_count_diff": round(float(np.median(relative)), 3)}


def timing(device: str, pairs: int, matches: int, repeats: int) -> dict:
    rng = np.random.default_rng(1)
    scenes = [scene(rng, 0.6, n=matches) for _ in range(pairs)]
    reference, batched = GeometricVerifier(), BatchedVerifier(device=device)
    pool = ThreadPoolExecutor(cpu_threads())

    def clock(run) -> float:
        for _ in range(3):
            run()
        times = []
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1e3)
        return round(statistics.median(times), 2)

    points = [(q, m, None) for q, m, *_ in scenes]
    from kornia.geometry.ransac import RANSAC  # a published torch RANSAC: one pair per call

    kornia_ransac = RANSAC("fundamental", inl_th=3.0, confidence=0.999)
    kornia_points = [(torch.from_numpy(q).float().to(device), torch.from_numpy(m).float().to(device)) for q, m, _ in points]
    return {"kornia_ransac_one_by_one_ms": clock(lambda: [kornia_ransac(q, m) for q, m in kornia_points]),
            "pairs": pairs, "matches": matches, "cpu_threads": cpu_threads(),
            "opencv_sequential_ms": clock(lambda: [reference.verify(q, m, SIZE, SIZE) for q, m, _ in points]),
            "opencv_threads_ms": clock(lambda: list(pool.map(lambda p: reference.verify(p[0], p[1], SIZE, SIZE), points))),
            f"torch_batched_{device}_ms": clock(lambda: batched.verify_batch(points, SIZE, [SIZE] * pairs))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--matches", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--per-ratio", type=int, default=12)
    parser.add_argument("--data", type=Path, default=CORRIDOR)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    batched, reference = BatchedVerifier(device=args.device), GeometricVerifier()
    report = {"machine": machine(), "device": args.device}
    rows = synthetic(batched, reference, (0.35, 0.5, 0.7, 0.9), args.per_ratio)
    summary = []
    for ratio in sorted({r["ratio"] for r in rows}):
        for calibrated in (False, True):
            sel = [r for r in rows if r["ratio"] == ratio and r["calibrated"] == calibrated]
            entry = {"ratio": ratio, "calibrated": calibrated, "pairs": len(sel)}
            for name in ("opencv", "torch"):
                entry[f"{name}_recall"] = round(float(np.median([r[f"{name}_recall"] for r in sel])), 3)
                entry[f"{name}_precision"] = round(float(np.median([r[f"{name}_precision"] for r in sel])), 3)
                entry[f"{name}_verified"] = sum(r[f"{name}_verified"] for r in sel)
                rot = [r[f"{name}_rot_deg"] for r in sel if r[f"{name}_rot_deg"] is not None]
                entry[f"{name}_rot_deg_median"] = round(float(np.median(rot)), 3) if rot else None
            entry["same_decision"] = round(float(np.mean([r["opencv_verified"] == r["torch_verified"] for r in sel])), 3)
            summary.append(entry)
    report["synthetic"] = summary
    for entry in summary:
        print(json.dumps(entry))
    if args.data.is_dir():
        report["corridor"] = corridor(args.data, batched, reference)
        print(json.dumps(report["corridor"], indent=1))
    report["timing"] = timing(args.device, args.pairs, args.matches, args.repeats)
    print(json.dumps(report["timing"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
