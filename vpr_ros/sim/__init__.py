"""Deterministic simulated robot runs (ROS-free): a procedural street world, a camera that drives
laps through it under changing appearance, and the rendered frames with ground-truth poses."""
