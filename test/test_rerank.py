"""Re-ranking: matchers on real images, MAGSAC++ verification on exact synthetic geometry, fusion."""

import cv2
import numpy as np
import pytest

from vpr_ros.core.matching.geometry import GeometricVerifier
from vpr_ros.core.matching.local_features import LocalExtractor, LocalFeatures
from vpr_ros.core.matching.matchers import MATCHERS, Matcher
from vpr_ros.core.matching.reranker import Reranker
from vpr_ros.core.retrieval.recognizer import search

K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
SIZE = (640, 480)


def rotation(axis, angle) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(axis, float) * angle)[0]


def project(points: np.ndarray) -> np.ndarray:
    p = points @ K.T
    return p[:, :2] / p[:, 2:]


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1))))


@pytest.fixture(scope="module")
def scene():
    """300 points 4-12 m in front of the query camera; the map camera at T_query_match = (R, t)."""
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-4, 4, (300, 2)), rng.uniform(4, 12, 300)]
    r, t = rotation([0, 1, 0], 0.2), np.array([1.0, 0.1, 0.3])
    in_map = (points - t) @ r  # x_map = R^T (x_query - t)
    query = project(points) + rng.normal(0, 0.3, (300, 2))
    match = project(in_map) + rng.normal(0, 0.3, (300, 2))
    match[:60] = rng.uniform(0, 640, (60, 2))  # 20 % outliers
    return points, r, t, query, match


def test_essential_matrix_recovers_the_relative_pose(scene):
    _, r, t, query, match = scene
    result = GeometricVerifier().verify(query, match, SIZE, SIZE, K, K)
    assert result.verified and result.model == "essential"
    assert 220 <= result.inlier_count <= 250 and not result.inliers[:60].all()
    assert angle_deg(result.rotation, r) < 1.0
    assert np.degrees(np.arccos(result.translation @ (t / np.linalg.norm(t)))) < 5.0
    assert "scale unknown" in result.note


def test_fundamental_matrix_without_intrinsics(scene):
    _, _, _, query, match = scene
    result = GeometricVerifier().verify(query, match, SIZE, SIZE)
    assert result.verified and result.model == "fundamental" and result.rotation is None
    assert result.inlier_ratio == pytest.approx(result.inlier_count / 300)
    homography = GeometricVerifier(model="homography").verify(query, match, SIZE, SIZE)
    assert homography.model == "homography" and homography.inlier_count < result.inlier_count


def test_pure_rotation_gives_rotation_without_translation(scene):
    points, r, _, query, _ = scene
    rotated = project(points @ r) + np.random.default_rng(1).normal(0, 0.3, (300, 2))
    result = GeometricVerifier().verify(query, rotated, SIZE, SIZE, K, K)
    assert result.verified and result.translation is None and "pure rotation" in result.note
    assert angle_deg(result.rotation, r) < 0.5


def test_identical_images_are_verified_without_motion(scene):
    _, _, _, query, _ = scene
    calibrated = GeometricVerifier().verify(query, query, SIZE, SIZE, K, K)
    assert calibrated.verified and np.allclose(calibrated.rotation, np.eye(3), atol=1e-6)
    assert calibrated.translation is None
    plain = GeometricVerifier().verify(query, query, SIZE, SIZE)
    assert plain.verified and plain.model == "homography" and "homography explains" in plain.note


@pytest.mark.parametrize("case, note", [
    ("few", "fewer than the 15"),
    ("collinear", "collinear"),
    ("random", "min_inlier"),
    ("nan", "non-finite"),
    ("empty", "0 matches"),
])
def test_degenerate_matches_are_unverified_with_a_reason(case, note):
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0, 640, (200, 2)), rng.uniform(0, 640, (200, 2))
    if case == "few":
        a, b = a[:6], b[:6]
    elif case == "collinear":
        a = np.c_[np.linspace(0, 600, 50), np.linspace(0, 400, 50)]
        b = a + 5
    elif case == "nan":
        a[3] = np.nan
    elif case == "empty":
        a, b = a[:0], b[:0]
    for k in (None, K):
        result = GeometricVerifier().verify(a, b, SIZE, SIZE, k, k)
        assert not result.verified and note in result.note, result
        assert len(result.inliers) == len(a)


