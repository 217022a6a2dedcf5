"""vpr_ros: visual place recognition and loop closure for ROS 2.

`vpr_ros.core` computes (descriptors, maps, search, re-ranking, uncertainty, evaluation) and never
imports ROS; `vpr_ros.ros` converts between ROS messages and the core's numpy data.
"""

__version__ = "0.1.0"
