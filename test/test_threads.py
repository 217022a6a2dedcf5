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
