"""City-scale maps (issue 25): building on Ray workers and resuming, the on-disk IVF-PQ index presets, maps
that open without reading their bulk (memory maps, checksums in the background), and the inputs at scale:
image folders with a CSV of UTM or lat/lon positions, and many bags."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from bag_writer import write_run
from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.map.index import INDEX_PRESETS, DescriptorIndex
from vpr_ros.core.build.sources import frames_from_folder
from vpr_ros.core.map.store import MapDamaged, MapError, VPRMap
from vpr_ros.core.retrieval.recognizer import search

BIN = Path(sys.executable).parent


def build(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """vpr_build_map as a user runs it: the console script, in its own process."""
    done = subprocess.run([str(BIN / "vpr_build_map"), *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def folder40(corridor_dir, tmp_path_factory) -> Path:
    """40 real Corridor references in a folder of their own."""
    folder = tmp_path_factory.mktemp("images") / "corridor40"
    folder.mkdir()
    for path in sorted((corridor_dir / "ref").glob("*.jpg"))[:40]:
        shutil.copy(path, folder / path.name)
    return folder


BUILD = ["--local-features", "xfeat", "--max-keypoints", "128", "--shard-frames", "4", "--fit-sample", "8", "--quiet"]


@pytest.fixture(scope="module")
def single_process(folder40, tmp_path_factory) -> Path:
    """The default build: this process describes every shard."""
    out = tmp_path_factory.mktemp("single") / "map"
    build(str(out), "--images", str(folder40), *BUILD)
    assert not (out.parent / ".map.build").exists()  # the work folder goes once the map is saved
    return out


def assert_same_map(a: Path, b: Path, queries: list[np.ndarray]) -> None:
    """Descriptors within 1e-5, the same local features, and identical search results."""
    map_a, map_b = VPRMap.load(a), VPRMap.load(b)
    assert map_a.space == map_b.space and len(map_a) == len(map_b)
    assert np.abs(map_a.descriptors - map_b.descriptors).max() <= 1e-5
    np.testing.assert_array_equal(map_a.local.counts, map_b.local.counts)
    np.testing.assert_allclose(map_a.local.keypoints, map_b.local.keypoints, atol=1e-3)
    assert [Path(s).name for s in map_a.frames.sources] == [Path(s).name for s in map_b.frames.sources]
    np.testing.assert_array_equal(search(map_a, queries, k=10).ids, search(map_b, queries, k=10).ids)


def corridor_queries(corridor_dir: Path, count: int = 12) -> list[np.ndarray]:
    from vpr_ros.core.inputs.images import read_image

    return [read_image(p) for p in sorted((corridor_dir / "query").glob("*.jpg"))[:count]]


def test_ray_build_with_two_workers_equals_the_single_process_build(folder40, single_process, corridor_dir,
                                                                    tmp_path):
    out = tmp_path / "map"
    done = build(str(out), "--images", str(folder40), *BUILD[:-1], "--ray", "auto", "--ray-workers", "2")
    assert "error" not in done.stderr.lower()
    # Ray ran: its two actors, processes other than the CLI's, described all 10 shards (not --quiet, to see it)
    assert "describing 10 shards on Ray with 2 CPU workers" in done.stderr, done.stderr[-2000:]
    assert "described 10 shards (40 frames) in 2 Ray worker processes\n" in done.stderr, done.stderr[-2000:]
    assert_same_map(single_process, out, corridor_queries(corridor_dir))
    assert not (tmp_path / ".map.build").exists()


def test_a_ray_build_that_fails_on_a_broken_image_resumes_from_its_shards(folder40, single_process, corridor_dir,
                                                                          tmp_path):
    """A careless user's folder: one image is not an image. The build stops naming it, exit 2, and keeps
    its finished shards; with the image restored, the same command finishes from them."""
    images = tmp_path / "corridor40"
    shutil.copytree(folder40, images)
    broken = sorted(images.glob("*.jpg"))[38]  # in the last shard, outside the fitting sample
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "map"
    args = [str(out), "--images", str(images), *BUILD[:-1], "--ray", "auto", "--ray-workers", "2"]
    failed = build(*args, check=False)
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert broken.name in failed.stderr and "run the same command again to resume" in failed.stderr
    finished = sorted((tmp_path / ".map.build").glob("shard_*.npz"))
    assert 1 <= len(finished) < 10 and not out.exists()
    assert "on Ray with 2 CPU workers" in failed.stderr  # the failure came from Ray's workers
    shutil.copy(folder40 / broken.name, broken)
    resumed = build(*args)
    assert f"{len(finished)} of 10 shards are there" in resumed.stderr
    left = 10 - len(finished)
    assert f"describing {left} shards on Ray" in resumed.stderr and f"described {left} shards" in resumed.stderr
    assert "Ray worker processes\n" in resumed.stderr and " and this one" not in resumed.stderr
    assert_same_map(single_process, out, corridor_queries(corridor_dir))
    assert not (tmp_path / ".map.build").exists()


def test_an_interrupted_single_process_build_resumes(folder40, single_process, corridor_dir, tmp_path):
    """SIGKILL half-way (a power cut), then the same command: the finished shards are kept, not described again."""
    out, work = tmp_path / "map", tmp_path / ".map.build"
    args = [str(BIN / "vpr_build_map"), str(out), "--images", str(folder40), *BUILD[:-1]]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(work.glob("shard_*.npz"))) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = list(work.glob("shard_*.npz"))
    assert 3 <= len(finished) < 10 and not out.exists()
    resumed = build(*args[1:])
    assert f"{len(finished)} of 10 shards are there" in resumed.stderr
    assert_same_map(single_process, out, corridor_queries(corridor_dir))


def test_local_features_are_gathered_on_disk_in_a_work_folder(folder40, single_process, tmp_path):
    """With a work folder (vpr_build_map's), the keyframes' local features are gathered shard by shard into
    memory-mapped files there, not into memory; the map equals one gathered in memory and the CLI's."""
    from vpr_ros.core.inputs.images import read_image
    from vpr_ros.core.build.map_builder import KeyframePolicy, build_map

    args = dict(local_features="xfeat", max_keypoints=128, shard_frames=4, fit_sample_size=8,
                policy=KeyframePolicy(max_similarity=0.8))  # drops some frames: rows are picked across shards
    frames = frames_from_folder(folder40)
    in_memory = build_map("map", frames, read_image, **args)
    on_disk = build_map("map", frames, read_image, work_dir=tmp_path / "work", **args)
    assert 0 < len(on_disk) < len(frames), len(on_disk)
    for column in on_disk.local.COLUMNS:
        array = getattr(on_disk.local, column)
        assert isinstance(array, np.memmap) and Path(array.filename).parent == tmp_path / "work" / "local", column
        assert not isinstance(getattr(in_memory.local, column), np.memmap)
        np.testing.assert_array_equal(array, getattr(in_memory.local, column), err_msg=column)
    saved = VPRMap.load(on_disk.save(tmp_path / "map"))
    cli = VPRMap.load(single_process)
    rows = [[Path(s).name for s in cli.frames.sources].index(Path(s).name) for s in saved.frames.sources]
    for column in on_disk.local.COLUMNS:
        np.testing.assert_array_equal(getattr(saved.local, column), getattr(cli.local, column)[rows], err_msg=column)


def test_a_work_folder_of_another_build_is_started_afresh(folder40, tmp_path):
    from vpr_ros.core.build.shards import ShardStore

    plan = {"frames": 8, "shard_frames": 4}
    store = ShardStore(tmp_path / "work", plan, ["a", "b"])
    store.write(0, 4, {"descriptors": np.zeros((4, 2), np.float32)})
    assert store.pending() == [(4, 8)]
    assert ShardStore(tmp_path / "work", plan, ["a", "b"]).pending() == [(4, 8)]  # the same build: kept
    assert ShardStore(tmp_path / "work", {**plan, "frames": 9}, ["a"]).pending() == [(0, 4), (4, 8), (8, 9)]


# ---- the index ---------------------------------------------------------------------------------------

def route_descriptors(count: int, dim: int, seed: int = 0, route: int = 200) -> np.ndarray:
    """Unit descriptors along routes: a random walk each, so that neighbouring frames look alike (as along a street)."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, route):
        m = min(route, count - start)
        first = rng.standard_normal(dim).astype(np.float32)
        out[start:start + m] = first / np.linalg.norm(first) + np.cumsum(
            rng.standard_normal((m, dim)).astype(np.float32) * (0.25 / np.sqrt(dim)), axis=0)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def ondisk_map(tmp_path_factory):
    """A 30 000-frame map of the ivfpq-100k preset, saved: (path, the map as built, its descriptors)."""
    descriptor = GlobalDescriptor("thumbnail", input_size=(16, 16), pca_dim=0, index="ivfpq-100k")
    vectors = route_descriptors(30_000, descriptor.dim)
    frames = FrameTable.build(np.arange(len(vectors)), [f"synthetic/{i}" for i in range(len(vectors))])
    built = VPRMap.create("city", descriptor, vectors, frames, work_dir=tmp_path_factory.mktemp("index"))
    return built.save(tmp_path_factory.mktemp("maps") / "city"), built, vectors


def test_the_ivfpq_presets_build_an_on_disk_index_that_is_memory_mapped(ondisk_map):
    path, built, vectors = ondisk_map
    meta = json.loads((path / "map.json").read_text())
    factory, params, ondisk = INDEX_PRESETS["ivfpq-100k"]
    assert meta["index_factory"] == factory and meta["search_params"] == params and meta["index_ondisk"] and ondisk
    assert {"index.faiss", "index.ivfdata"} <= set(meta["files"])
    index_bytes = (path / "index.faiss").stat().st_size + (path / "index.ivfdata").stat().st_size
    assert index_bytes / len(vectors) <= 128, index_bytes / len(vectors)
    loaded = VPRMap.load(path, mmap=True)
    assert isinstance(loaded.descriptors, np.memmap)
    invlists = faiss.extract_index_ivf(loaded.index.index).invlists
    assert faiss.downcast_InvertedLists(invlists).__class__.__name__ == "OnDiskInvertedLists"
    rng = np.random.default_rng(1)
    queries = vectors[rng.choice(len(vectors), 200, replace=False)] + rng.standard_normal((200, vectors.shape[1])) * 0.03
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    sims, ids = loaded.index.search(queries, 10)
    np.testing.assert_array_equal(ids, built.index.search(queries, 10)[1])
    exact = np.argmax(queries @ vectors.T, axis=1)
    recall = np.mean([e in row for e, row in zip(exact, ids)])
    assert recall >= 0.9, recall
    np.testing.assert_allclose(sims[:, 0], np.einsum("ij,ij->i", queries, vectors[ids[:, 0]]), atol=1e-5)
    unrefined = DescriptorIndex.read(path / "index.faiss", loaded.index.dim, factory, {"nprobe": 64})
    assert np.mean([e in row for e, row in zip(exact, unrefined.search(queries, 10)[1])]) < recall
    with pytest.raises(ValueError, match="read-only"):
        loaded.index.add(vectors[:1])


def test_the_on_disk_index_answers_a_subset_and_refuses_a_damaged_file(ondisk_map, tmp_path):
    path, built, vectors = ondisk_map
    subset = np.zeros(len(vectors), bool)
    subset[5000:5400] = True
    _, ids = VPRMap.load(path).index.search(vectors[5100:5101], 5, subset)
    assert ids[0, 0] == 5100 and subset[ids[0]].all()
    copy = Path(shutil.copytree(path, tmp_path / "copy"))
    with open(copy / "index.ivfdata", "r+b") as handle:
        handle.truncate((copy / "index.ivfdata").stat().st_size - 8)
    with pytest.raises(MapError, match="index.ivfdata has .* bytes"):
        VPRMap.load(copy)


def test_checksums_in_the_background_refuse_a_damaged_map_after_it_opened(ondisk_map, tmp_path):
    path, _, vectors = ondisk_map
    copy = Path(shutil.copytree(path, tmp_path / "copy"))
    with open(copy / "descriptors.npy", "r+b") as handle:  # same size, other bytes: only the checksum sees it
        handle.seek(-4, os.SEEK_END)
        handle.write(b"\x00\x00\x80\x7f")
    with pytest.raises(MapError, match="descriptors.npy does not match its checksum"):
        VPRMap.load(copy, verify_checksums=True)
    opened = VPRMap.load(copy, verify_checksums="background")
    assert opened.checksums.wait(60)
    with pytest.raises(MapDamaged, match="descriptors.npy does not match its checksum"):
        opened.check_intact()
    intact = VPRMap.load(path, verify_checksums="background")
    assert intact.checksums.wait(60) and intact.checksums.error is None
    intact.check_intact()
    assert intact.frames.sources[3] == "synthetic/3"


# ---- inputs at scale ---------------------------------------------------------------------------------

def test_image_folders_with_subfolders_and_a_csv_of_utm_or_lat_lon(folder40, tmp_path):
    root = tmp_path / "city"
    for i, image in enumerate(sorted(folder40.glob("*.jpg"))[:6]):
        (root / f"street_{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / f"street_{i % 2}" / image.name)
    rows = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    utm = tmp_path / "utm.csv"
    utm.write_text("image,easting,northing,altitude,timestamp\n" + "".join(
        f"{name},{396000 + i},{4990000 + 2 * i},{240},{i}\n" for i, name in enumerate(rows)))
    frames = frames_from_folder(root, utm)
    assert [Path(s).relative_to(root).as_posix() for s in frames.sources] == rows and frames.has_pose.all()
    np.testing.assert_allclose(frames.pose[2], [396002, 4990004, 240, 0, 0, 0, 1])
    latlon = tmp_path / "gps.csv"
    latlon.write_text("image,lat,lon\n" + "".join(f"{Path(n).name},45.06{i},7.66{i}\n" for i, n in enumerate(rows)))
    frames = frames_from_folder(root, latlon)
    assert frames.has_gps.all() and not frames.has_pose.any() and frames.gps[1, 0] == pytest.approx(45.061)
    swapped = tmp_path / "swapped.csv"
    swapped.write_text(f"image,latitude,longitude\n{rows[0]},396000,4990000\n")
    with pytest.raises(ValueError, match="easting/northing"):
        frames_from_folder(root, swapped)
    both = tmp_path / "both.csv"
    both.write_text(f"image,x,y,z,easting,northing\n{rows[0]},1,2,3,4,5\n")
    with pytest.raises(ValueError, match="not both"):
        frames_from_folder(root, both)


def test_a_map_from_many_bags_keeps_a_session_per_bag(corridor_dir, tmp_path):
    images = sorted((corridor_dir / "ref").glob("*.jpg"))
    for name, part in (("monday", images[:12]), ("tuesday", images[12:24]), ("friday", images[24:36])):
        write_run(tmp_path / name, part, lambda t: 0.5 * t)
    out = tmp_path / "fleet"
    build(str(out), "--bag", str(tmp_path / "monday"), "--bag", str(tmp_path / "tuesday"), "--bag",
          str(tmp_path / "friday"), "--image-topic", "/camera/image_raw", "--pose-topic", "/odom", "--robot", "r1",
          "--local-features", "none", "--quiet")
    fleet = VPRMap.load(out)
    assert [(s.id, s.robot) for s in fleet.frames.sessions] == [("monday", "r1"), ("tuesday", "r1"), ("friday", "r1")]
    assert np.bincount(fleet.frames.session).tolist() == [12, 12, 12] and fleet.frames.has_pose.all()
    same_name = tmp_path / "again" / "monday"
    shutil.copytree(tmp_path / "monday", same_name)
    refused = build(str(tmp_path / "x"), "--bag", str(tmp_path / "monday"), "--bag", str(same_name), "--image-topic",
                    "/camera/image_raw", "--local-features", "none", "--quiet", check=False)
    assert refused.returncode == 2 and "different names" in refused.stderr


@pytest.mark.parametrize("script", ["vpr_build_map", "vpr_merge_maps", "vpr_eval", "vpr_sim", "vpr_demo",
                                    "vpr_train_uncertainty", "vpr_export", "vpr_doctor", "vpr_folder_to_bag"])
def test_every_console_script_prints_its_help(script):
    done = subprocess.run([str(BIN / script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]


def test_an_ivfpq_preset_on_a_map_too_small_for_it_is_refused_with_the_reason(folder40, tmp_path):
    done = build(str(tmp_path / "map"), "--images", str(folder40), "--index", "ivfpq-1m", "--local-features", "none",
                 "--quiet", check=False)
    assert done.returncode == 2 and "needs at least 4096 frames" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "map").exists()


def test_the_node_answers_from_an_on_disk_map_as_the_core_does(corridor_dir, tmp_path):
    """The console script with the shipped params file (re-ranking off: the map has no local features) on a
    map of real Corridor frames among 30 000 synthetic ones in an ivfpq-100k index: its hypotheses are the
    ones VPRMap.query gives in this process; SIGINT ends it with exit code 0."""
    from conftest import REPO
    from test_node import MSGS, image_msg, listen, node_process, publish_until
    from vpr_ros.core.inputs.images import batch_to_tensor, read_image

    if MSGS is None:
        pytest.skip("vpr_ros_interfaces is not built: no hypotheses topic to listen to")
    descriptor = GlobalDescriptor("thumbnail", input_size=(16, 16), pca_dim=0, index="ivfpq-100k")
    refs = sorted((corridor_dir / "ref").glob("*.jpg"))
    real = descriptor.describe(batch_to_tensor([read_image(p) for p in refs], descriptor.input_size))
    vectors = np.concatenate([real, route_descriptors(30_000, descriptor.dim)])
    sources = [str(p) for p in refs] + [f"synthetic/{i}" for i in range(30_000)]
    path = VPRMap.create("city", descriptor, vectors, FrameTable.build(np.arange(len(vectors)), sources),
                         work_dir=tmp_path / "work").save(tmp_path / "city")
    query = read_image(sorted((corridor_dir / "query").glob("*.jpg"))[20])
    expected = search(VPRMap.load(path), [query], k=5).ids[0]
    command = [str(BIN / "vpr_localizer"), "--ros-args", "--params-file", str(REPO / "config" / "localize.yaml"),
               "-p", f"map_path:={path}", "-p", "rerank:=off", "-p", "image_topic:=/city/image",
               "-p", "qos_reliability:=reliable"]
    with node_process(command) as (probe, executor, ended):
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        publish_until(probe, executor, "/city/image", image_msg(query, 5 * 10**9), lambda: hyps)
        keys = [h.map_key for h in hyps[0].hypotheses]
    assert keys[0] == expected[0] and len(set(keys) & set(expected.tolist())) >= 4, (keys, expected)
    assert ended["returncode"] == 0, ended["output"]


def test_a_map_found_damaged_in_the_background_stops_the_node(ondisk_map, tmp_path):
    """map_checksums background: the node opens the map at once; when the checksum thread finds a damaged file
    the node stops by itself, logs it as fatal and exits 1 (it never answers from the damaged map)."""
    from conftest import REPO

    path, _, _ = ondisk_map
    copy = Path(shutil.copytree(path, tmp_path / "copy"))
    with open(copy / "descriptors.npy", "r+b") as handle:
        handle.seek(-4, os.SEEK_END)
        handle.write(b"\x00\x00\x80\x7f")
    command = [str(BIN / "vpr_localizer"), "--ros-args", "--params-file", str(REPO / "config" / "localize.yaml"),
               "-p", f"map_path:={copy}", "-p", "rerank:=off", "-p", "map_checksums:=background"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "descriptors.npy does not match its checksum" in output and "processing loop stopped" in output


def test_an_on_disk_index_is_refused_for_slam_merge_and_append(ondisk_map, folder40, tmp_path):
    """An on-disk IVF-PQ index cannot grow: slam mode, vpr_merge_maps and vpr_build_map --append each refuse it
    with the reason (docs/city_scale.md), and the map on disk is left as it was."""
    from vpr_ros.core.config import LocalizerConfig
    from vpr_ros.core.pipeline.localizer import Localizer
    from vpr_ros.core.build.sessions import merge_maps

    path, _, _ = ondisk_map
    copy = Path(shutil.copytree(path, tmp_path / "city"))
    before = {p.name: p.stat().st_mtime_ns for p in copy.iterdir()}
    loaded = VPRMap.load(copy)
    with pytest.raises(ValueError, match="on-disk IVF.* index, which cannot grow: slam adds its keyframes"):
        Localizer(LocalizerConfig(mode="slam", rerank="off", preset="thumbnail"), loaded)
    with pytest.raises(MapError, match="on-disk IVF.* index, which cannot grow"):
        merge_maps([loaded, VPRMap.load(copy)], "twice")
    merged = subprocess.run([str(BIN / "vpr_merge_maps"), str(copy), str(path), str(tmp_path / "merged")],
                            capture_output=True, text=True, timeout=300)
    assert merged.returncode == 2 and "cannot grow" in merged.stderr, merged.stderr[-2000:]
    appended = build("--append", str(copy), "--images", str(folder40), "--local-features", "none", "--quiet",
                     check=False)
    assert appended.returncode == 2 and "cannot grow" in appended.stderr, appended.stderr[-2000:]
    assert "resume" not in appended.stderr  # refused before describing anything (it once built and failed late)
    assert {p.name: p.stat().st_mtime_ns for p in copy.iterdir()} == before
    assert not (tmp_path / "merged").exists()
