"""Map frames from real rosbag2 files written with rosbags: images, interpolated poses, TF, GPS."""

import json

import numpy as np
import pytest

from bag_writer import write_run
from vpr_ros.core.build.bag_source import interpolate_poses, read_bag_frames


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two traversals of the Corridor as bags: references (raw images), queries (JPEG compressed)."""
    from conftest import require_corridor

    CORRIDOR = require_corridor()
    root = tmp_path_factory.mktemp("bags")
    refs = sorted((CORRIDOR / "ref").glob("*.jpg"))[:60]
    queries = sorted((CORRIDOR / "query").glob("*.jpg"))[:60]
    write_run(root / "ref", refs, lambda f: f)
    write_run(root / "query", queries, lambda f: f, compressed=True)
    return root


def test_images_get_interpolated_poses_tf_and_gps(runs):
    bag = read_bag_frames(runs / "ref", "/camera/image_raw", pose_topic="/odom", gps_topic="/fix")
    frames = bag.frames
    assert len(frames) == 60 and frames.has_pose.all() and frames.has_gps.all()
    np.testing.assert_allclose(frames.pose[:, 0], np.arange(60), atol=1e-9)  # halfway between samples
    assert frames.stamp_ns[0] == 1_000_000_000_000  # the header stamp, not the log time (+1 us)
    assert frames.stamp_ns[1] - frames.stamp_ns[0] == 500_000_000
    np.testing.assert_allclose(frames.gps[3], [48.0, 11.00003, 500.0])
    tf = read_bag_frames(runs / "ref", "/camera/image_raw", tf_frames=("map", "base_link")).frames
    np.testing.assert_allclose(tf.pose, frames.pose)
    image = bag.loader()(frames.sources[7])
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8


def test_a_bag_loader_gives_each_frame_in_any_order(runs):
    """A build worker asks for its shard's frames, then another shard's (ahead or behind): the loader reopens
    the bag at the asked time and gives the same image as a reading in order."""
    bag = read_bag_frames(runs / "query", "/camera/image/compressed")
    in_order = list(bag.frames.sources)
    sequential = bag.loader()
    expected = [sequential(source) for source in in_order]
    loader = bag.loader()
    order = [40, 41, 42, 5, 6, 59, 0, 30, 30, 12]
    for i in order:
        np.testing.assert_array_equal(loader(in_order[i]), expected[i], err_msg=f"frame {i}")
    assert len({image.tobytes() for image in expected}) == len(expected)  # frames that differ
    with pytest.raises(ValueError, match="not found"):
        loader(in_order[3].rsplit("@", 1)[0] + f"@{int(in_order[3].rsplit('@', 1)[1]) + 1}")


def test_bag_errors_name_the_problem(runs, tmp_path):
    with pytest.raises(ValueError, match="'/nope' is not in the bag"):
        read_bag_frames(runs / "ref", "/nope")
    with pytest.raises(ValueError, match="has type nav_msgs/msg/Odometry"):
        read_bag_frames(runs / "ref", "/odom")
    with pytest.raises(ValueError, match="no poses found"):
        read_bag_frames(runs / "ref", "/camera/image_raw", tf_frames=("odom", "camera"))
    with pytest.raises(FileNotFoundError):
        read_bag_frames(tmp_path / "absent", "/camera/image_raw")


def test_interpolation_leaves_gaps_unposed():
    stamps = np.array([0, 10, 1000], np.int64)
    samples = np.array([[0, 0, 0, 0, 0, 0, 1], [10, 0, 0, 0, 0, 0, 1], [20, 0, 0, 0, 0, 1, 0]], float)
    out = interpolate_poses(stamps, samples, np.array([5, 12, 500, 2000]), max_gap_ns=20)
    np.testing.assert_allclose(out[0], [5, 0, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(out[1], [10, 0, 0, 0, 0, 0, 1])
    assert np.isnan(out[2]).all() and np.isnan(out[3]).all()


@pytest.mark.slow
def test_build_map_from_bag_and_evaluate_query_bag(runs, tmp_path, capsys):
    from vpr_ros.core.map.store import VPRMap
    from vpr_ros.tools.build_map import main as build_main
    from vpr_ros.tools.eval import main as eval_main

    map_dir = tmp_path / "lap1"
    assert build_main([str(map_dir), "--bag", str(runs / "ref"), "--image-topic", "/camera/image_raw",
                       "--pose-topic", "/odom", "--min-distance", "1.5", "--local-features", "none", "--quiet"]) == 0
    vpr_map = VPRMap.load(map_dir)
    assert len(vpr_map) == 30 and vpr_map.frames.has_pose.all()  # every second frame at 1.5 m spacing
    np.testing.assert_allclose(vpr_map.frames.pose[:3, 0], [0, 2, 4])
    out = tmp_path / "eval.json"
    assert eval_main(["--map", str(map_dir), "--bag", str(runs / "query"), "--image-topic",
                      "/camera/image/compressed", "--pose-topic", "/odom", "--distance", "2.5",
                      "--rerank", "off", "--top-k", "10", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["num_queries"] == 60 and report["map_size"] == 30
    assert report["recall"]["1"] >= 0.75, report["recall"]
    assert report["recall"]["10"] == 1.0
    # re-ranking needs the map's local features: a clear error without them, then a map that has them
    rerank = ["--rerank", "xfeat-lighterglue", "--top-k", "3"]
    assert eval_main(["--map", str(map_dir), "--bag", str(runs / "query"), "--image-topic",
                      "/camera/image/compressed", "--pose-topic", "/odom", "--quiet", *rerank]) == 2
    assert "--local-features xfeat" in capsys.readouterr().err
    assert build_main([str(map_dir), "--bag", str(runs / "ref"), "--image-topic", "/camera/image_raw",
                       "--pose-topic", "/odom", "--min-distance", "1.5", "--overwrite", "--quiet"]) == 0
    assert VPRMap.load(map_dir).local is not None, "XFeat local features by default (the node's defaults need them)"
    assert eval_main(["--map", str(map_dir), "--bag", str(runs / "query"), "--image-topic",
                      "/camera/image/compressed", "--pose-topic", "/odom", "--distance", "2.5",
                      "--json", str(out), "--quiet", *rerank]) == 0
    report = json.loads(out.read_text())
    assert report["config"]["rerank"] == "xfeat-lighterglue" and report["config"]["top_k"] == 3
    assert report["recall"]["1"] >= 0.75, report["recall"]
    assert "recall_global" in report and report["recall"]["10"] is None  # 3 hypotheses published
    assert 0 < report["latency_ms"]["match"]["p50"] < 5000


def test_sessions_from_bags_and_a_gps_prior(runs, tmp_path, capsys):
    """vpr_build_map --append adds the query bag as a session of another robot; --descriptor-from builds a map in
    another one's space; vpr_eval --prior-gps-topic searches near each frame's recorded fix."""
    from vpr_ros.core.map.store import VPRMap
    from vpr_ros.tools.build_map import main as build_main
    from vpr_ros.tools.eval import main as eval_main

    site = tmp_path / "site"
    topics = ["--pose-topic", "/odom", "--gps-topic", "/fix", "--local-features", "none", "--quiet"]
    assert build_main([str(site), "--bag", str(runs / "ref"), "--image-topic", "/camera/image_raw", *topics]) == 0
    before = VPRMap.load(site)
    assert build_main(["--append", str(site), "--bag", str(runs / "query"), "--image-topic",
                       "/camera/image/compressed", "--robot", "r2", *topics]) == 0
    grown = VPRMap.load(site)
    assert [str(s) for s in grown.frames.sessions] == ["'ref'", "'query' (robot 'r2')"] and len(grown) == 120
    assert grown.space == before.space and np.array_equal(grown.descriptors[:60], before.descriptors)
    assert build_main(["--append", str(site), "--bag", str(runs / "query"), "--image-topic",
                       "/camera/image/compressed", *topics]) == 2  # the session 'query' is there already
    assert "is in both" in capsys.readouterr().err and len(VPRMap.load(site)) == 120
    assert build_main(["--append", str(tmp_path / "absent"), "--bag", str(runs / "query"), "--image-topic",
                       "/camera/image/compressed", *topics]) == 2
    assert "is not a vpr_ros map" in capsys.readouterr().err and not (tmp_path / "absent").exists()
    other = tmp_path / "other"
    assert build_main([str(other), "--descriptor-from", str(site), "--bag", str(runs / "query"), "--image-topic",
                       "/camera/image/compressed", "--session", "again", *topics]) == 0
    assert VPRMap.load(other).space == grown.space
    out = tmp_path / "prior.json"
    assert eval_main(["--map", str(before.save(tmp_path / "ref_map")), "--bag", str(runs / "query"), "--image-topic",
                      "/camera/image/compressed", "--pose-topic", "/odom", "--distance", "2.5", "--rerank", "off",
                      "--prior-gps-topic", "/fix", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["prior"]["frames_with_prior"] == 60 and report["prior"]["mean_searched_frames"] < 35
    assert report["recall"]["1"] >= 0.75, report["recall"]
