"""Map format, builders (image folder, rosbag) and evaluation against a map, on real images."""

import json
import shutil

import numpy as np
import pytest

from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.build.map_builder import KeyframePolicy, build_map
from vpr_ros.core.build.sources import frames_from_folder, load_image_file
from vpr_ros.core.map.store import MapError, VPRMap
from vpr_ros.core.retrieval.recognizer import search

SMALL = {"clusters": 8, "input_size": (320, 240)}  # a quick vocabulary; the real preset runs in vpr_eval


@pytest.fixture(scope="module")
def corridor_map(tmp_path_factory):
    """A 40-frame map of the Corridor references with synthetic poses (1 m apart along x)."""
    from conftest import require_corridor

    CORRIDOR = require_corridor()
    folder = tmp_path_factory.mktemp("refs")
    for path in sorted((CORRIDOR / "ref").glob("*.jpg"))[:40]:
        shutil.copy(path, folder / path.name)
    csv = folder / "poses.csv"
    lines = ["image,timestamp,x,y,z,latitude,longitude"]
    lines += [f"{p.name},{100 + i * 0.5},{float(i)},0,0,48.0,{11.0 + i * 1e-5}"
              for i, p in enumerate(sorted(folder.glob("*.jpg")))]
    csv.write_text("\n".join(lines) + "\n")
    frames = frames_from_folder(folder, csv)
    return folder, build_map("corridor40", frames, load_image_file, "default", local_features="xfeat",
                             max_keypoints=256, **SMALL)


def test_folder_frames_read_csv(corridor_map):
    folder, vpr_map = corridor_map
    frames = vpr_map.frames
    assert len(vpr_map) == 40 and frames.has_pose.all() and frames.has_gps.all()
    assert frames.stamp_ns[3] == 101_500_000_000 and frames.pose[3].tolist() == [3, 0, 0, 0, 0, 0, 1]
    assert frames.gps[2, :2].tolist() == pytest.approx([48.0, 11.00002])


def test_map_round_trip_and_query(corridor_map, tmp_path):
    folder, vpr_map = corridor_map
    path = vpr_map.save(tmp_path / "m")
    loaded = VPRMap.load(path, preset="default", fingerprint=vpr_map.descriptor.fingerprint())
    np.testing.assert_array_equal(loaded.descriptors, vpr_map.descriptors)
    np.testing.assert_array_equal(loaded.frames.pose, vpr_map.frames.pose)
    assert loaded.frames.sources == vpr_map.frames.sources and loaded.frame_id == "map"
    assert loaded.local_conf == {"extractor": "xfeat", "max_keypoints": 256, "input_size": [640, 480], "dim": 64}
    for column in ("keypoints", "descriptors", "scores", "counts", "image_size"):
        np.testing.assert_array_equal(getattr(loaded.local, column), getattr(vpr_map.local, column))
    # a map frame's own image comes back first with similarity 1
    from vpr_ros.core.retrieval.recognizer import PlaceRecognizer

    image = load_image_file(loaded.frames.sources[17])
    result = PlaceRecognizer(loaded.descriptor, loaded.index).query([image, image], k=3)
    assert result.ids[:, 0].tolist() == [17, 17]
    assert result.similarities[0, 0] == pytest.approx(1.0, abs=1e-4)
    assert set(result.timings_ms) == {"preprocess", "descriptor", "search", "total"}
    assert not list(tmp_path.glob(".m.tmp-*")), "temporary directory left behind"


def test_a_candidate_carries_its_map_frames_metadata(corridor_map):
    from vpr_ros.core.pipeline.results import Hypothesis

    _, vpr_map = corridor_map
    result = search(vpr_map, [load_image_file(vpr_map.frames.sources[12])], k=3)
    hypotheses = [Hypothesis.of(vpr_map.frames, int(key), rank, float(similarity))
                  for rank, (key, similarity) in enumerate(zip(result.ids[0], result.similarities[0]))]
    best = hypotheses[0]
    assert [h.rank for h in hypotheses] == [0, 1, 2] and best.key == 12
    assert best.similarity == pytest.approx(float(result.similarities[0, 0]))
    assert best.stamp_ns == 106_000_000_000 and best.pose == (12.0, 0, 0, 0, 0, 0, 1.0)
    assert best.gps == pytest.approx((48.0, 11.00012, 0.0)) and best.source == vpr_map.frames.sources[12]


