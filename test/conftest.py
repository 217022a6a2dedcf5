"""Test-session set-up: keep every ROS 2 participant on loopback, in a private domain and log folder.

This runs before any test module imports rclpy, so the environment below is what the middleware
sees in this process and in every child process the tests start (they inherit os.environ whole,
which also carries the LD_LIBRARY_PATH that the ROS wheels' bootstrapper set).
"""

import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VPR_ROS_DATA", REPO.parent / "shared" / "data"))  # override: a copy elsewhere
CORRIDOR = SHARED_DATA / "corridor"

_ROS_TMP = tempfile.mkdtemp(prefix="vpr_ros_test_ros_")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)
# Domain ids 1..101 keep the DDS port arithmetic valid on Linux; 0 is everybody's default.
os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))
os.environ["ROS_LOG_DIR"] = os.path.join(_ROS_TMP, "log")
os.environ["ROS_HOME"] = _ROS_TMP


def require_corridor() -> Path:
    """The real Corridor images (../shared/data/corridor). Where they are absent: a skip on a user's machine,
    a failure under CI=true (CI has the shared data; a test that skips there tests nothing)."""
    if not (CORRIDOR / "ground_truth.csv").is_file():
        why = f"real test images not found at {CORRIDOR} (shared data is absent on this machine)"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"{why}; CI=true: CI must have ../shared/data (or VPR_ROS_DATA)", pytrace=False)
        pytest.skip(why)
    return CORRIDOR


@pytest.fixture(scope="session")
def corridor_dir() -> Path:
    """The real Corridor images (require_corridor)."""
    return require_corridor()


def corridor40_map(corridor_dir: Path):
    """A 40-frame map of the first Corridor references, poses 1 m apart along x, XFeat local features."""
    from vpr_ros.core.map.frames import FrameTable
    from vpr_ros.core.build.map_builder import build_map
    from vpr_ros.core.build.sources import load_image_file

    paths = sorted((corridor_dir / "ref").glob("*.jpg"))[:40]
    pose = np.zeros((40, 7))
    pose[:, 0], pose[:, 6] = np.arange(40), 1.0
    frames = FrameTable.build(np.arange(1, 41) * 10**9, paths, pose=pose)
    return build_map("corridor40", frames, load_image_file, clusters=16, local_features="xfeat")


@pytest.fixture
def ros_node(request):
    """A node in its own rclpy context with a single-threaded executor; torn down after the test."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    name = re.sub(r"\W", "_", request.node.name)[:60]
    node = rclpy.create_node(f"vpr_ros_test_{name}", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


def spin_until(executor, predicate, timeout_s: float) -> bool:
    """Spin `executor` in bounded steps until `predicate()` holds or `timeout_s` passes."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.05)
    return predicate()


class NoReadBack:
    """A torch function mode that fails on every operation reading tensor values back to the host (a
    device synchronisation on a GPU): item/tolist/numpy/cpu, truth values, nonzero-style ops and boolean
    mask indexing (its shape depends on the data)."""

    def __new__(cls):
        import torch
        from torch.overrides import TorchFunctionMode

        reads = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.__bool__,
                 torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__, torch.nonzero,
                 torch.Tensor.nonzero, torch.masked_select, torch.Tensor.masked_select, torch.unique,
                 torch.Tensor.unique, torch.argwhere, torch.Tensor.argwhere}

        def boolean_index(index) -> bool:
            items = index if isinstance(index, tuple) else (index,)
            return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                name = getattr(func, "__name__", str(func))
                if func in reads or (func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__)
                                     and boolean_index(args[1])):
                    raise AssertionError(f"{name} reads back from the device")
                return func(*args, **(kwargs or {}))

        return Mode()
