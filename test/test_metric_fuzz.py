"""The metric step under degenerate geometry: planes at one depth, collinear and repeated points, zero
parallax, points at or behind a camera, extreme depths and keypoints. None of it may raise: each pair either
gets a finite pose with a positive-definite covariance or no pose with a reason (issue 38, case 1)."""

import numpy as np
import pytest

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.matching.metric import MetricEstimator
from vpr_ros.core.matching.transforms import rotvec_to_matrix

SIZE = (640, 480)


def _K(rng) -> np.ndarray:
    f = rng.choice([80.0, 320.0, 500.0, 2000.0])
    return np.array([[f, 0, 319.5], [0, f * rng.choice([1.0, 1.2]), 239.5], [0, 0, 1]])


def _pixels(rng, n: int, kind: str) -> np.ndarray:
    if kind == "collinear":
        t = rng.uniform(0, 1, n)
        return np.column_stack([40 + 560 * t, 60 + 360 * t])
    if kind == "repeated":
        return np.repeat(rng.uniform(0, SIZE, (1, 2)), n, 0) + rng.choice([0.0, 1e-9], (n, 2))
    if kind == "cluster":
        return rng.uniform(0, SIZE, (1, 2)) + rng.normal(0, 0.5, (n, 2))
    if kind == "corners":
        return np.array([[0, 0], [639, 0], [0, 479], [639, 479]], float)[rng.integers(0, 4, n)]
    return rng.uniform(0, SIZE, (n, 2))


def _depths(rng, n: int, kind: str) -> np.ndarray:
    return {"one": np.full(n, 3.0), "tiny": np.full(n, 0.05), "far": rng.uniform(39.0, 40.0, n),
            "plane": rng.uniform(2.99, 3.01, n), "mixed": np.where(rng.random(n) < 0.5, 0.06, 39.9),
            "holes": np.where(rng.random(n) < 0.8, np.nan, 3.0), "bad": rng.choice([np.nan, np.inf, -1.0, 0.0, 1e30], n),
            "random": rng.uniform(0.05, 40, n)}[kind]


def _case(rng):
    """One degenerate pair: pixels, depths and the motion between the views."""
    n = int(rng.choice([0, 6, 11, 12, 13, 40, 300], p=[0.02, 0.02, 0.04, 0.2, 0.2, 0.26, 0.26]))
    kind = rng.choice(["random", "collinear", "repeated", "cluster", "corners"])
    map_px = _pixels(rng, n, kind)
    motion = rng.choice(["none", "tiny", "forward", "backward", "turn", "random"])
    rotation, translation = {
        "none": (np.eye(3), np.zeros(3)), "tiny": (np.eye(3), np.full(3, 1e-9)),
        "forward": (np.eye(3), np.array([0, 0, -2.5])), "backward": (np.eye(3), np.array([0, 0, 3.5])),
        "turn": (rotvec_to_matrix([0, np.pi * rng.uniform(0.4, 1.0), 0]), np.zeros(3)),
        "random": (rotvec_to_matrix(rng.normal(0, 0.5, 3)), rng.normal(0, 2, 3))}[motion]
    K_map, K_query = _K(rng), _K(rng)
    map_depth = _depths(rng, n, rng.choice(["one", "tiny", "far", "plane", "mixed", "holes", "bad", "random"],
                                           p=[0.2, 0.1, 0.1, 0.2, 0.1, 0.05, 0.05, 0.2]))
    z = np.nan_to_num(map_depth, nan=3.0, posinf=3.0, neginf=3.0).clip(0.01, 100)
    X = np.column_stack([(map_px - K_map[:2, 2]) / np.diag(K_map)[:2] * z[:, None], z])
    Xq = X @ rotation.T + translation
    with np.errstate(all="ignore"):
        query_px = Xq[:, :2] / np.where(np.abs(Xq[:, 2:]) > 1e-12, Xq[:, 2:], 1e-12) * np.diag(K_query)[:2] + K_query[:2, 2]
    query_px = query_px + rng.normal(0, rng.choice([0.0, 1.0, 50.0]), query_px.shape)
    if rng.random() < 0.1:
        query_px[rng.random(n) < 0.2] = np.nan
    query_depth = Xq[:, 2] if rng.random() < 0.5 else np.full(n, 3.0)  # the true depths, or a flat wall
    sides = rng.choice(["map", "query", "both"])
    return (query_px, map_px, K_query, K_map, map_depth if sides != "query" else None,
            query_depth if sides != "map" else None)


@pytest.mark.parametrize("seed", range(4))
def test_thousands_of_degenerate_pairs_never_raise(seed):
    """750 pairs per seed (3000 in all): a finite pose with a positive-definite covariance, or a reason."""
    rng = np.random.default_rng(1000 + seed)
    estimator, outcomes = MetricEstimator(), {"pose": 0, "none": 0}
    for _ in range(750):
        query_px, map_px, K_query, K_map, map_depth, query_depth = _case(rng)
        pose, note = estimator.estimate(query_px, map_px, K_query, K_map, SIZE, SIZE, map_depth, query_depth)
        if pose is None:
            assert isinstance(note, str) and note, "no pose must come with its reason"
            outcomes["none"] += 1
            continue
        assert note == ""
        assert np.isfinite(pose.rotation).all() and np.isfinite(pose.translation).all()
        assert np.isfinite(pose.covariance).all() and np.linalg.eigvalsh(pose.covariance).min() > 0
        outcomes["pose"] += 1
    assert outcomes["none"] > 0 and outcomes["pose"] > 0, outcomes  # both paths are exercised


def test_a_frame_whose_metric_step_fails_still_publishes_its_loop_closure(corridor_dir, tmp_path):
    """Through the core Localizer on real Corridor queries with a constant 3.0 m depth image: every frame
    is answered, and a loop closure without a metric pose says why (at be683cd some frames raised
    LinAlgError: Singular matrix and lost their hypotheses, loop closure and pose)."""
    import cv2

    from vpr_ros.core.inputs.camera import intrinsics_for
    from vpr_ros.core.pipeline.localizer import Localizer
    from vpr_ros.core.map.frames import FrameTable
    from vpr_ros.core.build.map_builder import build_map
    from vpr_ros.core.build.sources import load_image_file

    refs = sorted((corridor_dir / "ref").glob("*.jpg"))
    vpr_map = build_map("corridor", FrameTable.build(np.arange(1, len(refs) + 1) * 10**9, refs), load_image_file,
                        clusters=16, local_features="xfeat")
    localizer = Localizer(LocalizerConfig(), vpr_map)
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    loops = 0
    for i in range(20, 111):
        image = cv2.cvtColor(cv2.imread(str(corridor_dir / "query" / f"{i:07d}.jpg")), cv2.COLOR_BGR2RGB)
        camera_K = intrinsics_for(K, (640, 480), (image.shape[1], image.shape[0]))
        result = localizer.process(image, i * 10**8, None, camera_K, np.full(image.shape[:2], 3.0, np.float32))
        assert result.places
        if result.loop is not None:
            loops += 1
            assert result.metric is not None or result.scale_note, i
            assert "failed" not in result.scale_note, result.scale_note
    assert loops >= 30
