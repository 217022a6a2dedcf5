"""The ROS-free core of vpr_ros.

Nothing under this package imports rclpy, message packages or vpr_ros_interfaces (a test enforces
this), so every stage runs and is tested without a ROS graph, from scripts, notebooks or the node.

The pipeline's entry points sit here: `config` (LocalizerConfig), `gate` (which frames are
processed), `localizer` (the per-frame pipeline) and `constraints` (what an accepted hypothesis
means for a pose graph). The stages are subpackages: `inputs`, `descriptors`, `runtime`, `maps`,
`matching`, `uncertainty`, `evaluation` (docs/development.md).
"""

import logging

LOGGER = logging.getLogger("vpr_ros")
