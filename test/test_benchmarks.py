"""Every benchmark still runs: each script in benchmarks/ on tiny inputs (a short simulated run, a few
Corridor frames), as its own process, as a person runs it. The figures are not checked here (they are
measured on full inputs and written in docs/benchmarks.md); that the script finishes, exits 0 and prints
what it measures is. Scripts that only run on a GPU (device_run.sh) are covered where one is lent."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, require_corridor

pytestmark = pytest.mark.slow

TOPICS = ["--image-topic", "/camera/image_raw", "--pose-topic", "/ground_truth"]
DEPTH = ["--depth-topic", "/camera/depth/image_raw", "--camera-info-topic", "/camera/camera_info"]
SCRIPTS = sorted(p.name for p in (REPO / "benchmarks").glob("*.py") if p.name not in ("common.py", "node_harness.py"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 16-frame two-lap simulated run with depth; maps of lap 1 (with keypoint depths) and of lap 2 (in lap
    1's descriptor space); a map of 20 Corridor references."""
    from vpr_ros.core.build.map_builder import build_map
    from vpr_ros.core.build.sources import load_image_file
    from vpr_ros.core.inputs.images import list_images
    from vpr_ros.core.map.frames import FrameTable
    from vpr_ros.tools import build_map as vpr_build_map, sim

    root = tmp_path_factory.mktemp("bench")
    assert sim.main([str(root / "run"), "--frames", "16", "--width", "320", "--height", "240", "--quiet"]) == 0
    lap_1 = ["--bag", str(root / "run" / "lap_1"), *TOPICS, *DEPTH, "--quiet"]
    assert vpr_build_map.main([str(root / "lap1"), *lap_1]) == 0
    assert vpr_build_map.main([str(root / "lap2"), "--bag", str(root / "run" / "lap_2"), *TOPICS, "--quiet",
                               "--descriptor-from", str(root / "lap1")]) == 0
    refs = list_images(require_corridor() / "ref")[:20]
    frames = FrameTable.build([(i + 1) * 10**9 for i in range(len(refs))], refs)
    build_map("corridor20", frames, load_image_file, local_features="xfeat").save(root / "corridor20")
    return root


def arguments(script: str, tiny: Path) -> list[list[str]]:
    """The tiny runs of `script` (one list of arguments per run)."""
    run, lap1, lap2, corridor = tiny / "run", str(tiny / "lap1"), str(tiny / "lap2"), str(tiny / "corridor20")
    return {
        "acceptance_ate.py": [["--map", lap1, "--bag", str(run / "lap_2"), "--rerank", "xfeat-mnn",
                               "--probabilities", "0.9"]],
        "acceptance_laps.py": [["--run", str(run), "--map", lap1, "--laps", "other=2"]],
        "calibration_transfer.py": [["--map", lap1, "--bag", f"other={run / 'lap_2'}", "--cache", str(tiny / "transfer")],
                                    ["--cache", str(tiny / "transfer")]],
        "batched_ransac.py": [["--pairs", "2", "--matches", "64", "--repeats", "1", "--per-ratio", "1"]],
        "city_scale.py": [["--real-map", lap1, "--query-bag", str(run / "lap_2"), "--image-topic", "/camera/image_raw",
                           "--frames", "45000", "--index", "ivfpq-100k", "--queries", "4", "--out", str(tiny / "city")]],
        "cold_load.py": [[lap1, "--runs", "1", "--queries", "3", "--rate", "50"]],
        "gpu_query.py": [["--device", "cpu", "--size", "300", "--pairs", "2", "--repeats", "1", "--warmup", "0",
                          "--no-compile", "--no-recall"]],
        "kidnap.py": [["--run", str(run), "--lap", "lap_2", "--map", lap1, "--trials", "1", "--before", "3",
                       "--after", "4"]],
        "loop_precision.py": [["--queries", "4"]],
        "metric_loops.py": [["--run", str(run), "--map", lap1]],
        "node_latency.py": [["--rates", "2", "--seconds", "3", "--map", corridor]],
        "posegraph.py": [["--seeds", "0", "--frames", "40", "--laps", "2", "--drift", "1", "--false-share", "0.2",
                          "--variants", "cauchy+support", "none", "--timing-keyframes", "90"]],
        "prior_search.py": [["speed", "--frames", "3000", "--queries", "5"],
                            ["accuracy", "--map", lap1, "--bag", str(run / "lap_2")]],
        "published_models.py": [["--presets", "cosplace-r18-512", "--repeats", "1"]],
        "rerank.py": [["--matchers", "xfeat-mnn", "--keypoints", "128", "--k", "2", "--budgets", "128", "--repeats",
                       "1", "--skip-recall"]],
        "retrieval.py": [["--frames", "2000", "--repeats", "1", "--skip-corridor"]],
        "sequence_cost.py": [["--frames", "600", "--lengths", "5", "--queries", "5"]],
        "sessions.py": [["--maps", lap1, lap2, "--bag", str(run / "lap_2")]],
        "soak.py": [["--minutes", "0.1", "--rate", "2", "--map", corridor]],
        "verification.py": [["--map", lap1, "--bag", str(run / "lap_2"), "--every", "4", "--budgets", "128",
                             "--matchers", "xfeat-mnn", "--save", str(tiny / "pairs")]],
        "stages.py": [["--sizes", "500", "--repeats", "1", "--warmup", "0", "--pairs", "2", "--e2e-size", "500",
                       "--matchers", "xfeat-mnn", "--devices", "cpu"]],
    }[script]


def test_every_benchmark_has_a_tiny_run():
    known = {script for script in SCRIPTS if arguments(script, Path("/tmp"))}
    assert known == set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_benchmark_runs_on_tiny_inputs(script, tiny, tmp_path):
    require_corridor()  # most read a few Corridor frames
    for args in arguments(script, tiny):
        done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=tmp_path,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True,
                              timeout=900)
        out = done.stdout + done.stderr
        assert done.returncode == 0, f"{script} {' '.join(args)} exited {done.returncode}:\n{out[-4000:]}"
        assert "skipped" not in done.stdout, out[-2000:]
        assert "Traceback" not in out, out[-4000:]
        assert "exit code 1" not in out and done.stdout.strip(), out[-2000:]  # the node's, where one ran
