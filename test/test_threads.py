"""CPU threading: idle OpenMP threads sleep by default (set before torch loads), an explicit environment
wins, and cpu_threads reaches torch, faiss and the verification pool."""

import os
import subprocess
import sys

import pytest

SHOW = "import os, vpr_ros.ros.main, torch; print(os.environ.get('OMP_WAIT_POLICY'))"


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_node_entry_point_makes_openmp_wait_passively_unless_told(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == expected


def test_cpu_threads_reach_torch_faiss_and_the_verification_pool():
    import faiss
    import torch

    from vpr_ros.core.matching.reranker import Reranker
    from vpr_ros.core.runtime.threads import available_cores, cpu_threads, set_cpu_threads

    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(1) == 1 and torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
        assert cpu_threads() == 1 and Reranker("xfeat-mnn").verify_workers == 1
        assert set_cpu_threads(0) == available_cores() == cpu_threads()
        with pytest.raises(ValueError, match="cpu_threads"):
            set_cpu_threads(-1)
    finally:
        set_cpu_threads(before)


def test_cpu_threads_is_a_checked_setting():
    from vpr_ros.core.config import LocalizerConfig

    assert LocalizerConfig().cpu_threads == 0 and LocalizerConfig().backend == "auto"
    with pytest.raises(ValueError, match="cpu_threads"):
        LocalizerConfig(cpu_threads=-2)


def test_lightglue_pairs_side_by_side_match_as_one_by_one(corridor_dir):
    """On the CPU the pairs run in cpu_threads threads with one intra-op thread each; the matches are the
    ones a single thread finds, and torch's thread count is restored afterwards."""
    import numpy as np
    import torch

    from vpr_ros.core.inputs.images import read_image
    from vpr_ros.core.matching.local_features import LocalExtractor
    from vpr_ros.core.matching.matchers import Matcher
    from vpr_ros.core.runtime.threads import set_cpu_threads

    paths = [corridor_dir / "query" / "0000010.jpg"] + sorted((corridor_dir / "ref").glob("*.jpg"))[8:12]
    features = LocalExtractor("xfeat", 256).extract([read_image(p) for p in paths])
    matcher = Matcher("xfeat-lighterglue")
    before = torch.get_num_threads()
    try:
        answers = []
        for threads in (1, 2):
            set_cpu_threads(threads)
            answers.append(matcher.match(features[0], features[1:]))
            assert torch.get_num_threads() == threads
    finally:
        set_cpu_threads(before)
    for one, two in zip(*answers):
        assert np.array_equal(one.query_idx, two.query_idx) and np.array_equal(one.map_idx, two.map_idx)
        assert np.allclose(one.scores, two.scores, atol=1e-5)
    assert sum(len(m) for m in answers[0]) > 0
