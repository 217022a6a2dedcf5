"""The ROS-free core of vpr_ros.

Nothing under this package imports rclpy, message packages or vpr_ros_interfaces (a test enforces
this), so every stage runs and is tested without a ROS graph, from scripts, notebooks or the node.

Its rooms, lowest first, each importing only from itself and the rooms below: `inputs`, `descriptors`,
`runtime`, `matching`, `uncertainty`, `map` (storage), `retrieval` (ranking a frame against a map),
`config` (LocalizerConfig), `build` (making maps), `pipeline` (the per-frame Localizer, its steps,
decisions and results), `evaluation` (docs/development.md says what each holds).
"""

import logging

LOGGER = logging.getLogger("vpr_ros")
