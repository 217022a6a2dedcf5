"""The node's ROS-free pipeline: localize against a map, online loop closure, frame gating."""

import numpy as np
import pytest

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.inputs.gate import FrameGate
from vpr_ros.core.inputs.images import ImageError
from vpr_ros.core.pipeline.localizer import Localizer


@pytest.fixture(scope="module")
def refs(corridor_dir):
    from vpr_ros.core.inputs.images import read_image

    return [read_image(p) for p in sorted((corridor_dir / "ref").glob("*.jpg"))[:60]]


@pytest.fixture(scope="module")
def queries(corridor_dir):
    from vpr_ros.core.inputs.images import read_image

    return [read_image(p) for p in sorted((corridor_dir / "query").glob("*.jpg"))[:20]]


@pytest.fixture(scope="module")
def ref_map(corridor_dir):
    from vpr_ros.core.map.frames import FrameTable
    from vpr_ros.core.build.map_builder import build_map
    from vpr_ros.core.build.sources import load_image_file

    paths = sorted((corridor_dir / "ref").glob("*.jpg"))[:40]
    pose = np.zeros((40, 7))
    pose[:, 0], pose[:, 6] = np.arange(40), 1.0
    frames = FrameTable.build(np.arange(40) * 10**9, paths, pose=pose)
    return build_map("c40", frames, load_image_file, clusters=16, local_features="xfeat", max_keypoints=512)


def test_localize_reranks_and_accepts_a_verified_place(ref_map, corridor_dir):
    from vpr_ros.core.inputs.images import read_image

    config = LocalizerConfig(mode="localize", top_k=5, rerank="xfeat-mnn", accept_min_inliers=30,
                             accept_min_similarity=0.0, temporal_window=0)
    localizer = Localizer(config, ref_map)
    result = localizer.process(read_image(corridor_dir / "query" / "0000020.jpg"), 5 * 10**9)
    best = result.places[0]
    assert len(result.places) == 5 and abs(best.hypothesis.key - 20) <= 2 and best.verified
    assert best.hypothesis.pose[0] == best.hypothesis.key and result.loop is best
    assert {"descriptor", "search", "local_features", "match", "verify", "pipeline"} <= set(result.timings_ms)
    assert len(ref_map) == 40, "localize mode must not grow the map"
    with pytest.raises(ImageError):
        localizer.process(np.zeros((10, 10), np.uint8), 6 * 10**9)
    assert localizer.frames_processed == 1


def test_localize_without_reranking_and_temporal_consistency(ref_map, corridor_dir):
    from vpr_ros.core.inputs.images import read_image

    config = LocalizerConfig(top_k=3, rerank="off", accept_min_similarity=0.0, temporal_window=2, temporal_tolerance=3)
    localizer = Localizer(config, ref_map)
    loops = [localizer.process(read_image(corridor_dir / "query" / f"{q:07d}.jpg"), q * 10**9).loop
             for q in (10, 11, 12, 30)]
    # the first two frames lack history; the third agrees with both; a jump breaks consistency
    assert loops[0] is None and loops[1] is None and loops[2] is not None and loops[3] is None
    assert all(p.note == "not_reranked" and np.isnan(p.rerank_score) for p in
               localizer.process(read_image(corridor_dir / "query" / "0000031.jpg"), 40 * 10**9).places)


def test_reranking_needs_a_map_with_matching_features(ref_map):
    with pytest.raises(ValueError, match="needs aliked"):
        Localizer(LocalizerConfig(rerank="aliked-lightglue"), ref_map)
    with pytest.raises(ValueError, match="localize mode needs a map"):
        Localizer(LocalizerConfig())
    with pytest.raises(ValueError, match="mode must be one of"):
        LocalizerConfig(mode="mapping")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
            Localizer(LocalizerConfig(device="cuda"), ref_map)


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_the_configured_device_reaches_every_stage(ref_map, corridor_dir, device):
    """"auto" is resolved once and then used by the descriptor backend, the search, the local features
    and the matcher alike (a stage that kept its own default would show up here on a GPU machine)."""
    import torch
    from vpr_ros.core.inputs.images import read_image

    expected = "cuda" if device == "auto" and torch.cuda.is_available() else "cpu"
    localizer = Localizer(LocalizerConfig(rerank="xfeat-mnn", device=device), ref_map)
    try:
        result = localizer.process(read_image(corridor_dir / "query" / "0000020.jpg"), 10**9)
        assert result.places[0].verification is not None
        # the default backend (auto) is ONNX Runtime's joint graph on the CPU, torch on CUDA
        backend = "onnxruntime/cpu" if expected == "cpu" else f"torch/{expected}"
        assert localizer.config.device == expected and localizer.backend_label.startswith(backend)
        assert localizer.backend.max_keypoints == ref_map.local_conf["max_keypoints"]
        assert ref_map.index.device == expected
        assert localizer.reranker.matcher.device.type == expected
        assert localizer._extractor().device.type == expected
    finally:
        ref_map.index.to_device("cpu")


