"""How many CPU threads the pipeline's libraries use, and how idle threads wait.

A robot's computer runs SLAM, drivers and perception beside this node. Two things decide how the
node fares there (docs/benchmarks.md, "CPU threads"):

- **How many threads.** `set_cpu_threads(n)` (the `cpu_threads` parameter; 0: every core this
  process may run on) sets torch's intra-op threads, faiss's OpenMP threads and the count ONNX
  Runtime sessions are created with, and keeps OpenCV to one thread per call (re-ranking verifies
  pairs in its own pool of `n` threads).
- **How idle threads wait.** OpenMP threads spin for a while after each parallel region. Alone, that
  saves a wake-up per operator; beside a busy process the spinning threads take the cores the
  working thread needs, and LighterGlue ran 4-5x slower next to one busy single-threaded process.
  `vpr_ros/__init__.py` therefore makes OMP_WAIT_POLICY=PASSIVE the default before torch or faiss
  load their OpenMP runtimes (an explicit value in the environment wins; a process that imported
  torch first is warned once); ONNX Runtime sessions are created without spinning (backends.py).
"""

import os
from contextlib import contextmanager

import vpr_ros
from vpr_ros.core import LOGGER

_configured: int | None = None
_warned = False


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def cpu_threads() -> int:
    """The thread count set by set_cpu_threads, else every available core."""
    return _configured or available_cores()


def set_cpu_threads(count: int = 0) -> int:
    """Use `count` threads (0: every available core) in torch, faiss and new ONNX Runtime sessions, and
    one per OpenCV call; returns the count used."""
    global _configured, _warned
    import cv2
    import faiss
    import torch

    if count < 0:
        raise ValueError(f"cpu_threads must be 0 (all cores) or positive, got {count}")
    count = count or available_cores()
    _configured = count
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    faiss.omp_set_num_threads(count)
    cv2.setNumThreads(1)
    if vpr_ros.OPENMP_LOADED_FIRST and not _warned:
        _warned = True
        LOGGER.warning("torch or faiss was imported before vpr_ros, so idle OpenMP threads spin and slow this "
                       "process down beside busy ones; import vpr_ros first or set OMP_WAIT_POLICY=PASSIVE")
    LOGGER.debug("cpu threads: %d (OMP_WAIT_POLICY=%s)", count, os.environ.get("OMP_WAIT_POLICY", "unset"))
    return count



@contextmanager
def one_intra_op_thread():
    """torch runs each operator on one thread inside the block (callers run work side by side instead:
    LightGlue's many small operators lose more to OpenMP barriers than they gain from splitting)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
