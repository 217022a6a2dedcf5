"""Conversions between ROS message fields and the core's plain Python/numpy values."""

from builtin_interfaces.msg import Time

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds since the epoch."""
    return stamp.sec * NS_PER_S + stamp.nanosec


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds since the epoch (>= 0) -> builtin_interfaces/Time."""
    if ns < 0:
        raise ValueError(f"a ROS time cannot be negative: {ns} ns")
    sec, nanosec = divmod(int(ns), NS_PER_S)
    if sec >= 2**31:
        raise ValueError(f"{ns} ns is past the range of builtin_interfaces/Time (int32 seconds)")
    return Time(sec=sec, nanosec=nanosec)
