"""Every refusal says what happened and what to do (issue 38, cases 3-12), fed the way a robot or a careless
user feeds it: the node as its console script with a params file in its own process, the command-line tools
as a user types them, damaged map files on disk."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import corridor40_map, spin_until

rclpy = pytest.importorskip("rclpy")
from test_node import MSGS, RELIABLE, image_msg, listen, node_process, publish_until  # noqa: E402
from test_node_robot import _exited, call, console_script, params_file  # noqa: E402

needs_interfaces = pytest.mark.skipif(MSGS is None, reason="vpr_ros_interfaces is not built")


@pytest.fixture(scope="module")
def saved_map(corridor_dir, tmp_path_factory):
    """The 40-frame Corridor map saved with keypoint depths (a constant 3 m), as a depth camera's map is."""
    vpr_map = corridor40_map(corridor_dir)
    vpr_map.local.depth = np.full(vpr_map.local.scores.shape, 3.0, np.float32)
    return vpr_map.save(tmp_path_factory.mktemp("refusals") / "corridor40")


@pytest.fixture(scope="module")
def images(corridor_dir):
    """(unused, the first 40 Corridor queries), as test_node's fixture."""
    from vpr_ros.core.inputs.images import read_image

    return None, [read_image(p) for p in sorted((corridor_dir / "query").glob("*.jpg"))[:40]]


