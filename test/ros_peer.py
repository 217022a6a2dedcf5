"""A second ROS 2 process for the tests: publishes the project's messages. (The services are tested
against the real node in its own process: test_node_robot.py.)

Run as `python ros_peer.py talk --seconds S`. It prints "ready" once its entities exist and
exits by itself after S seconds, so a failed test never leaves it behind for long.
"""

import argparse
import math
import sys
import time


def example_hypotheses():
    """A PlaceHypotheses message with every kind of field set to a value that is easy to check."""
    from geometry_msgs.msg import Point, Pose, Quaternion
    from vpr_ros_interfaces.msg import PlaceHypotheses, PlaceHypothesis, StageTiming

    msg = PlaceHypotheses()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_000, 123_456_789
    msg.header.frame_id = "camera_optical"
    msg.query_id, msg.map_name, msg.map_size, msg.map_frame_id = 42, "corridor", 111, "map"
    msg.descriptor, msg.backend, msg.query_uncertainty = "default", "torch/cpu", 0.25
    for rank in range(3):
        hyp = PlaceHypothesis(map_key=1000 + rank, rank=rank, global_rank=2 - rank,
                              global_similarity=0.9 - 0.1 * rank, rerank_score=float("nan"),
                              verified=rank == 0, match_count=300 - rank, inlier_count=200 - rank,
                              inlier_ratio=0.5, verification_note="" if rank == 0 else "too_few_inliers",
                              query_uncertainty=0.25, map_uncertainty=0.125 * (rank + 1),
                              probability=0.75 - 0.25 * rank, has_pose=True, has_gps=rank == 1,
                              latitude=48.1, longitude=11.5, altitude=520.0)
        hyp.map_stamp.sec, hyp.map_stamp.nanosec = 1_600_000_000 + rank, 5
        hyp.map_pose = Pose(position=Point(x=1.0 * rank, y=-2.0, z=0.5),
                            orientation=Quaternion(x=0.0, y=0.0, z=math.sin(0.25), w=math.cos(0.25)))
        msg.hypotheses.append(hyp)
    msg.timing = [StageTiming(stage="descriptor", ms=12.5), StageTiming(stage="total", ms=20.0)]
    return msg


def example_loop_closure():
    """A LoopClosure message with a full 6x6 covariance."""
    from vpr_ros_interfaces.msg import LoopClosure

    msg = LoopClosure()
    msg.header.stamp.sec, msg.header.frame_id = 1_700_000_000, "camera_optical"
    msg.query_key, msg.match_key, msg.map_name = 7, 3, "online"
    msg.query_stamp.sec, msg.match_stamp.sec = 1_700_000_000, 1_699_999_000
    msg.relative_pose.position.x, msg.relative_pose.orientation.w = 0.6, 1.0
    msg.covariance = [float(i) for i in range(36)]
    msg.translation_scale_known, msg.scale_note = False, "no depth: neither the map frame nor the query has any"
    msg.match_frame_id = "map_camera_optical"
    msg.robot_id, msg.session_id, msg.match_session_id, msg.match_robot_id = "scout", "day3", "day1", "r1"
    msg.probability, msg.global_similarity, msg.inlier_count = 0.875, 0.5, 150
    msg.method, msg.method_detail = LoopClosure.METHOD_ESSENTIAL, "xfeat+lighterglue/magsac++"
    return msg


def talk(node, seconds: float) -> None:
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
    from vpr_ros_interfaces.msg import LoopClosure, PlaceHypotheses

    qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE,
                     durability=QoSDurabilityPolicy.VOLATILE)
    hyp_pub = node.create_publisher(PlaceHypotheses, "place_hypotheses", qos)
    loop_pub = node.create_publisher(LoopClosure, "loop_closure", qos)
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        hyp_pub.publish(example_hypotheses())
        loop_pub.publish(example_loop_closure())
        time.sleep(0.1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["talk"])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    node = rclpy.create_node(f"vpr_ros_test_peer_{args.role}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        talk(node, args.seconds)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
