"""Bag replay and evaluation: ground truth, metrics on known records, core vs node replay of a simulated
run, the HTML report, the image-folder converter on Corridor, and the demo command."""

import json
import logging
import os
import re

import numpy as np
import pytest

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.evaluation.dataset_eval import evaluate_dataset
from vpr_ros.core.evaluation.replay import BAD, DROPPED, QueryRecord
from vpr_ros.core.evaluation.scoring import by_distance, by_frames, by_stamps, evaluate_replay
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.map.store import VPRMap
from vpr_ros.tools import build_map, eval as vpr_eval, folder_to_bag, sim

TOPICS = ["--image-topic", "/camera/image_raw", "--pose-topic", "/ground_truth"]


def _line_frames(n: int) -> FrameTable:
    pose = np.zeros((n, 7))
    pose[:, 0], pose[:, 6] = np.arange(n, dtype=float), 1.0
    return FrameTable.build(np.arange(n) * 10, [f"f{i}" for i in range(n)], pose=pose)


def test_ground_truth_criteria():
    frames = _line_frames(10)
    queries = np.zeros((3, 7))
    queries[:, 0] = [2.2, 9.6, np.nan]
    assert by_distance(frames, queries, 1.0) == [{2, 3}, {9}, set()]
    assert by_frames(frames, queries, 1) == [{1, 2, 3}, {8, 9}, set()]
    far = queries.copy()
    far[0, 1] = 100.0
    assert by_frames(frames, far, 1, max_distance_m=25.0)[0] == set()
    assert by_stamps(frames, np.array([5, 6]), {5: [0, 10, 999], 6: []}) == [{0, 1}, set()]
    with pytest.raises(ValueError, match="positive"):
        by_distance(frames, queries, 0.0)


class _Map:  # what evaluate_replay reads of a map
    def __init__(self, frames):
        self.frames, self.uncertainty = frames, None


def _record(i, keys, ranks, loop=-1, status="processed", method=""):
    n = len(keys)
    return QueryRecord(i, i, np.full(7, np.nan), status, keys=np.array(keys), global_ranks=np.array(ranks),
                       similarities=np.linspace(0.9, 0.5, n), probabilities=np.full(n, np.nan),
                       inliers=np.zeros(n, int), verified=np.zeros(n, bool), reranked=ranks != sorted(ranks),
                       loop_key=loop, loop_method=method, timings_ms={"total": 10.0 * (i + 1)})


def test_evaluate_replay_on_known_records():
    records = [_record(0, [1, 2], [1, 0], loop=1, method="fundamental"),  # re-ranked: right first (global: second)
               _record(1, [5, 6], [0, 1], loop=5, method="global_descriptor"),  # wrong, accepted: a false loop closure
               _record(2, [3, 4], [0, 1]),  # right at rank 2
               QueryRecord(3, 3, np.full(7, np.nan), DROPPED), QueryRecord(4, 4, np.full(7, np.nan), BAD),
               _record(5, [7, 8], [0, 1])]  # no true match in the map
    positives = [{1}, {9}, {4}, {1}, {1}, set()]
    report = evaluate_replay(records, positives, _Map(_line_frames(10)))
    assert report["frames"] == {"total": 6, "processed": 4, "dropped": 1, "bad": 1, "without_true_match": 1}
    assert report["recall"] == {"1": pytest.approx(1 / 3), "5": None, "10": None}
    assert report["recall_global"]["1"] == 0.0
    assert "top_k" in report["recall_note"]
    assert report["loop_closure"] == {"accepted": 2, "correct": 1, "false": 1, "precision": 0.5,
                                      "recall": pytest.approx(1 / 3),
                                      "methods": {"fundamental": 1, "global_descriptor": 1}}
    assert report["top1"]["confidence"] == "global similarity" and report["top1"]["queries"] == 4
    assert report["latency_ms"]["total"]["max"] == 60.0 and report["latency_ms"]["total"]["count"] == 4
    assert [f["correct"] for f in report["per_frame"]] == [True, False, False, None, None, None]
    with pytest.raises(ValueError, match="ground-truth"):
        evaluate_replay(records, positives[:2], _Map(_line_frames(10)))


