"""A reference pose-graph back-end for the node's output (GTSAM, iSAM2): odometry keyframes, loop closures
and localised poses as factors, the optimised trajectory out. ROS-free; work in progress for issue 40."""