def test_inliers_that_chance_explains_are_not_verified(scene):
    """The a contrario test: the count chance leaves grows with the matches and with the threshold's share of
    the image, so the same inlier count verifies among few matches and not among many random ones."""
    from vpr_ros.core.matching.geometry import chance_rates, log10_nfa
    from vpr_ros.core.matching.ransac import BatchedVerifier

    chance = chance_rates(3.0, SIZE, SIZE)
    assert chance["fundamental"] == pytest.approx(2 * 3 * 800 / (640 * 480))
    assert log10_nfa("fundamental", 40, 15, chance["fundamental"]) > 0  # 15 of 40: chance does that
    assert log10_nfa("fundamental", 20, 15, chance["fundamental"]) < 0
    assert log10_nfa("fundamental", 400, 60, chance["fundamental"]) > log10_nfa("fundamental", 100, 60, chance["fundamental"])
    # a tiny image: the same threshold covers more of it, and the same matches mean less
    small = chance_rates(3.0, (160, 120), (160, 120))
    assert log10_nfa("fundamental", 60, 25, small["fundamental"]) > log10_nfa("fundamental", 60, 25, chance["fundamental"])
    # real geometry among outliers passes; 25 true matches hidden among 75 random ones pass the ratio and count
    # rules (more than 15 inliers, over 25 %) only when chance cannot explain them
    _, _, _, query, match = scene
    rng = np.random.default_rng(3)
    refused = 0
    for kind in (GeometricVerifier, BatchedVerifier):
        assert kind().verify(query, match, SIZE, SIZE).log_nfa < -50
        loose = kind(min_inliers=8, min_inlier_ratio=0.1)  # count and ratio rules that random matches pass
        for _ in range(5):
            a, b = rng.uniform(0, 640, (60, 2)), rng.uniform(0, 640, (60, 2))
            random = loose.verify(a, b, SIZE, SIZE)
            assert not random.verified and random.log_nfa > 0, random
            refused += "chance" in random.note
    assert refused >= 5  # most of them fail on chance alone


def test_look_alike_rules_measure_every_verification_and_refuse_with_a_reason(scene):
    """Keypoint share and inlier coverage are measured on every fitted pair (both verifiers) and, when set,
    unverify a pair whose inliers are a small part of the keypoint budget or lie on one object."""
    from vpr_ros.core.matching.ransac import BatchedVerifier

    _, _, _, query, match = scene
    for kind in (GeometricVerifier, BatchedVerifier):
        v = kind().verify(query, match, SIZE, SIZE, keypoints=(512, 600))
        assert v.verified and v.keypoint_share == pytest.approx(v.inlier_count / 512)
        assert 0.3 < v.coverage <= 1.0 and 0 < v.homography_share < 0.95  # a 3-D scene: parallax
        assert np.isnan(kind().verify(query, match, SIZE, SIZE).keypoint_share)  # counts not given
        budget = kind(min_keypoint_share=0.2).verify(query, match, SIZE, SIZE, keypoints=(2048, 2048))
        assert not budget.verified and "min_keypoint_share" in budget.note and budget.inlier_count == v.inlier_count
        assert kind(min_keypoint_share=0.2).verify(query, match, SIZE, SIZE, keypoints=(512, 512)).verified
    # the same geometry seen on a small patch of the image: verified by count and chance, but one object
    corner = query[60:] * 0.15 + 10, match[60:] * 0.15 + 10
    small = GeometricVerifier(min_inlier_coverage=0.05).verify(*corner, SIZE, SIZE)
    assert small.inlier_count >= 200 and small.coverage < 0.05
    assert not small.verified and "min_inlier_coverage" in small.note
    assert GeometricVerifier().verify(*corner, SIZE, SIZE).verified
    with pytest.raises(ValueError, match="min_keypoint_share"):
        GeometricVerifier(min_keypoint_share=1.5)


def test_verifier_rejects_bad_settings_and_shapes():
    with pytest.raises(ValueError, match="unknown geometric model"):
        GeometricVerifier(model="affine")
    with pytest.raises(ValueError):
        GeometricVerifier(threshold_px=0)
    with pytest.raises(ValueError, match="3 query points for 2"):
        GeometricVerifier().verify(np.zeros((3, 2)), np.zeros((2, 2)), SIZE, SIZE)


@pytest.fixture(scope="module")
def corridor_triplets(corridor_dir):
    from vpr_ros.core.inputs.images import read_image

    return [(read_image(corridor_dir / "query" / f"{q:07d}.jpg"), read_image(corridor_dir / "ref" / f"{q:07d}.jpg"),
             read_image(corridor_dir / "ref" / f"{(q + 50) % 111:07d}.jpg")) for q in (5, 30, 90)]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MATCHERS))
def test_matchers_verify_the_same_place_and_reject_a_far_one(corridor_triplets, name):
    matcher = Matcher(name)
    # ALIKED on these upscaled 160x120 images needs 1024 keypoints to separate places (512: 32 vs 19 inliers)
    extractor = LocalExtractor(matcher.features, 1024 if matcher.features == "aliked" else 512)
    verifier = GeometricVerifier()
    for query, same, far in corridor_triplets:
        fq, fs, ff = extractor.extract([query, same, far])
        inliers = []
        for features, m in zip((fs, ff), matcher.match(fq, [fs, ff])):
            assert m.query_idx.max(initial=0) < len(fq) and m.map_idx.max(initial=0) < len(features)
            v = verifier.verify(fq.keypoints[m.query_idx], features.keypoints[m.map_idx], fq.image_size,
                                features.image_size)
            inliers.append(v.inlier_count if v.verified else 0)
        assert inliers[0] >= 20 and inliers[0] > 2 * inliers[1], (name, inliers)