@pytest.fixture(scope="module")
def sim_map(tmp_path_factory):
    """A 30-frame simulated run (two laps, 320 x 240) and a map of its first lap."""
    root = tmp_path_factory.mktemp("simrun")
    assert sim.main([str(root / "run"), "--frames", "30", "--width", "320", "--height", "240", "--quiet"]) == 0
    assert build_map.main([str(root / "map"), "--bag", str(root / "run" / "lap_1"), *TOPICS, "--quiet"]) == 0
    return root


@pytest.mark.slow
def test_core_and_node_replays_agree(sim_map):
    config = LocalizerConfig(top_k=10)
    bag = sim_map / "run" / "lap_2"
    core, core_records, _ = vpr_eval.evaluate_map_bag(sim_map / "map", bag, "/camera/image_raw", "/ground_truth", None,
                                                      5.0, config, progress=False)
    node, node_records, _ = vpr_eval.evaluate_map_bag(
        sim_map / "map", bag, "/camera/image_raw", "/ground_truth", None, 5.0, config, progress=False,
        through_node={"rate": 0.0, "domain_id": int(os.environ["ROS_DOMAIN_ID"])})
    assert core["frames"]["processed"] == 30 and node["frames"]["processed"] == 30 and node["frames"]["dropped"] == 0
    same = np.mean([a.keys[0] == b.keys[0] for a, b in zip(core_records, node_records)])
    assert same >= 0.95, same
    assert abs(core["recall"]["1"] - node["recall"]["1"]) <= 0.05
    assert 0.0 < core["recall"]["10"] <= 1.0 and core["recall"]["1"] <= core["recall"]["10"]
    assert node["latency_ms"]["end_to_end"]["p50"] >= node["latency_ms"]["total"]["p50"] > 0
    assert node["replay"] == "node" and core["replay"] == "core"
    both = [(a, b) for a, b in zip(core_records, node_records) if a.loop_key >= 0 and a.loop_key == b.loop_key]
    assert all(a.loop_method == b.loop_method != "" for a, b in both)  # the constraint the node publishes


@pytest.mark.slow
def test_a_position_prior_through_the_node_and_the_core(sim_map):
    """vpr_eval --prior-sigma: the same simulated priors restrict the core's search and, published on the node's
    prior_topic, the node's; both say how many map frames they searched."""
    config, bag = LocalizerConfig(top_k=10, rerank="off"), sim_map / "run" / "lap_2"
    args = (sim_map / "map", bag, "/camera/image_raw", "/ground_truth", None, 5.0, config)
    core, core_records, vpr_map = vpr_eval.evaluate_map_bag(*args, progress=False, prior_sigma_m=2.0)
    node, node_records, _ = vpr_eval.evaluate_map_bag(
        *args, progress=False, prior_sigma_m=2.0,
        through_node={"rate": 0.0, "domain_id": int(os.environ["ROS_DOMAIN_ID"])})
    assert core["prior"]["frames_with_prior"] == node["prior"]["frames_with_prior"] == 30
    assert core["prior"]["mean_searched_frames"] < len(vpr_map)
    assert [r.search_frames for r in core_records] == [r.search_frames for r in node_records]
    assert np.mean([a.keys[0] == b.keys[0] for a, b in zip(core_records, node_records)]) >= 0.95


