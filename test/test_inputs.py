"""What a real camera and a careless user send, checked in the ROS-free core: image headers read before
decoding, 10/12-bit images, camera intrinsics, unset stamps and NaN odometry in the frame gate, map
files whose map.json lies, and saving a map over something that is not a map."""

import json
import zlib
import struct

import cv2
import numpy as np
import pytest

from vpr_ros.core.inputs.gate import FrameGate
from vpr_ros.core.inputs.camera import IntrinsicsError, intrinsics_for
from vpr_ros.core.inputs.images import ImageError, encoded_size, rescale_bit_depth, to_rgb8


def png_header_only(width: int, height: int) -> bytes:
    """A syntactically valid PNG of width x height whose pixel data is a tiny zlib stream (a 'bomb')."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")


def test_encoded_size_reads_png_and_jpeg_headers_without_decoding():
    rgb = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    assert encoded_size(cv2.imencode(".png", rgb)[1].tobytes()) == (64, 48)
    assert encoded_size(cv2.imencode(".jpg", rgb)[1]) == (64, 48)
    progressive = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert encoded_size(progressive) == (64, 48)
    assert encoded_size(png_header_only(20000, 20000)) == (20000, 20000)
    for data, message in [(b"GIF89a....", "neither PNG nor JPEG"), (b"\xff\xd8\xff\xe0\x00", "frame header"),
                          (b"\x89PNG\r\n\x1a\n\x00\x00", "IHDR")]:
        with pytest.raises(ImageError, match=message):
            encoded_size(data)


def test_sixteen_bit_images_scale_by_their_real_range():
    twelve_bit = np.full((40, 40), 4095, np.uint16)
    twelve_bit[0, 0] = 0
    assert to_rgb8(rescale_bit_depth(twelve_bit, 12)).max() == 255  # not 15, as dividing by 257 gave
    assert rescale_bit_depth(np.full((4, 4), 2048, np.uint16), 12)[0, 0] == 128
    ten_bit = np.linspace(0, 1023, 40 * 40).astype(np.uint16).reshape(40, 40)
    auto = rescale_bit_depth(ten_bit, 0)
    assert auto.max() == 255 and auto.dtype == np.uint8 and abs(int(auto[20, 20]) - int(ten_bit[20, 20]) * 255 / 1023) <= 0.5
    assert rescale_bit_depth(np.zeros((4, 4), np.uint16), 0).max() == 0
    assert rescale_bit_depth(np.full((4, 4), 65535, np.uint16), 16).max() == 255
    rgb8 = np.zeros((4, 4, 3), np.uint8)
    assert rescale_bit_depth(rgb8, 12) is rgb8
    with pytest.raises(ValueError, match="bit_depth"):
        rescale_bit_depth(twelve_bit, 4)


K640 = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]


def test_intrinsics_are_checked_and_scaled_to_the_image():
    np.testing.assert_allclose(intrinsics_for(K640, (640, 480), (640, 480)), np.reshape(K640, (3, 3)))
    np.testing.assert_allclose(intrinsics_for(K640, (0, 0), (640, 480)), np.reshape(K640, (3, 3)))
    half = intrinsics_for(K640, (640, 480), (320, 240))  # a plain resize: K scales with it
    assert half[0, 0] == pytest.approx(250.0) and half[0, 2] == pytest.approx(159.75)
    small = [50.0, 0, 32.0, 0, 50.0, 24.0, 0, 0, 1]  # a 64x48 calibration of the same lens, 640x480 frames
    assert intrinsics_for(small, (64, 48), (640, 480))[0, 0] == pytest.approx(500.0)
    for k, cal, image, message in [
        ([np.nan] + K640[1:], (640, 480), (640, 480), "NaN"),
        ([np.inf] + K640[1:], (640, 480), (640, 480), "NaN or infinite"),
        ([1e-9, 0, 320, 0, 1e-9, 240, 0, 0, 1], (640, 480), (640, 480), "field of view"),
        ([1e7, 0, 320, 0, 1e7, 240, 0, 0, 1], (640, 480), (640, 480), "field of view"),
        ([0.0] + K640[1:], (640, 480), (640, 480), "positive"),
        ([500, 0, 900, 0, 500, 240, 0, 0, 1], (640, 480), (640, 480), "principal point"),
        (K640, (640, 480), (640, 360), "aspect ratio"),
        (K640[:8] + [2.0], (640, 480), (640, 480), "pinhole"),
        (K640[:4], (640, 480), (640, 480), "entries"),
    ]:
        with pytest.raises(IntrinsicsError, match=message):
            intrinsics_for(k, cal, image)


def test_frame_gate_never_freezes_on_unset_stamps_and_ignores_nan_poses():
    clock = iter(range(0, 10**12, 10**8))  # 0.1 s per call
    gate = FrameGate(min_interval_s=0.25, clock=lambda: next(clock))
    admitted = [gate.admit(0) for _ in range(12)]  # a driver that never sets stamps
    assert 3 <= sum(admitted) <= 5, admitted
    moving = FrameGate(min_distance_m=1.0)
    pose = np.array([0, 0, 0, 0, 0, 0, 1.0])
    assert moving.admit(1, pose)
    assert not moving.admit(2, pose)  # did not move
    nan_pose = np.full(7, np.nan)
    assert moving.admit(3, nan_pose)  # a NaN pose is no pose: it cannot gate the frame out
    assert moving.admit(4, pose)  # the first posed frame after the gap is the new reference
    assert not moving.admit(5, pose + [0.5, 0, 0, 0, 0, 0, 0])
    assert moving.admit(6, pose + [1.5, 0, 0, 0, 0, 0, 0])


@pytest.fixture(scope="module")
def tiny_map(tmp_path_factory):
    """A 40-frame map of random textured images (small vocabulary): enough to damage and reload."""
    from vpr_ros.core.map.frames import FrameTable
    from vpr_ros.core.build.map_builder import build_map

    rng = np.random.default_rng(3)
    images = [cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (5, 5), 0) for _ in range(40)]
    frames = FrameTable.build(np.arange(1, 41) * 10**9, [f"img{i}" for i in range(40)])
    vpr_map = build_map("tiny", frames, lambda source: images[int(source[3:])], clusters=8, input_size=(160, 120),
                        progress=False)
    return vpr_map, vpr_map.save(tmp_path_factory.mktemp("maps") / "tiny")


def _rewrite(path, edit) -> None:
    meta = json.loads((path / "map.json").read_text())
    edit(meta)
    (path / "map.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["files"]["index.faiss"].pop("bytes"), r"files\['index.faiss'\] must be an object"),
    (lambda m: m.update(files=list(m["files"])), "field 'files' must be an object"),
    (lambda m: m.update(preset_conf=None), "field 'preset_conf' must be an object"),
    (lambda m: m.update(dim="64"), "field 'dim' must be an integer"),
    (lambda m: m.update(num_frames=True), "field 'num_frames' must be an integer"),
    (lambda m: m.pop("fingerprint"), "lacks \\['fingerprint'\\]"),
    (lambda m: m.update(search_params=[1]), "field 'search_params'"),
    (lambda m: m.update(preset_conf={**m["preset_conf"], "no_such_option": 1}), "descriptor cannot be built"),
])
def test_map_json_fields_are_checked_by_name(tiny_map, tmp_path, edit, message):
    import shutil

    from vpr_ros.core.map.store import MapError, VPRMap

    path = tmp_path / "m"
    shutil.copytree(tiny_map[1], path)
    _rewrite(path, edit)
    with pytest.raises(MapError, match=message):
        VPRMap.load(path)


def test_an_index_faiss_cannot_read_is_a_map_error_even_with_a_matching_checksum(tiny_map, tmp_path):
    import hashlib
    import shutil

    from vpr_ros.core.map.store import MapError, VPRMap

    path = tmp_path / "m"
    shutil.copytree(tiny_map[1], path)
    garbage = b"not a faiss index" * 100
    (path / "index.faiss").write_bytes(garbage)
    _rewrite(path, lambda m: m["files"].update({"index.faiss": {"bytes": len(garbage),
                                                               "sha256": hashlib.sha256(garbage).hexdigest()}}))
    with pytest.raises(MapError, match="index.faiss cannot be read"):
        VPRMap.load(path)


def test_saving_over_something_that_is_not_a_map_is_refused_and_leaves_it(tiny_map, tmp_path):
    from vpr_ros.core.map.store import VPRMap

    vpr_map, _ = tiny_map
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"precious")
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    for target in (folder, plain, tmp_path / "sub" / ".." / "notes.txt"):
        with pytest.raises(FileExistsError, match="not a .*map"):
            vpr_map.save(target, overwrite=True)
    assert (folder / "holiday.jpg").read_bytes() == b"precious" and plain.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos"]  # no .old or .tmp left
    saved = vpr_map.save(tmp_path / "sub" / ".." / "real")
    assert saved == tmp_path / "real"
    assert vpr_map.save(saved, overwrite=True) == saved and len(VPRMap.load(saved)) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos", "real"]


def test_a_decompression_bomb_is_refused_before_decoding():
    """A few-kB PNG that would decode to 20000 x 20000 x 3 (1.2 GB): refused from its header."""
    import resource

    pytest.importorskip("rclpy")
    from sensor_msgs.msg import CompressedImage

    from vpr_ros.ros.image_msgs import compressed_to_array

    bomb = CompressedImage(format="png", data=png_header_only(20000, 20000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="20000x20000 px is outside the supported"):
        compressed_to_array(bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # kB: nothing was decoded