def test_slam_closes_a_loop_on_a_revisit(refs, queries):
    config = LocalizerConfig(mode="slam", top_k=3, rerank="xfeat-mnn", bootstrap_frames=20, exclude_recent_s=15,
                             exclude_recent_frames=5, accept_min_inliers=40, accept_min_similarity=0.0,
                             temporal_window=0)
    localizer = Localizer(config)
    first_pass = [localizer.process(image, i * 10**9) for i, image in enumerate(refs[:40])]
    assert first_pass[0].status == "bootstrapping 1/20" and first_pass[19].status.startswith("online map started")
    assert len(localizer.vpr_map) == 40 and localizer.vpr_map.local is not None
    for i, result in enumerate(first_pass[20:], start=20):  # never a frame of the last 15 s or 5 keyframes
        assert all(p.hypothesis.key <= min(result.map_key - 5, i - 15) for p in result.places), result.map_key
    # the other traversal's images of frames 10-17, 200 s later, close loops on the right frames
    revisit = [localizer.process(image, (200 + i) * 10**9) for i, image in enumerate(queries[10:18])]
    loops = [r for r in revisit if r.loop is not None]
    assert len(loops) >= 5, [(r.places[0].hypothesis.key, r.places[0].verification) for r in revisit]
    for i, r in enumerate(revisit):
        if r.loop is not None:
            assert abs(r.loop.hypothesis.key - (i + 10)) <= 3, (i, r.loop.hypothesis.key)
    assert len(localizer.vpr_map) == 48


def test_frame_gate():
    gate = FrameGate(min_interval_s=0.5)
    assert [gate.admit(10**9 + t) for t in (0, 2 * 10**8, 6 * 10**8, 9 * 10**8, 12 * 10**8)] == [True, False, True, False, True]
    gate = FrameGate(min_distance_m=1.0, min_rotation_deg=10)
    pose = lambda x, yaw_deg: np.array([x, 0, 0, 0, 0, np.sin(np.radians(yaw_deg) / 2), np.cos(np.radians(yaw_deg) / 2)])
    assert gate.admit(1, pose(0, 0)) and not gate.admit(2, pose(0.5, 5))
    assert gate.admit(3, pose(1.2, 0)) and gate.admit(4, pose(1.2, 15)) and not gate.admit(5, pose(1.3, 16))
    assert gate.admit(6, None), "frames without odometry pass on time alone"
    assert FrameGate().admit(10) and FrameGate().admit(0), "no thresholds: every frame passes"
    gate = FrameGate(min_interval_s=1.0)
    assert gate.admit(5 * 10**9) and gate.admit(10**9), "time going back (a replayed bag) resets the gate"
    with pytest.raises(ValueError):
        FrameGate(min_interval_s=-1)


def test_small_and_stretched_images_are_named_once(ref_map, corridor_dir, caplog):
    """A 64 x 32 thumbnail camera and a 1241 x 376 KITTI-shaped one: answered, and told once per size."""
    import cv2
    import logging

    from vpr_ros.core.inputs.images import read_image

    image = read_image(sorted((corridor_dir / "query").glob("*.jpg"))[5])
    localizer = Localizer(LocalizerConfig(rerank="off", top_k=3), ref_map)
    with caplog.at_level(logging.WARNING, logger="vpr_ros"):
        for size in ((64, 32), (64, 32), (1241, 376), (1241, 376), (640, 480)):
            assert len(localizer.process(cv2.resize(image, size), 0).places) == 3
    upsampled = [m for m in caplog.messages if "upsampled" in m]
    stretched = [m for m in caplog.messages if "stretched" in m]
    assert len(upsampled) == 1 and "64x32" in upsampled[0] and "10.0x by 15.0x" in upsampled[0]
    assert len(stretched) == 1 and "1241x376" in stretched[0]
