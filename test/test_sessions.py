"""Multi-session maps on real images: descriptor spaces, merging, appending, format version 1, slam across
sessions; and search restricted by a position prior (faiss ID selectors)."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.pipeline.localizer import Localizer
from vpr_ros.core.map.frames import FrameTable, Session
from vpr_ros.core.map.index import DescriptorIndex
from vpr_ros.core.build.map_builder import build_map
from vpr_ros.core.build.sources import load_image_file
from vpr_ros.core.map.store import MapError, VPRMap
from vpr_ros.core.inputs.sync import PositionPrior
from vpr_ros.core.retrieval.prior import RadiusPolicy, RegionFinder
from vpr_ros.core.build.sessions import append_session, merge_maps
from vpr_ros.core.pipeline.results import Hypothesis
from vpr_ros.core.retrieval.recognizer import search

SMALL = {"clusters": 8, "input_size": (320, 240)}


def best(vpr_map, image) -> Hypothesis:
    """The map frame a query image retrieves first, with its metadata."""
    answer = search(vpr_map, [image], k=1)
    return Hypothesis.of(vpr_map.frames, int(answer.ids[0, 0]), 0, float(answer.similarities[0, 0]))


def _frames(paths, first: int) -> FrameTable:
    pose = np.zeros((len(paths), 7))
    pose[:, 0], pose[:, 6] = np.arange(first, first + len(paths)), 1.0
    return FrameTable.build((np.arange(len(paths)) + first + 1) * 10**9, paths, pose=pose)


@pytest.fixture(scope="module")
def sessions(corridor_dir, tmp_path_factory):
    """Map a: references 0..29 (its own vocabulary); b: references 30..59 in a's space, another robot; c: all
    60 at once in a's space; other: references 30..59 with their own vocabulary."""
    paths = sorted((corridor_dir / "ref").glob("*.jpg"))[:60]
    a = build_map("a", _frames(paths[:30], 0), load_image_file, local_features="xfeat", max_keypoints=128,
                  session=Session("day1", "r1"), **SMALL)
    b = build_map("b", _frames(paths[30:], 30), load_image_file, session=Session("day2", "r2"), space=a)
    c = build_map("c", _frames(paths, 0), load_image_file, space=a)
    other = build_map("other", _frames(paths[30:], 30), load_image_file, local_features="xfeat", max_keypoints=128,
                      **SMALL)
    root = tmp_path_factory.mktemp("sessions")
    return {name: m.save(root / name) for name, m in (("a", a), ("b", b), ("c", c), ("other", other))}, paths


def _query(paths, i: int):
    """The other Corridor traversal's image of map reference i (same place within +-2 frames)."""
    return paths[i].parent.parent / "query" / paths[i].name


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_merged_map_equals_one_built_from_both_sessions(sessions, tmp_path):
    maps, paths = sessions
    a, b, c = (VPRMap.load(maps[n]) for n in "abc")
    assert a.space == b.space == c.space and b.local_conf == a.local_conf
    merged = VPRMap.load(merge_maps([a, b], "ab").save(tmp_path / "ab"))
    np.testing.assert_allclose(merged.descriptors, c.descriptors, atol=1e-5)
    queries = c.descriptors[::3] + 0.01
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    assert np.array_equal(merged.index.search(queries, 5)[1], c.index.search(queries, 5)[1])
    assert [str(s) for s in merged.frames.sessions] == ["'day1' (robot 'r1')", "'day2' (robot 'r2')"]
    hyp = best(merged, load_image_file(_query(paths, 45)))  # the other traversal
    assert abs(hyp.key - 45) <= 2 and (hyp.session, hyp.robot) == ("day2", "r2"), hyp
    assert merged.local.depth is None and len(merged.local) == 60
    assert json.loads((tmp_path / "ab" / "map.json").read_text())["sessions"][1] == {"id": "day2", "robot": "r2",
                                                                                    "frames": 30}


