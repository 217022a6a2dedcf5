"""Cameras of other shapes and sizes: maps keep the camera's aspect ratio (nothing stretched), local
features stay in the image's own pixels, and the thumbnail preset serves low-resolution cameras."""

import logging

import numpy as np
import pytest
import torch

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.descriptors.presets import camera_input_size
from vpr_ros.core.inputs.images import read_image, resize
from vpr_ros.core.pipeline.localizer import Localizer
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.build.map_builder import build_map

SECOND = 10**9


@pytest.mark.parametrize("camera, preset, size", [
    ((640, 480), "default", (640, 480)),  # 4:3 cameras keep the preset's size: old maps are unchanged
    ((1241, 376), "default", (992, 320)),  # KITTI
    ((1920, 1080), "default", (736, 416)),
    ((376, 1241), "default", (320, 992)),  # portrait
    ((64, 32), "thumbnail", (64, 32)),
    ((640, 480), "thumbnail", (56, 40)),
    ((1241, 376), "salad-dinov2-8448", (322, 322)),  # a published network keeps its trained size
])
def test_input_size_keeps_the_cameras_aspect(camera, preset, size):
    assert camera_input_size(preset, *camera) == size
    if preset == "default":
        w, h = size
        assert w % 32 == 0 and h % 32 == 0 and abs(w / h - camera[0] / camera[1]) / (camera[0] / camera[1]) < 0.08
        assert abs(w * h - 640 * 480) / (640 * 480) < 0.06


def _wide(corridor_dir, count: int, traversal: str = "ref") -> list[np.ndarray]:
    """Wide real frames: two neighbouring Corridor images side by side (320 x 120, 8:3)."""
    paths = sorted((corridor_dir / traversal).glob("*.jpg"))
    return [np.concatenate([read_image(paths[i]), read_image(paths[i + 1])], axis=1) for i in range(count)]


def test_a_wide_camera_map_is_not_stretched(corridor_dir, caplog):
    images = _wide(corridor_dir, 24)
    frames = FrameTable.build(np.arange(len(images)) * SECOND, [str(i) for i in range(len(images))])
    vpr_map = build_map("wide", frames, lambda source: images[int(source)], clusters=16, local_features="xfeat")
    assert vpr_map.descriptor.input_size == (896, 352)
    assert tuple(vpr_map.local_conf["input_size"]) == (896, 352)  # local features at the same shape: joint graph
    for key in range(len(vpr_map)):
        features = vpr_map.local[key]
        assert len(features) > 50
        assert (features.keypoints >= 0).all() and (features.keypoints[:, 0] < 320).all()
        assert (features.keypoints[:, 1] < 120).all()
        assert features.keypoints[:, 0].max() > 240  # both halves of the wide frame have keypoints
    with caplog.at_level(logging.WARNING, logger="vpr_ros"):
        localizer = Localizer(LocalizerConfig(rerank="xfeat-mnn", top_k=3), vpr_map)
        queries = _wide(corridor_dir, 24, "query")  # the other traversal: real revisits
        results = [localizer.process(queries[i], i * SECOND) for i in range(2, 22)]
    assert not any("stretched" in m for m in caplog.messages), caplog.messages
    # a wide frame joins places i and i+1, each true within +-2 frames (ground_truth.csv): the same place is
    # within +-3 frames; every one is found there and verified (20 frames; 27 inliers at the least)
    for i, result in zip(range(2, 22), results):
        best = result.places[0]
        assert abs(best.hypothesis.key - i) <= 3 and best.verified and best.verification.inlier_count >= 20, (i, best)


def test_the_thumbnail_preset_ignores_each_patchs_brightness_and_contrast():
    descriptor = GlobalDescriptor("thumbnail")
    assert descriptor.input_size == (64, 32) and descriptor.dim == 64 * 32
    images = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.2
    darker = images * 0.4 + 0.05  # dusk: less light, less contrast
    a, b = descriptor.describe(images), descriptor.describe(darker)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.einsum("ij,ij->i", a, b).min() > 0.99
    assert float(a[0] @ a[1]) < 0.2  # different images stay different


def test_a_64x32_camera_localizes_by_sequence_with_thumbnails(corridor_dir, caplog):
    """A 64 x 32 camera: the thumbnail preset takes its frames as they are (no upsampling warning), and
    sequence matching ranks the real Corridor traversal better than single thumbnails do."""
    from pathlib import Path

    small = lambda path: resize(read_image(path), (64, 32))
    paths = sorted((corridor_dir / "ref").glob("*.jpg"))
    frames = FrameTable.build(np.arange(len(paths)) * SECOND, paths)
    vpr_map = build_map("thumbs", frames, lambda source: small(source), "thumbnail")
    assert vpr_map.descriptor.input_size == (64, 32)
    lines = (corridor_dir / "ground_truth.csv").read_text().splitlines()[1:]
    truth = [{int(Path(ref).stem) for ref in line.split(",")[1].split()} for line in lines]
    config = LocalizerConfig(rerank="off", top_k=5, sequence_length=15, sequence_max_step=3)
    with caplog.at_level(logging.WARNING, logger="vpr_ros"):
        localizer = Localizer(config, vpr_map)
        results = [localizer.process(small(corridor_dir / line.split(",")[0]), i * SECOND)
                   for i, line in enumerate(lines)]
    assert not any("upsampled" in m or "stretched" in m for m in caplog.messages), caplog.messages
    ranked = [(r, t) for r, t in zip(results, truth) if r.sequence_length]
    single = np.mean([int(r.single_keys[0]) in t for r, t in ranked])
    sequence = np.mean([int(r.global_keys[0]) in t for r, t in ranked])
    assert sequence >= single + 0.05, (single, sequence)  # 0.47 vs 0.34
