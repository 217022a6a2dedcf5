"""The ROS-free core of vpr_ros.

Nothing under this package imports rclpy, message packages or vpr_ros_interfaces (a test enforces
this), so every stage runs and is tested without a ROS graph, from scripts, notebooks or the node.
"""

import logging

LOGGER = logging.getLogger("vpr_ros")