@pytest.mark.slow
def test_vpr_eval_cli_writes_json_and_html(sim_map, tmp_path, capsys):
    status = vpr_eval.main(["--map", str(sim_map / "map"), "--bag", str(sim_map / "run" / "lap_2"), *TOPICS,
                            "--camera-info-topic", "/camera/camera_info", "--frame-tolerance", "2", "--quiet",
                            "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html")])
    assert status == 0
    out = capsys.readouterr().out
    assert "R@1" in out and "loop closures" in out and "html report" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["frame_tolerance"] == 2 and len(report["per_frame"]) == 30
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and len(re.findall(r"data:image/png;base64,", page)) >= 3
    assert "http://" not in page and "https://" not in page  # self-contained
    # the gallery: every wrong top-1 (up to 12), the least probable loop closures, a sample of right ones; each
    # case a query|top-1 pair with matches drawn and the true match, as inline JPEG thumbnails
    gallery = page[page.index("<h2>Gallery</h2>"):page.index("<h2>Configuration")]
    wrong = sum(1 for f in report["per_frame"] if f["correct"] is False)
    loops = sum(1 for f in report["per_frame"] if f["loop"] is not None)
    right = sum(1 for f in report["per_frame"] if f["correct"])
    cases = re.findall(r'<div class="case (good|bad)">(.*?)</div>', gallery)
    assert len(cases) == min(wrong, 12) + min(loops, 8) + min(right, 8), (wrong, loops, right, len(cases))
    assert f"Wrong top-1 answers (most confident first) ({min(wrong, 12)})" in gallery
    assert all(len(re.findall(r"data:image/jpeg;base64,", body)) == 2 for _, body in cases)  # pair + true match
    assert all(re.search(r"distance \d+\.\d m, similarity 0\.\d{3}, inliers \d+", body) for _, body in cases)
    assert len(page.encode()) < 1_500_000, len(page.encode())  # thumbnails, not frames
    from html.parser import HTMLParser

    class Balance(HTMLParser):
        open_divs = 0

        def handle_starttag(self, tag, attrs):
            self.open_divs += tag == "div"

        def handle_endtag(self, tag):
            self.open_divs -= tag == "div"
    parser = Balance()
    parser.feed(page)
    assert parser.open_divs == 0


def test_the_report_says_why_closures_have_no_scale_in_words():
    from vpr_ros.tools.report import _direction_only

    assert _direction_only({}) == "Every correct loop closure had a metric pose."
    text = _direction_only({"no depth near the frame": 1, "the 47 points fit <badly>": 3})
    assert text.startswith("Without a metric pose (direction only): 3 &times; the 47 points fit &lt;badly&gt;; 1")
    assert "{" not in text


def test_vpr_eval_refuses_bad_input(sim_map, tmp_path, capsys):
    assert vpr_eval.main(["--map", str(sim_map / "map"), "--bag", str(tmp_path / "missing"), *TOPICS, "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert vpr_eval.main(["--map", str(sim_map / "map"), "--bag", str(sim_map / "run" / "lap_2"),
                          "--image-topic", "/camera/image_raw", "--quiet"]) == 2
    assert "no poses" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        vpr_eval.main(["--dataset", str(tmp_path), "--through-node"])


@pytest.mark.slow
def test_folder_dataset_replays_like_the_folder(corridor_dir, tmp_path):
    """Corridor through vpr_folder_to_bag: a map from the ref bag and the query bag scored with the
    ground-truth table give the recall of the image-folder evaluation."""
    assert folder_to_bag.main([str(corridor_dir), str(tmp_path / "bags")]) == 0
    assert build_map.main([str(tmp_path / "map"), "--bag", str(tmp_path / "bags" / "ref"),
                           "--image-topic", "/camera/image_raw", "--quiet"]) == 0
    assert len(VPRMap.load(tmp_path / "map")) == 111
    report, _, _ = vpr_eval.evaluate_map_bag(tmp_path / "map", tmp_path / "bags" / "query", "/camera/image_raw",
                                             None, None, 25.0, LocalizerConfig(top_k=10, rerank="off"),
                                             ground_truth_path=tmp_path / "bags" / "ground_truth.json", progress=False)
    folder = evaluate_dataset(corridor_dir, "default", LocalizerConfig(top_k=10, rerank="off"), progress=False)
    assert report["frames"]["without_true_match"] == 0
    for n in ("1", "5", "10"):
        assert report["recall"][n] == pytest.approx(folder["recall"][n], abs=1e-9)


