"""vpr_ros: visual place recognition and loop closure for ROS 2.

`vpr_ros.core` computes (descriptors, maps, search, re-ranking, uncertainty, evaluation) and never
imports ROS; `vpr_ros.ros` converts between ROS messages and the core's numpy data.
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

# idle OpenMP threads sleep rather than spin, so that the node shares a busy CPU in proportion; it
# must be in the environment before torch or faiss loads its OpenMP runtime (core/runtime/threads.py)
OPENMP_LOADED_FIRST = "OMP_WAIT_POLICY" not in _os.environ and bool({"torch", "faiss"} & set(_sys.modules))
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
