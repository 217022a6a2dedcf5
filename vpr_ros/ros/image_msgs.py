"""sensor_msgs/Image and CompressedImage -> numpy, with every field checked (no cv_bridge needed).

Supported encodings: rgb8, bgr8, rgba8, bgra8, mono8, 8UC1, 8UC3 (read as bgr8), 8UC4 (bgra8),
mono16, 16UC1. Anything else, a zero size, a side outside the pipeline's bounds, a step too small
for the width, or a data buffer of the wrong length raises ImageError naming the problem before any
pixel is copied; the caller skips the frame. Compressed images (PNG, JPEG) have their size read from
the header and checked before decoding, so a small file that decodes to a huge image is refused
without allocating it. Depth images (16UC1/mono16 millimetres, 32FC1 metres) go through the same
checks and come out in metres (`depth_to_metres`, core.inputs.depth), raising DepthError.
"""

import cv2
import numpy as np

from vpr_ros.core.inputs.depth import DepthError, to_metres
from vpr_ros.core.inputs.images import ImageError, check_size, encoded_size, opencv_to_rgb

# encoding -> (dtype, channels, conversion to RGB(A) or None)
ENCODINGS = {
    "rgb8": (np.uint8, 3, None), "bgr8": (np.uint8, 3, cv2.COLOR_BGR2RGB), "8UC3": (np.uint8, 3, cv2.COLOR_BGR2RGB),
    "rgba8": (np.uint8, 4, None), "bgra8": (np.uint8, 4, cv2.COLOR_BGRA2RGBA), "8UC4": (np.uint8, 4, cv2.COLOR_BGRA2RGBA),
    "mono8": (np.uint8, 1, None), "8UC1": (np.uint8, 1, None),
    "mono16": (np.uint16, 1, None), "16UC1": (np.uint16, 1, None),
}


def image_to_array(msg) -> np.ndarray:
    """sensor_msgs/Image -> H x W (mono) or H x W x 3/4 RGB(A) array (uint8 or uint16)."""
    if msg.encoding not in ENCODINGS:
        raise ImageError(f"unsupported image encoding {msg.encoding!r}; supported: {sorted(ENCODINGS)}")
    dtype, channels, convert = ENCODINGS[msg.encoding]
    image = _pixels(msg, dtype, channels)
    return cv2.cvtColor(image, convert) if convert is not None else image


def depth_to_metres(msg) -> np.ndarray:
    """A depth sensor_msgs/Image -> H x W float32 metres, NaN where there is no reading; DepthError otherwise."""
    dtype = {"16UC1": np.uint16, "mono16": np.uint16, "32FC1": np.float32}.get(msg.encoding)
    if dtype is None:
        raise DepthError("encoding", f"depth encoding {msg.encoding!r} is not supported; use 16UC1 (millimetres) or "
                                     "32FC1 (metres)")
    try:
        return to_metres(_pixels(msg, dtype, 1), msg.encoding)
    except ImageError as exc:
        raise DepthError("malformed", f"depth image: {exc}") from exc


def _pixels(msg, dtype, channels: int) -> np.ndarray:
    """The message's pixels as H x W (x channels) of `dtype`, every field checked first."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    check_size(width, height)
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than a {msg.encoding} row of width {width} ({row_bytes} bytes)")
    data = np.frombuffer(msg.data, np.uint8)
    if data.size != step * height:
        raise ImageError(f"image data has {data.size} bytes; {height} rows of step {step} need {step * height}")
    rows = data.reshape(height, step)[:, :row_bytes]
    image = np.ascontiguousarray(rows).view(dtype)
    if np.dtype(dtype).itemsize > 1 and bool(msg.is_bigendian) != (np.little_endian is False):
        image = image.byteswap()
    return image.reshape(height, width, channels) if channels > 1 else image.reshape(height, width)


def compressed_to_array(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg, png, ...) -> H x W or H x W x 3/4 RGB(A) array."""
    data = np.frombuffer(msg.data, np.uint8)
    if data.size == 0:
        raise ImageError("compressed image has no data")
    try:
        size = encoded_size(data)
    except ImageError as exc:
        raise ImageError(f"cannot decode compressed image (format {msg.format!r}, {data.size} bytes): {exc}") from exc
    check_size(*size)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"cannot decode compressed image (format {msg.format!r}, {data.size} bytes)")
    return opencv_to_rgb(image)


def image_qos(reliability: str, depth: int):
    """The QoS of the image, camera info and depth subscriptions: the sensor-data profile (best effort, as
    camera drivers publish) or reliable (bag replays, tests), keeping the last `depth` messages."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if reliability == "sensor_data":
        return QoSProfile(depth=depth, reliability=qos_profile_sensor_data.reliability,
                          history=qos_profile_sensor_data.history, durability=qos_profile_sensor_data.durability)
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