def test_stored_local_features_are_real_keypoints(corridor_map):
    _, vpr_map = corridor_map
    assert vpr_map.local.counts.min() > 100, "XFeat found too few keypoints on Corridor"
    frame = vpr_map.local[7]
    assert frame.image_size == (160, 120)  # keypoints in the map image's own pixels, not the 640x480 input
    assert (frame.keypoints >= 0).all() and (frame.keypoints < [160, 120]).all()
    np.testing.assert_allclose(np.linalg.norm(frame.descriptors, axis=1), 1.0, atol=2e-3)
    # the same image extracted again gives the same features (float16 storage aside)
    from vpr_ros.core.matching.local_features import LocalExtractor

    again = LocalExtractor("xfeat", 256).extract([load_image_file(vpr_map.frames.sources[7])])[0]
    np.testing.assert_allclose(again.keypoints, frame.keypoints, atol=1e-3)
    np.testing.assert_allclose(again.descriptors, frame.descriptors, atol=2e-3)


def test_local_features_of_textureless_and_odd_images():
    from vpr_ros.core.inputs.images import ImageError
    from vpr_ros.core.matching.local_features import LocalExtractor, LocalFeatureTable

    extractor = LocalExtractor("xfeat", 128)
    flat, gray16 = np.full((120, 160, 3), 128, np.uint8), (np.random.default_rng(0).integers(0, 65535, (96, 128))
                                                           .astype(np.uint16))
    blank, noisy = extractor.extract([flat, gray16])
    assert len(blank) == 0 and blank.descriptors.shape == (0, 64)
    assert len(noisy) > 0 and (noisy.keypoints < [128, 96]).all()
    table = LocalFeatureTable.build([blank, noisy], 128, 64)
    assert table.counts.tolist() == [0, len(noisy)] and len(table[0]) == 0
    with pytest.raises(ImageError, match="outside the supported"):
        extractor.extract([np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="unknown local feature extractor 'sift'"):
        LocalExtractor("sift")
    # ALIKED in one call on images that yield different keypoint counts (it used to fail to stack them)
    textured = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    few, many = LocalExtractor("aliked", 2048).extract([flat, textured])
    assert len(few) < len(many) and many.descriptors.shape[1] == 128


def test_existing_map_needs_overwrite(corridor_map, tmp_path):
    _, vpr_map = corridor_map
    path = vpr_map.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite"):
        vpr_map.save(path)
    vpr_map.save(path, overwrite=True)
    assert VPRMap.load(path).name == "corridor40"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "index.faiss").unlink(), "missing index.faiss"),
    (lambda p: (p / "local_descriptors.npy").unlink(), "missing local_descriptors.npy"),
    (lambda p: (p / "local_counts.npy").write_bytes((p / "local_counts.npy").read_bytes()[:-4]), "truncated"),
    (lambda p: (p / "map.json").unlink(), "map.json is missing"),
    (lambda p: (p / "descriptors.npy").write_bytes((p / "descriptors.npy").read_bytes()[:-100]), "truncated"),
    (lambda p: (p / "frames.npz").write_bytes(b"x" * (p / "frames.npz").stat().st_size), "checksum"),
    (lambda p: (p / "map.json").write_text("{"), "not valid JSON"),
    (lambda p: (p / "map.json").write_text(json.dumps({**json.loads((p / "map.json").read_text()),
                                                       "format_version": 99})), "format version 99"),
])
def test_damaged_maps_are_refused(corridor_map, tmp_path, damage, message):
    _, vpr_map = corridor_map
    path = vpr_map.save(tmp_path / "m")
    damage(path)
    with pytest.raises(MapError, match=message):
        VPRMap.load(path)


def test_mismatched_maps_are_refused(corridor_map, tmp_path):
    _, vpr_map = corridor_map
    path = vpr_map.save(tmp_path / "m")
    with pytest.raises(MapError, match="preset 'default', not 'effnet-gem'"):
        VPRMap.load(path, preset="effnet-gem")
    with pytest.raises(MapError, match="expected 000000000000"):
        VPRMap.load(path, fingerprint="0" * 64)
    meta = json.loads((path / "map.json").read_text())
    meta["preset_conf"]["clusters"] = 9  # as if built with another vocabulary size
    (path / "map.json").write_text(json.dumps(meta))
    with pytest.raises(MapError):
        VPRMap.load(path)


