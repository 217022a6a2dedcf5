"""Trajectory error as an evaluation output: a small simulated run with drifting odometry through the pipeline in
slam mode (core replay and through vpr_localizer + vpr_pose_graph as their own processes), its closures through
the pose-graph back-end, ATE/RPE of odometry and corrected path with evo, TUM files, false closures injected."""

import json

import numpy as np
import pytest

from vpr_ros.core.build.bag_source import read_odometry
from vpr_ros.core.evaluation.trajectory import trajectory_error, write_tum
from vpr_ros.ros.interfaces import load_interfaces
from vpr_ros.tools import eval as vpr_eval, sim

TOPICS = ["--image-topic", "/camera/image_raw", "--pose-topic", "/ground_truth", "--odom-topic", "/odom",
          "--camera-info-topic", "/camera/camera_info", "--depth-topic", "/camera/depth/image_raw"]


@pytest.fixture(scope="module")
def drifting_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    assert sim.main([str(root), "--frames", "40", "--laps", "3", "--rate", "1.25", "--seed", "3", "--width", "320",
                     "--height", "240", "--odom-drift", "2", "--quiet"]) == 0
    return root


def test_evo_figures_and_tum_files(tmp_path):
    stamps = np.arange(1, 101) * 10**9
    truth = np.zeros((100, 7))
    angle = np.linspace(0, np.pi, 100)
    truth[:, 0], truth[:, 1], truth[:, 6] = 20 * np.cos(angle), 20 * np.sin(angle), 1.0  # a half circle
    shifted = truth.copy()
    shifted[:, 1] += 0.5  # 0.5 m off everywhere: 0.5 m unaligned, 0 once aligned
    assert trajectory_error((stamps, truth), (stamps, shifted), "none")["ate_rmse_m"] == pytest.approx(0.5)
    assert trajectory_error((stamps, truth), (stamps, shifted), "se3")["ate_rmse_m"] == pytest.approx(0.0, abs=1e-6)
    write_tum(tmp_path / "t.tum", stamps, shifted)
    first = (tmp_path / "t.tum").read_text().splitlines()[0].split()
    assert len(first) == 8 and float(first[0]) == pytest.approx(1.0) and float(first[2]) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="within"):
        trajectory_error((stamps, truth), (stamps + 5 * 10**8, shifted), "none")


@pytest.mark.slow
def test_slam_run_closes_its_drift_through_the_back_end(drifting_run, tmp_path):
    bags = [str(drifting_run / f"lap_{lap}") for lap in (1, 2, 3)]
    out = tmp_path / "slam.json"
    assert vpr_eval.main(["--slam", *bags, *TOPICS, "--distance", "5", "--trajectories", str(tmp_path / "tum"),
                          "--inject-false", "0.2", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    loops, trajectory = report["loop_closures"], report["trajectory"]
    assert loops["accepted"] >= 10 and loops["correct"] >= 0.7 * loops["accepted"], loops
    assert trajectory["optimised"]["ate_rmse_m"] < trajectory["odometry"]["ate_rmse_m"] / 3, trajectory
    assert trajectory["graph"]["closures"] >= 0.7 * loops["correct"]
    row = trajectory["injected_false_closures"][0]
    assert row["injected"] >= 2
    assert row["configured"]["ate_rmse_m"] < 1.25 * trajectory["optimised"]["ate_rmse_m"], row
    assert row["no kernel, no support"]["ate_rmse_m"] > 2 * trajectory["optimised"]["ate_rmse_m"], row
    assert {p.name for p in (tmp_path / "tum").iterdir()} == {"truth.tum", "odometry.tum", "optimised.tum"}
    odometry = read_odometry(drifting_run / "lap_1", "/odom")
    assert odometry.frame_id == "odom" and odometry.covariance[-1, 0, 0] > odometry.covariance[0, 0, 0]


@pytest.mark.slow
@pytest.mark.skipif(load_interfaces() is None, reason="vpr_ros_interfaces is not built")
def test_through_the_node_the_back_end_node_corrects_the_path(drifting_run, tmp_path):
    """vpr_localizer (slam, fed the odometry) and vpr_pose_graph (its console script and shipped params file) as
    their own processes in one ROS graph: the back-end node's optimised path is the in-process one's."""
    bags = [str(drifting_run / f"lap_{lap}") for lap in (1, 2, 3)]
    out = tmp_path / "node.json"
    assert vpr_eval.main(["--slam", *bags, *TOPICS, "--distance", "5", "--through-node", "--rate", "0",
                          "--json", str(out), "--quiet"]) == 0
    trajectory = json.loads(out.read_text())["trajectory"]
    node = trajectory["pose_graph_node"]
    assert node["ate_rmse_m"] < trajectory["odometry"]["ate_rmse_m"] / 3, trajectory
    assert node["ate_rmse_m"] == pytest.approx(trajectory["optimised"]["ate_rmse_m"], rel=0.25, abs=0.03)


@pytest.mark.slow
def test_localize_mode_fixes_place_a_drifted_odometry(drifting_run, tmp_path):
    """A map of lap 1 from the truth, lap 3 localized against it with its odometry (two laps of drift): the
    back-end with vpr/pose as fixes puts the path back into the map frame (unaligned ATE)."""
    from vpr_ros.tools import build_map

    assert build_map.main([str(tmp_path / "map"), "--bag", str(drifting_run / "lap_1"), "--image-topic",
                           "/camera/image_raw", "--pose-topic", "/ground_truth", "--camera-info-topic",
                           "/camera/camera_info", "--depth-topic", "/camera/depth/image_raw", "--quiet"]) == 0
    out = tmp_path / "localize.json"
    assert vpr_eval.main(["--map", str(tmp_path / "map"), "--bag", str(drifting_run / "lap_3"), *TOPICS,
                          "--distance", "5", "--temporal-window", "0", "--json", str(out), "--quiet"]) == 0
    trajectory = json.loads(out.read_text())["trajectory"]
    assert trajectory["align"] == "none" and trajectory["graph"]["fixes"] >= 5, trajectory["graph"]
    assert trajectory["optimised"]["ate_rmse_m"] < trajectory["odometry"]["ate_rmse_m"] / 3, trajectory
