"""Deterministic simulated robot runs (ROS-free): a procedural street world, a camera that drives
laps through it under changing appearance, the rendered frames with ground-truth poses, and the
robot-like rosbag2 files they are written to (bag_writer.py)."""
