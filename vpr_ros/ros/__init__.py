"""The ROS 2 layer of vpr_ros: message conversion, the node, its launch entry points.

Everything here is thin: it converts between ROS messages and the numpy data of `vpr_ros.core`,
holds parameters and QoS, and calls the core.
"""