def test_folder_to_bag_passthrough_keeps_bytes(corridor_dir, tmp_path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    assert folder_to_bag.main([str(corridor_dir / "ref"), str(tmp_path / "out"), "--image-format", "passthrough"]) == 0
    first = sorted((corridor_dir / "ref").iterdir())[0]
    with AnyReader([tmp_path / "out" / "images"], default_typestore=get_typestore(Stores.LATEST)) as reader:
        conn, _, raw = next(reader.messages())
        assert conn.topic == "/camera/image_raw/compressed"
        assert bytes(reader.deserialize(raw, conn.msgtype).data) == first.read_bytes()


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    from vpr_ros.tools import demo

    status = demo.main(["--out", str(tmp_path / "demo"), "--frames", "30", "--rerank", "off", "--skip-doctor"])
    assert status == 0
    out = capsys.readouterr().out
    assert "Demo finished" in out and str(tmp_path / "demo" / "report.html") in out
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["replay"] == "node" and report["calibrated"] and report["frames"]["processed"] > 0
    assert "confidence" in report and [s["map_frames"] for s in report["sessions"].values()] == [30, 30]
    table = json.loads((tmp_path / "demo" / "sessions.json").read_text())
    assert [row["map_frames"] for row in table.values()] == [30, 30, 60]


@pytest.mark.slow
def test_an_undecodable_image_in_a_bag_is_recorded_as_bad(sim_map, tmp_path):
    from vpr_ros.core.build.bag_source import read_bag_frames
    from vpr_ros.sim.bag_writer import BagWriter

    lap = read_bag_frames(sim_map / "run" / "lap_2", "/camera/image_raw", "/ground_truth")
    load = lap.loader()
    bag = tmp_path / "broken"
    with BagWriter(bag, "jpeg") as writer:  # poses without an odometry: the truth goes on /odom (as older bags)
        for i in (3, 4, 5):
            pose = lap.frames.pose[i]
            if i == 4:
                writer.write_frame(int(lap.frames.stamp_ns[i]), encoded=("jpeg", b"not a jpeg"), pose7=pose)
            else:
                writer.write_frame(int(lap.frames.stamp_ns[i]), load(lap.frames.sources[i]), pose7=pose)
    for through_node in (None, {"rate": 0.0, "domain_id": int(os.environ["ROS_DOMAIN_ID"])}):
        report, records, _ = vpr_eval.evaluate_map_bag(
            sim_map / "map", bag, "/camera/image_raw/compressed", "/odom", None, 5.0, LocalizerConfig(top_k=5),
            through_node=through_node, progress=False)
        assert [r.status for r in records] == ["processed", "bad", "processed"], through_node
        assert report["frames"]["bad"] == 1 and report["frames"]["processed"] == 2
        assert records[1].note


@pytest.mark.slow
def test_train_uncertainty_calibrates_sequence_ranking_on_a_session_bag(sim_map, tmp_path, capsys, caplog):
    """vpr_train_uncertainty --session: lap 2 (dusk) replayed against lap 1's map with sequence matching fits
    the sequence calibrators into the map; vpr_eval with that window then publishes their probabilities."""
    import shutil

    from vpr_ros.core.map.store import VPRMap
    from vpr_ros.tools import train_uncertainty

    path = tmp_path / "map"
    shutil.copytree(sim_map / "map", path)
    bag = sim_map / "run" / "lap_2"
    with caplog.at_level(logging.WARNING, logger="vpr_ros"):
        assert train_uncertainty.main([str(path), "--epochs", "3", "--views", "1", "--positive-distance", "3",
                                       "--top-k", "8", "--session", str(bag), *TOPICS, "--sequence-length", "5",
                                       "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "sequence:global:" in out and "sequence_length 5, centred rows" in out
    assert not any("no calibrator for sequence ranking" in m for m in caplog.messages)  # the fitting replays
    model = VPRMap.load(path).uncertainty
    assert model.training["sequence"]["length"] == 5 and model.training["sequence"]["session"] == str(bag)
    assert model.calibrators["sequence:global"].features[-1] == "sequence_score"
    assert model.sequence_calibrator(None, 5, "centred") is model.calibrators["sequence:global"]
    # the session's single-image answers joined the synthetic views in the single-image calibrators
    session = model.training["session_calibration"]
    assert session["session"] == str(bag) and session["calibrators"]["global"]["session_hypotheses"] > 0
    assert model.calibrators["global"].fitted_on > model.training["calibration_queries"]
    report, records, _ = vpr_eval.evaluate_map_bag(path, bag, "/camera/image_raw", "/ground_truth", None, 5.0,
                                                   LocalizerConfig(rerank="off", top_k=8, sequence_length=5),
                                                   progress=False)
    ranked = [r for r in records if r.sequence_length]
    assert len(ranked) == 26 and all(np.isfinite(r.probabilities).all() for r in ranked)
    with pytest.raises(SystemExit):  # --session without its topics
        train_uncertainty.main([str(path), "--session", str(bag), "--quiet"])