def _damaged_copy(source: Path, target: Path, name: str, content: bytes) -> Path:
    """A copy of the map whose file `name` holds `content`, with map.json's size and checksum updated (so only
    the file's own reader can tell)."""
    shutil.copytree(source, target)
    (target / name).write_bytes(content)
    meta = json.loads((target / "map.json").read_text())
    meta["files"][name] = {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    (target / "map.json").write_text(json.dumps(meta))
    return target


def test_a_damaged_array_file_is_named_and_unpickling_is_never_suggested(saved_map, tmp_path):
    """Case 5 in the core: random bytes in local_depth.npy (checksum updated) name the file; numpy's
    "allow_pickle" advice, which would load untrusted code, is not passed on."""
    from vpr_ros.core.map.store import MapError, VPRMap

    size = (saved_map / "local_depth.npy").stat().st_size
    bad = _damaged_copy(saved_map, tmp_path / "bad", "local_depth.npy", np.random.default_rng(0).bytes(size))
    with pytest.raises(MapError) as caught:
        VPRMap.load(bad)
    assert "local_depth.npy" in str(caught.value) and "pickle" not in str(caught.value), caught.value


def test_faiss_errors_lose_their_stray_errno_text(saved_map, tmp_path):
    """Case 9 in the core: a truncated index.faiss says it ends early, not "(No such file or directory)" or
    "(Success)" (the errno of some earlier call that faiss appends)."""
    from vpr_ros.core.map.store import MapError, VPRMap

    data = (saved_map / "index.faiss").read_bytes()
    bad = _damaged_copy(saved_map, tmp_path / "short", "index.faiss", data[: len(data) // 2])
    with pytest.raises(MapError) as caught:
        VPRMap.load(bad)
    text = str(caught.value)
    assert "index.faiss" in text and "ends early" in text, text
    assert not text.endswith(")") or "(read" in text, text
    assert "No such file" not in text and "(Success)" not in text and "Error in" not in text, text


def test_saving_where_nothing_can_be_written_names_the_path_and_why(saved_map, tmp_path):
    """Case 6 in the core: not the temporary folder's errno text, but which path and why."""
    from vpr_ros.core.map.store import VPRMap

    vpr_map = VPRMap.load(saved_map)
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(OSError) as caught:
        vpr_map.save(tmp_path / "plain.txt" / "map")
    assert str(caught.value) == (f"cannot save the map to {tmp_path / 'plain.txt' / 'map'}: {tmp_path / 'plain.txt'} "
                                 "is a file, not a folder"), caught.value
    with pytest.raises(OSError) as caught:
        vpr_map.save("/proc/vpr_map")
    assert "/proc/vpr_map" in str(caught.value) and "the folder /proc is not writable" in str(caught.value)
    assert not str(caught.value).startswith("[Errno") and ".tmp-" not in str(caught.value), caught.value


@needs_interfaces
def test_the_node_says_what_it_uses_and_where_a_refusal_came_from(saved_map, images, tmp_path):
    """Cases 3-6 and 9 through the console script with a params file:
    - CameraInfo with NaN cx after a good one: the log says the last good calibration stays in use (it did
      say "frames are verified without a pose", which was not true);
    - GPS priors refused name the NavSatFix topic (they named the pose-prior topic), and a latitude of 95
      degrees is refused (it was accepted silently);
    - vpr/load_map of a map with random bytes in local_depth.npy names the file and never suggests unpickling;
      of a truncated index.faiss, no stray "(No such file or directory)";
    - vpr/save_map to /proc/x or under a plain file says which path cannot be written and why."""
    from sensor_msgs.msg import CameraInfo, NavSatFix

    size = (saved_map / "local_depth.npy").stat().st_size
    depth_bad = _damaged_copy(saved_map, tmp_path / "depth_bad", "local_depth.npy",
                              np.random.default_rng(1).bytes(size))
    index = (saved_map / "index.faiss").read_bytes()
    index_bad = _damaged_copy(saved_map, tmp_path / "index_bad", "index.faiss", index[: len(index) // 3])
    (tmp_path / "a_file").write_text("not a folder")
    file = params_file(tmp_path, map_path=str(saved_map), image_topic="/robot/image", qos_reliability="reliable",
                       camera_info_topic="/robot/camera_info", prior_topic="/robot/prior",
                       prior_gps_topic="/robot/fix")
    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        publish_until(probe, executor, "/robot/image", image_msg(images[1][20], 5 * 10**9), lambda: hyps)
        info_pub = probe.create_publisher(CameraInfo, "/robot/camera_info", RELIABLE)
        fix_pub = probe.create_publisher(NavSatFix, "/robot/fix", RELIABLE)
        assert spin_until(executor, lambda: info_pub.get_subscription_count() and fix_pub.get_subscription_count(), 30)
        good = CameraInfo(width=160, height=120, k=[100.0, 0, 79.5, 0, 100.0, 59.5, 0, 0, 1])
        broken = CameraInfo(width=160, height=120, k=[100.0, 0, float("nan"), 0, 100.0, 59.5, 0, 0, 1])
        info_pub.publish(good)
        spin_until(executor, lambda: False, 0.5)
        info_pub.publish(broken)
        no_fix = NavSatFix(latitude=47.0, longitude=8.0, position_covariance_type=2)
        no_fix.status.status = -1
        north_of_the_pole = NavSatFix(latitude=95.0, longitude=8.0, position_covariance=[4.0, 0, 0, 0, 4.0, 0, 0, 0, 9.0],
                                      position_covariance_type=2)
        north_of_the_pole.status.status = 0  # STATUS_FIX (newer sensor_msgs default to STATUS_UNKNOWN)
        for msg in (no_fix, north_of_the_pole):
            fix_pub.publish(msg)
            spin_until(executor, lambda: False, 0.3)
        loaded = [call(probe, executor, MSGS.LoadMap, "vpr/load_map", MSGS.LoadMap.Request(map_path=str(path)))
                  for path in (depth_bad, index_bad)]
        saved = [call(probe, executor, MSGS.SaveMap, "vpr/save_map", MSGS.SaveMap.Request(map_path=path))
                 for path in ("/proc/x", str(tmp_path / "a_file" / "map"))]
        hyps.clear()  # the node still answers from the map it had
        publish_until(probe, executor, "/robot/image", image_msg(images[1][21], 6 * 10**9), lambda: hyps)
    out = ended["output"]
    assert ended["returncode"] == 0, out
    assert "the last good calibration stays in use (fx 100, fy 100, cx 79.5, cy 59.5 at 160x120)" in out, out
    assert "frames are verified without a pose" not in out, out
    assert "position prior on /robot/fix ignored: the receiver has no fix" in out, out
    assert "position prior on /robot/fix ignored: latitude 95" in out, out
    assert "/robot/prior" not in out.split("vpr_localizer: mode")[-1].replace("prior_topic", ""), out
    assert not any(r.success for r in loaded + saved)
    assert "local_depth.npy" in loaded[0].message and "pickle" not in loaded[0].message, loaded[0].message
    assert "index.faiss" in loaded[1].message and "ends early" in loaded[1].message, loaded[1].message
    assert "No such file" not in loaded[1].message and "(Success)" not in loaded[1].message, loaded[1].message
    assert "cannot save the map to /proc/x: the folder /proc is not writable" in saved[0].message, saved[0].message
    assert f"{tmp_path / 'a_file'} is a file, not a folder" in saved[1].message, saved[1].message
    assert ".tmp-" not in saved[0].message + saved[1].message


@needs_interfaces
def test_a_map_file_damaged_while_the_node_runs_stops_it_on_sigusr1(saved_map, images, tmp_path):
    """Case 12: a map verified before it opened (map_checksums before) is damaged on disk while the node serves
    from it (bytes flipped in the memory-mapped local descriptors, same size); SIGUSR1 makes the node verify
    the files it reads from disk again, and it stops with exit code 1 naming the file, as for a damage found
    at start. At be683cd nothing ever looked again."""
    shutil.copytree(saved_map, tmp_path / "map")
    file = params_file(tmp_path, map_path=str(tmp_path / "map"), image_topic="/robot/image", qos_reliability="reliable",
                       map_checksums="before", map_recheck_s=0.0)
    command = [console_script(), "--ros-args", "--params-file", file]
    with node_process(command) as (probe, executor, ended):
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        publish_until(probe, executor, "/robot/image", image_msg(images[1][20], 5 * 10**9), lambda: hyps)
        target = tmp_path / "map" / "local_descriptors.npy"
        data = bytearray(target.read_bytes())
        data[-64:] = bytes(255 - b for b in data[-64:])
        with target.open("r+b") as handle:  # in place, as a failing disk would: the mapping stays valid
            handle.seek(len(data) - 64)
            handle.write(bytes(data[-64:]))
        pids = subprocess.run(["pgrep", "-f", file], capture_output=True, text=True).stdout.split()
        assert pids, "the node's process was not found"
        for pid in pids:
            os.kill(int(pid), signal.SIGUSR1)
        assert spin_until(executor, lambda: all(_exited(int(pid)) for pid in pids), 60), \
            "the node kept serving from a damaged map"
    assert ended["returncode"] == 1, ended["output"]
    assert "local_descriptors.npy does not match its checksum" in ended["output"], ended["output"]


def test_a_map_checksum_watch_finds_damage_on_its_schedule(saved_map, tmp_path):
    """Case 12 in the core: with recheck_s the files read from disk are verified again on a schedule, and a
    damage found makes the next query raise MapDamaged."""
    from vpr_ros.core.map.store import MapDamaged, VPRMap

    shutil.copytree(saved_map, tmp_path / "map")
    vpr_map = VPRMap.load(tmp_path / "map", verify_checksums=True, recheck_s=0.2)
    try:
        assert vpr_map.checksums is not None
        assert spin_until_true(lambda: vpr_map.checksums.rechecks >= 1, 20)
        vpr_map.checksums.raise_if_damaged()
        with (tmp_path / "map" / "local_depth.npy").open("r+b") as handle:
            handle.seek(-4, os.SEEK_END)
            handle.write(np.float32(7.0).tobytes())
        assert spin_until_true(lambda: vpr_map.checksums.error is not None, 20)
        with pytest.raises(MapDamaged, match="local_depth.npy"):
            vpr_map.check_intact()
    finally:
        vpr_map.checksums.stop()
    assert VPRMap.load(saved_map).checksums is None  # without recheck_s (vpr_eval, tools): nothing watches


def spin_until_true(predicate, timeout_s: float) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)
    return predicate()


def test_a_single_image_is_refused_as_a_map_naming_the_minimum(corridor_dir, tmp_path):
    """Case 7: vpr_build_map of one image exited 0 with a 1-frame map and faiss's training warning; now it exits 2
    and says how many images the vocabulary needs."""
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(corridor_dir / "ref" / "0000000.jpg", folder)
    run = subprocess.run([str(Path(sys.executable).parent / "vpr_build_map"), str(tmp_path / "map"), "--images",
                          str(folder), "--quiet"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "need at least 2496 (39 per cluster)" in run.stderr and "at least 7 images" in run.stderr, run.stderr
    assert not (tmp_path / "map").exists()


def test_vpr_eval_given_an_image_folder_as_a_bag_says_what_to_use(corridor_dir, saved_map):
    """Case 8: not rosbags' "Expected metadata file ... does not exist", but that it is no bag and what to use."""
    run = subprocess.run([str(Path(sys.executable).parent / "vpr_eval"), "--map", str(saved_map), "--bag",
                          str(corridor_dir / "query"), "--image-topic", "/camera/image_raw", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "is not a bag: it is a folder of 111 images" in run.stderr, run.stderr
    assert "--dataset" in run.stderr and "vpr_folder_to_bag" in run.stderr and "metadata file" not in run.stderr


def test_device_query_auto_keeps_the_measured_stage_pipeline_on_cuda(saved_map):
    """Case 11: on a CUDA machine `auto` used to select the whole-query device chain, which has never run on a
    GPU; now only `on` selects it (its choice is made from the configuration alone, so it is checked here
    without a GPU)."""
    import dataclasses

    from vpr_ros.core.config import LocalizerConfig
    from vpr_ros.core.pipeline.localizer import Localizer
    from vpr_ros.core.pipeline.device_chain import DeviceQuery, device_chain_for
    from vpr_ros.core.map.store import VPRMap

    vpr_map = VPRMap.load(saved_map)
    localizer = Localizer(LocalizerConfig(backend="torch", rerank="xfeat-mnn"), vpr_map)
    for switch, chosen in (("auto", False), ("off", False), ("on", True)):
        config = dataclasses.replace(localizer.config, device="cuda:0", device_query=switch)
        chain = device_chain_for(config, vpr_map, localizer.backend, localizer.reranker)
        assert isinstance(chain, DeviceQuery) is chosen, switch


def test_a_map_saved_over_its_own_path_is_not_taken_for_damage(saved_map, tmp_path):
    """The rechecks verify the files the serving map has mapped, not whatever is under their names later: a
    map saved over the same path (vpr/save_map with overwrite, a slam session appended) must not stop the
    node as damaged."""
    from vpr_ros.core.map.store import VPRMap

    shutil.copytree(saved_map, tmp_path / "map")
    serving = VPRMap.load(tmp_path / "map", verify_checksums=True, recheck_s=0.0)
    replacement = VPRMap.load(saved_map)
    replacement.local.depth = np.full(replacement.local.scores.shape, 5.0, np.float32)  # other bytes, same name
    replacement.save(tmp_path / "map", overwrite=True)
    try:
        serving.checksums.recheck_now()
        assert spin_until_true(lambda: serving.checksums.rechecks >= 1 or serving.checksums.error is not None, 20)
        assert serving.checksums.error is None, serving.checksums.error
        serving.check_intact()
    finally:
        serving.checksums.stop()