def test_online_map_grows_and_empty_map_answers_nothing(corridor_map, tmp_path):
    _, vpr_map = corridor_map
    empty = VPRMap.create("online", vpr_map.descriptor, np.zeros((0, vpr_map.descriptor.dim)),
                          FrameTable.build([], []))
    from vpr_ros.core.retrieval.recognizer import PlaceRecognizer

    image = load_image_file(vpr_map.frames.sources[5])
    result = PlaceRecognizer(empty.descriptor, empty.index).query([image], k=2)
    assert result.ids.tolist() == [[-1, -1]]
    with pytest.raises(MapError, match="has no local features"):
        empty.add(vpr_map.descriptors[:10], vpr_map.frames.select(np.arange(10)), vpr_map.local.select(np.arange(10)))
    empty.add(vpr_map.descriptors[:10], vpr_map.frames.select(np.arange(10)))
    assert PlaceRecognizer(empty.descriptor, empty.index).query([image], k=1).ids[0, 0] == 5
    loaded = VPRMap.load(empty.save(tmp_path / "online"))
    assert len(loaded) == 10 and loaded.frames.sources[5] == vpr_map.frames.sources[5]


def test_online_map_with_local_features_needs_them(corridor_map, tmp_path):
    _, vpr_map = corridor_map
    rows = np.arange(20)
    grown = VPRMap.create("grown", vpr_map.descriptor, vpr_map.descriptors[rows], vpr_map.frames.select(rows),
                          local=vpr_map.local.select(rows), local_conf=vpr_map.local_conf)
    more = np.arange(20, 40)
    with pytest.raises(MapError, match="stores local features"):
        grown.add(vpr_map.descriptors[more], vpr_map.frames.select(more))
    grown.add(vpr_map.descriptors[more], vpr_map.frames.select(more), vpr_map.local.select(more))
    loaded = VPRMap.load(grown.save(tmp_path / "grown"))
    np.testing.assert_array_equal(loaded.local.descriptors, vpr_map.local.descriptors)


def test_keyframe_policy():
    pose = np.zeros((6, 7))
    pose[:, 6] = 1
    pose[:, 0] = [0, 0.2, 0.5, 1.2, 1.3, 3.0]
    frames = FrameTable.build(np.arange(6) * 1_000_000_000, [str(i) for i in range(6)], pose=pose)
    assert KeyframePolicy(min_distance_m=1.0).motion_candidates(frames).tolist() == [0, 3, 5]
    assert KeyframePolicy(min_interval_s=2.0).motion_candidates(frames).tolist() == [0, 2, 4]
    assert KeyframePolicy().motion_candidates(frames).tolist() == list(range(6))
    desc = np.array([[1, 0], [1, 0], [0.6, 0.8], [0.6, 0.8], [0, 1]], np.float32)
    assert KeyframePolicy(max_similarity=0.9).appearance_keyframes(desc).tolist() == [0, 2, 4]
    with pytest.raises(ValueError, match="need poses"):
        KeyframePolicy(min_distance_m=1.0).motion_candidates(FrameTable.build([0, 1], ["a", "b"]))
    with pytest.raises(ValueError):
        KeyframePolicy(min_distance_m=-1)


def test_folder_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        frames_from_folder(tmp_path / "absent")
    with pytest.raises(ValueError, match="no images"):
        frames_from_folder(tmp_path)
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 40, 3), np.uint8))
    (tmp_path / "p.csv").write_text("image,x,y,z\nb.png,0,0,0\n")
    with pytest.raises(ValueError, match="'b.png' is not in"):
        frames_from_folder(tmp_path, tmp_path / "p.csv")
    (tmp_path / "p.csv").write_text("image,x,y,z,qx,qy,qz,qw\na.png,0,0,0,1,1,0,0\n")
    with pytest.raises(ValueError, match="unit norm"):
        frames_from_folder(tmp_path, tmp_path / "p.csv")
    (tmp_path / "p.csv").write_text("image,x,y,z\na.png,0,zero,0\n")
    with pytest.raises(ValueError, match="p.csv:2"):
        frames_from_folder(tmp_path, tmp_path / "p.csv")
