"""Batched torch RANSAC (matching/ransac.py): exact two-view geometry, degenerate pairs, agreement with
OpenCV USAC_MAGSAC on real Corridor pairs, and no read-back from the device inside the fit."""

import cv2
import numpy as np
import pytest
import torch
from conftest import NoReadBack

from vpr_ros.core.matching.geometry import GeometricVerifier
from vpr_ros.core.matching.ransac import BatchedVerifier, _project, ransac

K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
SIZE = (640, 480)


def scene(rng, inlier_ratio, n=300, noise_px=0.5):
    """(query pts, map pts, true inlier mask, R, t) with T_query_match = (R, t), points 4-15 m away."""
    points = np.c_[rng.uniform(-4, 4, n), rng.uniform(-3, 3, n), rng.uniform(4, 15, n)]
    axis = rng.normal(size=3)
    rotation = cv2.Rodrigues(axis / np.linalg.norm(axis) * np.radians(rng.uniform(3, 15)))[0]
    translation = rng.normal(size=3)
    translation *= rng.uniform(0.5, 1.5) / np.linalg.norm(translation)

    def project(p):
        uv = p @ K.T
        return uv[:, :2] / uv[:, 2:] + rng.normal(0, noise_px, (n, 2))

    query, match = project(points), project((points - translation) @ rotation)
    outlier = rng.random(n) > inlier_ratio
    match[outlier] = rng.uniform([0, 0], SIZE, (outlier.sum(), 2))
    return query, match, ~outlier, rotation, translation


def angle_deg(a, b):
    return float(np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1))))


