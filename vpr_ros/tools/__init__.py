"""Command-line tools (console scripts): each module has `main(argv) -> int`."""

import argparse


def add_bag_topic_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The options that pick images and poses out of a bag (shared by vpr_build_map and vpr_eval)."""
    parser.add_argument("--image-topic", help="with --bag: sensor_msgs/Image or CompressedImage topic")
    parser.add_argument("--pose-topic",
                        help="with --bag: PoseStamped, PoseWithCovarianceStamped or Odometry topic")
    parser.add_argument("--tf-frames", nargs=2, metavar=("PARENT", "CHILD"),
                        help="with --bag: poses from the TF edge PARENT -> CHILD")
