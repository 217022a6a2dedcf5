"""Depth images aligned to the colour camera: conversion to metres, checks, and the depth of keypoints.

A depth image is *aligned* when it sees from the colour camera's optical centre along its axes (a
RealSense `aligned_depth_to_color` topic, a simulator's depth buffer): a colour pixel (u, v) then has its
depth at K_depth K_colour^-1 (u, v, 1), which is the same pixel when both share one CameraInfo.

Encodings: 16UC1 (and mono16) in millimetres, 32FC1 in metres (REP 118). 0, NaN, inf and readings
outside [MIN_DEPTH_M, MAX_DEPTH_M] mean "no reading". A depth image that cannot be used raises
DepthError with a short `reason` (a diagnostics counter) and a sentence saying why.
"""

import warnings

import numpy as np

MILLIMETRE_ENCODINGS = ("16UC1", "mono16")
METRE_ENCODINGS = ("32FC1",)
MIN_DEPTH_M, MAX_DEPTH_M = 0.05, 200.0
MIN_VALID_SHARE = 0.01  # a depth image with fewer readings than this is treated as broken
WINDOW = 1  # keypoint depth: the median of the (2 WINDOW + 1)^2 pixels around it ...
AGREEMENT = 0.10  # ... when at least 3/4 of them (and 5) lie within this fraction of it (else it is on an edge)


class DepthError(ValueError):
    """A depth image that cannot give metric poses; `reason` is one word for counters."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def to_metres(array: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded depth image -> H x W float32 metres, NaN where there is no reading."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0:
        raise DepthError("shape", f"a depth image must be H x W with pixels, got shape {array.shape}")
    if encoding in MILLIMETRE_ENCODINGS:
        metres = array.astype(np.float32) * np.float32(1e-3)
    elif encoding in METRE_ENCODINGS:
        metres = array.astype(np.float32, copy=True)
    else:
        raise DepthError("encoding", f"depth encoding {encoding!r} is not supported; use 16UC1 (millimetres) "
                                     "or 32FC1 (metres)")
    with np.errstate(invalid="ignore"):
        metres[~((metres >= MIN_DEPTH_M) & (metres <= MAX_DEPTH_M))] = np.nan  # also NaN and inf
    return metres


def check_depth(depth_m: np.ndarray, image_size: tuple[int, int], colour_K: np.ndarray | None = None,
                depth_K: np.ndarray | None = None) -> None:
    """Raise DepthError unless `depth_m` (to_metres' output) can serve colour images of `image_size` (W, H):
    the same size, or any size with its own intrinsics `depth_K` (and the colour ones); enough readings."""
    height, width = depth_m.shape
    if (width, height) != tuple(image_size) and (depth_K is None or colour_K is None):
        raise DepthError("size", f"the depth image is {width}x{height} and the colour image {image_size[0]}x"
                                 f"{image_size[1]}; an aligned depth image of another size needs its own CameraInfo")
    share = float(np.isfinite(depth_m).mean())
    if share < MIN_VALID_SHARE:
        raise DepthError("empty", f"the depth image has readings in {share:.1%} of its pixels (all zero, NaN or "
                                  f"out of range); at least {MIN_VALID_SHARE:.0%} are needed")


def keypoint_depth(depth_m: np.ndarray, keypoints: np.ndarray, colour_K: np.ndarray | None = None,
                   depth_K: np.ndarray | None = None) -> np.ndarray:
    """Depth (m) of colour-image keypoints (M x 2 pixels) from an aligned depth image; NaN where it has no
    reading or the keypoint lies on a depth edge. The depth is the median of the readings around the
    keypoint that lie within AGREEMENT of their median, when those are at least 3/4 of its readings and
    5 pixels: sensor noise (a few % at range) passes, a window split between a facade and what is behind it
    does not."""
    points = np.asarray(keypoints, np.float64).reshape(-1, 2)
    if depth_K is not None and colour_K is not None:
        mapping = np.asarray(depth_K, np.float64) @ np.linalg.inv(np.asarray(colour_K, np.float64))
        points = points @ mapping[:2, :2].T + mapping[:2, 2]
    height, width = depth_m.shape
    out = np.full(len(points), np.nan, np.float32)
    if not len(points):
        return out
    cols, rows = np.round(points[:, 0]).astype(np.int64), np.round(points[:, 1]).astype(np.int64)
    offsets = np.arange(-WINDOW, WINDOW + 1)
    r = rows[:, None, None] + offsets[None, :, None]
    c = cols[:, None, None] + offsets[None, None, :]
    inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    values = np.where(inside, depth_m[r.clip(0, height - 1), c.clip(0, width - 1)], np.nan).reshape(len(points), -1)
    with warnings.catch_warnings():  # rows without a reading: NaN is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(values, axis=1)
        with np.errstate(invalid="ignore"):
            close = np.abs(values - median[:, None]) <= AGREEMENT * median[:, None]
        agreed = np.nanmedian(np.where(close, values, np.nan), axis=1)
    agreeing, readings = close.sum(axis=1), np.isfinite(values).sum(axis=1)
    keep = (agreeing >= 5) & (agreeing >= 0.75 * readings)
    out[keep] = agreed[keep]
    return out
