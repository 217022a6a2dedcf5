"""Conversions between ROS message fields and the core's plain Python/numpy values."""

from builtin_interfaces.msg import Time

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds since the epoch."""
    return stamp.sec * NS_PER_S + stamp.nanosec


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds since the epoch -> builtin_interfaces/Time. Never raises: a negative time
    keeps its value (sec < 0, nanosec in [0, 1e9), as rclpy's Time does), and a time past the int32
    seconds of the message is clamped to its range."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    if sec >= 2**31:
        sec, nanosec = 2**31 - 1, NS_PER_S - 1
    elif sec < -(2**31):
        sec, nanosec = -(2**31), 0
    return Time(sec=sec, nanosec=nanosec)