def test_matcher_handles_empty_features():
    empty = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 64), np.float32), np.zeros(0, np.float32),
                          (640, 480))
    some = LocalFeatures(np.random.default_rng(0).uniform(0, 400, (30, 2)).astype(np.float32),
                         np.eye(64, dtype=np.float32)[np.arange(30) % 64], np.ones(30, np.float32), (640, 480))
    for name in ("xfeat-lighterglue", "xfeat-mnn"):
        matcher = Matcher(name)
        assert [len(m) for m in matcher.match(empty, [some, empty])] == [0, 0]
        assert [len(m) for m in matcher.match(some, [empty])] == [0]
        assert matcher.match(some, []) == []
    assert len(Matcher("xfeat-mnn").match(some, [some])[0]) == 30  # identical descriptors all match
    with pytest.raises(ValueError, match="unknown matcher 'superglue'"):
        Matcher("superglue")


@pytest.fixture(scope="module")
def small_map(corridor_dir):
    """The first 40 Corridor references with XFeat local features."""
    from vpr_ros.core.map.frames import FrameTable
    from vpr_ros.core.build.map_builder import build_map
    from vpr_ros.core.build.sources import load_image_file

    refs = sorted((corridor_dir / "ref").glob("*.jpg"))[:40]
    frames = FrameTable.build(np.zeros(len(refs), np.int64), refs)
    return build_map("c40", frames, load_image_file, clusters=8, input_size=(320, 240), local_features="xfeat",
                     max_keypoints=512)


def test_reranker_orders_verified_first_and_explains_the_rest(small_map, corridor_dir):
    from vpr_ros.core.inputs.images import read_image

    reranker = Reranker("xfeat-lighterglue")
    extractor = reranker.extractor_for(small_map.local_conf)
    query = read_image(corridor_dir / "query" / "0000020.jpg")
    answer = search(small_map, [query], k=8)
    result = reranker.rerank(extractor.extract([query])[0], answer.ids[0], answer.similarities[0], small_map.local)
    assert result.pairs_matched == 8 and not result.skipped
    assert sorted(result.ids.tolist()) == sorted(answer.ids[0].tolist())
    best = result.candidates[0]
    assert best.verified and abs(best.key - 20) <= 2, best  # Corridor: references 18..22 show the same place
    assert best.score == pytest.approx(np.log1p(best.verification.inlier_count) + 25 * best.global_similarity)
    flags = [c.verified for c in result.candidates]
    assert flags == sorted(flags, reverse=True), "a verified candidate ranks below an unverified one"
    for c in result.candidates:
        if not c.verified:
            assert c.note, "an unverified candidate needs a reason"
    # zero keypoints in the query: every candidate unverified with a reason, nothing raised
    blank = extractor.extract([np.full((120, 160), 90, np.uint8)])[0]
    result = reranker.rerank(blank, answer.ids[0], answer.similarities[0], small_map.local)
    assert [c.key for c in result.candidates] == answer.ids[0].tolist()
    assert all(not c.verified and "0 matches" in c.note for c in result.candidates)


def test_confident_queries_verify_only_their_first_candidate(small_map, corridor_dir):
    from vpr_ros.core.inputs.images import read_image

    query = read_image(small_map.frames.sources[12])  # a map image: its first candidate leads clearly
    answer = search(small_map, [query], k=5)
    margin = float(answer.similarities[0, 0] - answer.similarities[0, 1])
    reranker = Reranker("xfeat-mnn", skip_margin=margin / 2)
    features = reranker.extractor_for(small_map.local_conf).extract([query])[0]
    result = reranker.rerank(features, answer.ids[0], answer.similarities[0], small_map.local)
    assert result.skipped and result.pairs_matched == 1 and result.candidates[0].key == 12
    assert result.candidates[0].verified and "not matched" in result.candidates[1].note
    reranker.skip_margin = margin * 2
    assert reranker.rerank(features, answer.ids[0], answer.similarities[0], small_map.local).pairs_matched == 5


def test_map_features_must_fit_the_matcher(small_map):
    with pytest.raises(ValueError, match="stores no local features"):
        Reranker("xfeat-mnn").check_map(None)
    with pytest.raises(ValueError, match="needs aliked"):
        Reranker("aliked-lightglue").check_map(small_map.local_conf)


def test_lighterglue_with_fewer_layers_still_matches_a_real_pair(corridor_dir):
    """matcher_layers: the first N layers and that layer's own assignment head; out of range refused."""
    from vpr_ros.core.inputs.images import read_image
    from vpr_ros.core.matching.local_features import LocalExtractor
    from vpr_ros.core.matching.matchers import Matcher

    query, ref = (read_image(corridor_dir / sub / "0000010.jpg") for sub in ("query", "ref"))
    features = LocalExtractor("xfeat", 512).extract([query, ref])
    full, short = Matcher("xfeat-lighterglue"), Matcher("xfeat-lighterglue", layers=3)
    assert (full.layers, short.layers, Matcher("xfeat-mnn").layers) == (6, 3, 0)
    counts = [len(m.match(features[0], [features[1]])[0]) for m in (full, short)]
    assert min(counts) >= 30 and abs(counts[0] - counts[1]) < 0.5 * counts[0], counts
    with pytest.raises(ValueError, match="matcher_layers"):
        Matcher("xfeat-lighterglue", layers=7)