def test_closed_form_projections_equal_the_svd_ones():
    models = torch.randn(500, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u, s, vh = torch.linalg.svd(models)
    zero = torch.zeros_like(s[:, :1])
    rank2 = u @ torch.diag_embed(torch.cat([s[:, :2], zero], 1)) @ vh
    assert torch.allclose(_project(models, "fundamental"), rank2, atol=1e-10)
    mean = 0.5 * (s[:, :1] + s[:, 1:2])
    essential = u @ torch.diag_embed(torch.cat([mean, mean, zero], 1)) @ vh
    assert torch.allclose(_project(models, "essential"), essential, atol=1e-10)


@pytest.mark.parametrize("calibrated", [False, True])
def test_batched_fit_finds_the_true_inliers_and_pose_as_opencv_does(calibrated):
    rng = np.random.default_rng(3)
    scenes = [scene(rng, ratio) for ratio in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]
    kk = (K, K) if calibrated else (None, None)
    ours = BatchedVerifier().verify_batch([(q, m, None) for q, m, *_ in scenes], SIZE, [SIZE] * len(scenes), *kk)
    for (query, match, truth, rotation, translation), mine in zip(scenes, ours):
        theirs = GeometricVerifier().verify(query, match, SIZE, SIZE, *kk)
        assert mine.verified == theirs.verified == True  # noqa: E712
        assert mine.model == theirs.model == ("essential" if calibrated else "fundamental")
        assert (mine.inliers & truth).sum() >= 0.97 * truth.sum()
        assert (mine.inliers & ~truth).sum() <= 0.03 * truth.sum() + 2  # outliers that happen to fit
        assert abs(mine.inlier_count - theirs.inlier_count) <= 0.1 * theirs.inlier_count
        if calibrated:
            assert angle_deg(mine.rotation, rotation) < 1.0
            assert angle_deg(mine.rotation, rotation) <= angle_deg(theirs.rotation, rotation) + 0.5
            assert np.degrees(np.arccos(mine.translation @ translation / np.linalg.norm(translation))) < 5.0


def test_random_matches_are_not_verified():
    rng = np.random.default_rng(4)
    pairs = [(rng.uniform(0, 640, (200, 2)), rng.uniform(0, 640, (200, 2)), None) for _ in range(4)]
    for v in BatchedVerifier().verify_batch(pairs, SIZE, [SIZE] * 4):
        assert not v.verified and v.inlier_ratio < 0.25


def test_degenerate_pairs_get_the_reference_reasons_beside_a_good_pair():
    rng = np.random.default_rng(5)
    good_q, good_m, *_ = scene(rng, 0.8)
    line = np.c_[np.linspace(0, 600, 40), np.full(40, 100.0)]
    nan = good_q[:50].copy()
    nan[3, 0] = np.nan
    pairs = [(good_q, good_m, None), (np.zeros((0, 2)), np.zeros((0, 2)), None), (good_q[:10], good_m[:10], None),
             (line, line + 5, None), (nan, good_m[:50], None)]
    got = BatchedVerifier().verify_batch(pairs, SIZE, [SIZE] * len(pairs))
    want = [GeometricVerifier().verify(p0, p1, SIZE, SIZE) for p0, p1, _ in pairs]
    assert got[0].verified and want[0].verified
    for mine, theirs in zip(got[1:], want[1:]):
        assert not mine.verified and mine.note == theirs.note and len(mine.inliers) == len(theirs.inliers)
    assert BatchedVerifier().verify_batch([], SIZE, []) == []
    with pytest.raises(ValueError, match="3 query points for 2"):
        BatchedVerifier().verify(np.zeros((3, 2)), np.zeros((2, 2)), SIZE, SIZE)


@pytest.mark.parametrize("calibrated", [False, True])
def test_fit_has_static_shapes_and_reads_nothing_back(calibrated):
    rng = np.random.default_rng(6)
    batch, length = 3, 128
    pts0, pts1 = torch.zeros(batch, length, 2), torch.zeros(batch, length, 2)
    valid = torch.zeros(batch, length, dtype=torch.bool)
    for i, n in enumerate((128, 60, 0)):
        q, m, *_ = scene(rng, 0.7, n=max(n, 1))
        pts0[i, :n], pts1[i, :n], valid[i, :n] = torch.from_numpy(q[:n]), torch.from_numpy(m[:n]), True
    kk = (K, K) if calibrated else (None, None)
    verifier = BatchedVerifier()
    with NoReadBack():
        fitted = verifier.fit(pts0, pts1, valid, torch.ones(batch, length), SIZE, [SIZE] * batch, *kk)
    model = "essential" if calibrated else "fundamental"
    assert fitted[f"{model}_inliers"].shape == fitted["homography_inliers"].shape == (batch, length)
    assert fitted[f"{model}_model"].shape == (batch, 3, 3)
    results = verifier.decide({k: v.cpu() for k, v in fitted.items()}, *kk)
    assert results[0].verified and results[2].note.startswith("0 matches")


def test_ransac_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        ransac(torch.zeros(1, 8, 2), torch.zeros(1, 8, 2), torch.ones(1, 8, dtype=torch.bool), torch.ones(1), "affine")
    with pytest.raises(ValueError, match="like the mask"):
        ransac(torch.zeros(1, 8, 2), torch.zeros(1, 7, 2), torch.ones(1, 8, dtype=torch.bool), torch.ones(1))


@pytest.mark.slow
def test_real_corridor_pairs_get_opencvs_decisions(corridor_dir):
    """37 queries x 5 references, split by the ground truth: 3 of the same place (offsets -2, 0, 2) and 2 far
    ones (30 and 60 frames on), matched by xfeat-mnn and xfeat-lighterglue. Same places: the batched verifier
    verifies them as MAGSAC++ does (>= 95 % of decisions) and agrees on inlier counts within 10 % about as
    often as MAGSAC++ agrees with itself on the same matches in another order (0.85-0.91; docs/benchmarks.md).
    Far places: it may refuse more of them than MAGSAC++ (a better verifier passes), never verify more than a
    few beyond it. (Both verify about 40 % of the far Corridor pairs, whose corridors look alike: the gate's
    known weakness on repeated real structure, issue 41; this test does not hide it behind a mixed count.)"""
    from vpr_ros.core.inputs.images import read_image
    from vpr_ros.core.matching.local_features import LocalExtractor
    from vpr_ros.core.matching.matchers import Matcher

    queries = list(range(0, 111, 3))
    extractor = LocalExtractor("xfeat", 512)
    refs = extractor.extract([read_image(corridor_dir / "ref" / f"{r:07d}.jpg") for r in range(111)])
    found = extractor.extract([read_image(corridor_dir / "query" / f"{q:07d}.jpg") for q in queries])
    reference = GeometricVerifier()
    offsets = (-2, 0, 2, 30, 60)
    for name in ("xfeat-mnn", "xfeat-lighterglue"):
        matcher, batched = Matcher(name), BatchedVerifier()
        near = {"same": [], "within": []}
        far = {"ours": 0, "theirs": 0, "pairs": 0}
        for q, query in zip(queries, found):
            stored = [refs[(q + d) % 111] for d in offsets]
            points = [(query.keypoints[m.query_idx], f.keypoints[m.map_idx], m.scores)
                      for f, m in zip(stored, matcher.match(query, stored))]
            mine = batched.verify_batch(points, query.image_size, [f.image_size for f in stored])
            for d, (p0, p1, _), f, ours in zip(offsets, points, stored, mine):
                theirs = reference.verify(p0, p1, query.image_size, f.image_size)
                if abs(d) <= 2:  # the same place (ground_truth.csv: +-2 frames)
                    near["same"].append(ours.verified == theirs.verified)
                    if theirs.verified:
                        near["within"].append(abs(ours.inlier_count - theirs.inlier_count) <= 0.1 * theirs.inlier_count)
                else:
                    far["pairs"] += 1
                    far["ours"] += int(ours.verified)
                    far["theirs"] += int(theirs.verified)
        assert len(near["same"]) == 111 and len(near["within"]) >= 105, name  # MAGSAC++ verifies the right places
        assert np.mean(near["same"]) >= 0.97 and np.mean(near["within"]) >= 0.8, (name, np.mean(near["same"]),
                                                                                   np.mean(near["within"]))
        assert far["pairs"] == 74 and far["ours"] <= far["theirs"] + 4, (name, far)