def test_merge_tool_refuses_other_spaces_and_leaves_inputs(sessions, tmp_path):
    maps, _ = sessions
    before = {n: _digests(maps[n]) for n in ("a", "other")}
    out = tmp_path / "merged"
    run = subprocess.run([sys.executable, "-m", "vpr_ros.tools.merge_maps", str(maps["a"]), str(maps["other"]),
                          str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "different descriptor spaces" in run.stderr and str(maps["a"]) in run.stderr
    assert str(maps["other"]) in run.stderr and "--descriptor-from" in run.stderr
    assert not out.exists() and {n: _digests(maps[n]) for n in ("a", "other")} == before
    run = subprocess.run([sys.executable, "-m", "vpr_ros.tools.merge_maps", str(maps["a"]), str(maps["b"]), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "60 frames in 2 sessions" in run.stdout and len(VPRMap.load(out)) == 60
    run = subprocess.run([sys.executable, "-m", "vpr_ros.tools.merge_maps", str(maps["a"]), str(out),
                          str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "session 'day1' (robot 'r1') is in both" in run.stderr


def test_append_a_session(sessions, tmp_path):
    maps, _ = sessions
    a, b = VPRMap.load(maps["a"]), VPRMap.load(maps["b"])
    target = a.save(tmp_path / "site")
    path, size = append_session(target, b, "day2")
    grown = VPRMap.load(path)
    assert size == len(grown) == 60 and grown.name == "a" and [s.id for s in grown.frames.sessions] == ["day1", "day2"]
    with pytest.raises(MapError, match="different descriptor spaces"):
        append_session(target, VPRMap.load(maps["other"]), "other")
    assert len(VPRMap.load(target)) == 60  # the refused append left the map as it was


def test_format_version_1_maps_load(sessions, tmp_path):
    """A map as version 1 wrote it (no session column, no sessions list) loads as one session named after it."""
    maps, _ = sessions
    old = VPRMap.load(maps["a"]).save(tmp_path / "v1")
    with np.load(old / "frames.npz") as columns:
        np.savez(old / "frames.npz", **{k: columns[k] for k in columns.files if k != "session"})
    meta = json.loads((old / "map.json").read_text())
    meta["format_version"] = 1
    del meta["sessions"]
    meta["files"]["frames.npz"] = {"bytes": (old / "frames.npz").stat().st_size,
                                   "sha256": hashlib.sha256((old / "frames.npz").read_bytes()).hexdigest()}
    (old / "map.json").write_text(json.dumps(meta))
    loaded = VPRMap.load(old)
    assert [s.id for s in loaded.frames.sessions] == ["a"]
    assert best(loaded, load_image_file(loaded.frames.sources[3])).session == "a"
    meta["format_version"] = 3
    (old / "map.json").write_text(json.dumps(meta))
    with pytest.raises(MapError, match="reads versions 1, 2"):
        VPRMap.load(old)


def test_a_map_written_before_sessions_loads_answers_and_grows(corridor_dir, tmp_path):
    """test/data/map_v1 was written by vpr_ros before sessions (format version 1)."""
    import shutil

    from conftest import REPO

    old = tmp_path / "v1"
    shutil.copytree(REPO / "test" / "data" / "map_v1", old)
    assert json.loads((old / "map.json").read_text())["format_version"] == 1
    loaded = VPRMap.load(old)
    assert len(loaded) == 12 and [str(s) for s in loaded.frames.sessions] == ["'v1_corridor12'"]
    refs = sorted((corridor_dir / "ref").glob("*.jpg"))
    hyp = best(loaded, load_image_file(refs[5]))
    assert (hyp.key, hyp.session) == (5, "v1_corridor12")
    new = build_map("later", _frames(refs[12:20], 12), load_image_file, session=Session("later"), space=loaded)
    grown = VPRMap.load(merge_maps([loaded, new], loaded.name).save(tmp_path / "v2"))
    assert json.loads((tmp_path / "v2" / "map.json").read_text())["format_version"] == 2
    assert len(grown) == 20 and best(grown, load_image_file(refs[15])).session == "later"


def test_slam_closes_loops_against_an_earlier_session(sessions):
    """slam started from map a: revisiting its places closes inter-session loops at once (the recent-frame
    exclusion is for this session's own frames), and the new keyframes join as the configured session."""
    maps, paths = sessions
    config = LocalizerConfig(mode="slam", rerank="xfeat-mnn", session_id="day3", robot_id="r3", temporal_window=0,
                             exclude_recent_frames=10, exclude_recent_s=1e5)
    localizer = Localizer(config, VPRMap.load(maps["a"]))
    stamp = 10**12
    # revisits: the other Corridor traversal at map a's places 10..19 (ground truth: +-2 frames)
    results = [localizer.process(load_image_file(_query(paths, i)), stamp + i * 10**9) for i in range(10, 20)]
    assert all(r.places and r.places[0].hypothesis.session == "day1" for r in results)
    closed = [r.loop.hypothesis.key - (10 + i) for i, r in enumerate(results) if r.loop is not None]
    # measured: 4 closures, offsets -1, -2, -3, -1 (the query traversal trails the references; -3 lies one frame
    # outside the +-2 ground truth). With the map's own images this test saw 8 exact ones: it tested nothing
    assert len(closed) >= 3 and sum(abs(d) <= 2 for d in closed) >= 0.75 * len(closed), closed
    assert all(abs(d) <= 3 for d in closed), closed
    assert localizer.vpr_map.frames.sessions[-1] == Session("day3", "r3") and len(localizer.vpr_map) == 40
    assert not any(r.places and r.places[0].hypothesis.key >= 30 for r in results)  # its own recent frames
    with pytest.raises(ValueError, match="session_id 'day1' is already a session of map a"):
        Localizer(LocalizerConfig(mode="slam", rerank="off", session_id="day1"), VPRMap.load(maps["a"]))


def test_prior_search_is_the_exact_search_of_the_region():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pose = np.zeros((5000, 7))
    pose[:, :2], pose[:, 6] = rng.uniform(0, 1000, (5000, 2)), 1.0
    frames = FrameTable.build(np.arange(5000), [str(i) for i in range(5000)], pose=pose)
    frames.has_pose[:10] = False  # unknown positions cannot be ruled out
    prior = PositionPrior((500.0, 500.0, 0.0), np.eye(3) * 100.0, 0)
    region = RegionFinder(RadiusPolicy(3.0, 10.0, 1000.0), 2.0).region(frames, prior, 0)
    inside = np.hypot(*(pose[:, :2] - 500).T) <= 30.0
    assert np.array_equal(region.mask, inside | ~frames.has_pose) and "within 30 m" in region.note
    query = vectors[:3] + 0.1 * rng.standard_normal((3, 64)).astype(np.float32)
    rows = np.flatnonzero(region.mask)
    truth = rows[np.argsort(-(query @ vectors[rows].T), axis=1)[:, :5]]
    for factory, params in (("Flat", None), ("HNSW32", {"efSearch": 256}), ("IVF16,Flat", {"nprobe": 16})):
        index = DescriptorIndex(64, factory, params)
        index.train(vectors)
        index.add(vectors)
        sims, ids = index.search(query, 5, region.mask)
        assert region.mask[ids[ids >= 0]].all(), factory
        if factory != "HNSW32":  # graph search is approximate; exact ones must agree
            assert np.array_equal(ids, truth), factory
    assert RegionFinder(RadiusPolicy(), 2.0).region(frames, prior, 3 * 10**9).mask is None  # stale
    far = PositionPrior((5000.0, 5000.0, 0.0), np.eye(3), 0)
    assert "no map frame within" in RegionFinder(RadiusPolicy(), 2.0).region(frames, far, 0).note
    with pytest.raises(ValueError, match="finite"):
        PositionPrior((np.nan, 0.0, 0.0), np.eye(3), 0)


def test_localizer_with_a_prior_searches_only_the_region(sessions):
    maps, paths = sessions
    vpr_map = VPRMap.load(maps["a"])
    localizer = Localizer(LocalizerConfig(rerank="off", temporal_window=0, top_k=3), vpr_map)
    image = load_image_file(_query(paths, 20))  # the other traversal at map frame 20 (x = 20)
    near = localizer.process(image, 10**9, prior=PositionPrior((20.0, 0.0, 0.0), np.eye(3), 10**9))
    assert abs(near.places[0].hypothesis.key - 20) <= 2 and near.search_frames == 20
    assert near.search_scope.startswith("prior")
    assert all(abs(p.hypothesis.pose[0] - 20) <= 10 for p in near.places)
    away = localizer.process(image, 10**9, prior=PositionPrior((5.0, 0.0, 0.0), np.eye(3), 10**9))
    assert all(p.hypothesis.pose[0] <= 15 for p in away.places)  # the region is honoured, even against the image
    stale = localizer.process(image, 60 * 10**9, prior=PositionPrior((5.0, 0.0, 0.0), np.eye(3), 10**9))
    assert stale.search_frames is None and "stale" in stale.search_scope
    assert abs(stale.places[0].hypothesis.key - 20) <= 2
    sequence = Localizer(LocalizerConfig(rerank="off", temporal_window=0, top_k=3, sequence_length=3), vpr_map)
    for i in (18, 19, 20):  # sequence ranking keeps to the region too
        result = sequence.process(load_image_file(_query(paths, i)), (i + 1) * 10**9,
                                  prior=PositionPrior((5.0, 0.0, 0.0), np.eye(3), (i + 1) * 10**9))
        assert result.places and all(p.hypothesis.pose[0] <= 15 for p in result.places), i
    assert result.sequence_length == 3


def test_merge_refuses_maps_that_do_not_hold_one_thing_once(sessions):
    """docs/sessions.md's refusals, each naming both maps and what differs: poses in other frames, other local
    features, other cameras, other index types (maps a and b are in one descriptor space; b is changed the way
    a map recorded otherwise would differ)."""
    import dataclasses

    from vpr_ros.core.map.camera import MapCamera

    maps, _ = sessions
    a = VPRMap.load(maps["a"])
    camera = MapCamera(np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]]), (160, 120), "camera_optical")
    hnsw = DescriptorIndex(a.descriptor.dim, "HNSW32")
    b = VPRMap.load(maps["b"])
    hnsw.add(b.descriptors)
    variants = {
        "not share a coordinate frame": dataclasses.replace(b, frame_id="odom"),
        "store different local features": dataclasses.replace(b, local=None, local_conf=None),
        "record different cameras": dataclasses.replace(b, camera=camera),
        "use different index types": dataclasses.replace(b, index=hnsw),
    }
    for reason, other in variants.items():
        with pytest.raises(MapError, match=reason) as caught:
            merge_maps([a, other], "ab", ["map-a", "map-b"])
        assert "map-a" in str(caught.value) and "map-b" in str(caught.value), caught.value
    assert len(merge_maps([a, b], "ab")) == 60  # unchanged, they merge
