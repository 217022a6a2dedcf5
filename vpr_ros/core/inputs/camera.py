"""Camera intrinsics a relative pose may be computed with: checked, and scaled to the image they serve.

A wrong K does not fail loudly: the essential matrix is fitted in normalised coordinates, so a K with
a focal length of 1e-9 px, or the K of a 64x48 calibration applied to 640x480 frames, yields a
confident, wrong rotation. `intrinsics_for` therefore accepts a K only when it is finite, describes a
pinhole camera with a plausible field of view and a principal point inside the image, and either
matches the image size or the image is a plain resize of the calibrated size (same aspect ratio): K
is then scaled. Everything else raises IntrinsicsError naming the problem.
"""

import math

import numpy as np

MIN_FOV_DEG = 1.0  # narrower than a 1000 mm lens on a full-frame sensor
MAX_FOV_DEG = 170.0  # a pinhole K cannot describe wider; fisheye models are not handled here
ASPECT_TOLERANCE = 0.01  # a resize keeps the aspect ratio to within this fraction


class IntrinsicsError(ValueError):
    """Camera intrinsics that must not be used for a relative pose; the message says why."""


def intrinsics_for(k, calibrated_size: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """A 3x3 camera matrix for images of `image_size` (width, height), from the row-major `k` of a
    calibration at `calibrated_size` (width, height; (0, 0) when the CameraInfo does not say)."""
    k = np.asarray(k, np.float64)
    if k.size != 9:
        raise IntrinsicsError(f"K has {k.size} entries, not 9")
    k = k.reshape(3, 3)
    if not np.isfinite(k).all():
        raise IntrinsicsError("K has NaN or infinite entries")
    if not np.allclose(k[2], [0.0, 0.0, 1.0]) or k[1, 0] != 0.0:
        raise IntrinsicsError(f"K is not a pinhole camera matrix (last row {k[2].tolist()}, K[1][0] {k[1, 0]})")
    width, height = (int(v) for v in image_size)
    cal_w, cal_h = (int(v) for v in calibrated_size)
    if width <= 0 or height <= 0:
        raise IntrinsicsError(f"image size {width}x{height} is empty")
    if (cal_w, cal_h) == (0, 0):  # size unknown: the K must fit the image as it is
        cal_w, cal_h = width, height
    elif cal_w <= 0 or cal_h <= 0:
        raise IntrinsicsError(f"calibrated size {cal_w}x{cal_h} is invalid")
    if (cal_w, cal_h) != (width, height):
        if abs((width / height) / (cal_w / cal_h) - 1.0) > ASPECT_TOLERANCE:
            raise IntrinsicsError(f"K was calibrated for {cal_w}x{cal_h} images, not {width}x{height} "
                                  "(another aspect ratio: not a resize; publish the CameraInfo of this stream)")
        scale = np.diag([width / cal_w, height / cal_h, 1.0])
        # pixel centres: x' + 0.5 = s (x + 0.5)
        k = scale @ k
        k[0, 2] += 0.5 * (width / cal_w - 1.0)
        k[1, 2] += 0.5 * (height / cal_h - 1.0)
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    if fx <= 0 or fy <= 0:
        raise IntrinsicsError(f"focal lengths must be positive (fx {fx:g}, fy {fy:g})")
    for name, focal, side in (("horizontal", fx, width), ("vertical", fy, height)):
        fov = math.degrees(2 * math.atan(side / (2 * focal)))
        if not MIN_FOV_DEG <= fov <= MAX_FOV_DEG:
            raise IntrinsicsError(f"{name} field of view {fov:.2f} deg (focal {focal:g} px over {side} px) is "
                                  f"outside the plausible {MIN_FOV_DEG:g}..{MAX_FOV_DEG:g} deg")
    if not 0 <= cx <= width or not 0 <= cy <= height:
        raise IntrinsicsError(f"principal point ({cx:g}, {cy:g}) lies outside the {width}x{height} image")
    if not 0.2 <= fx / fy <= 5.0:
        raise IntrinsicsError(f"pixel aspect fx/fy {fx / fy:g} is implausible")
    return k


class CameraIntrinsics:
    """The camera's last valid calibration and the K it gives for each image size (a camera_info stream).

    `update` takes a CameraInfo's row-major K, its size and region of interest and returns an error
    message when K is unusable (the previous calibration stays); `for_size` returns K for images
    of that size, or None with the reason in `rejected[size]` when the calibration does not fit them.
    """

    def __init__(self):
        self.calibration: tuple[np.ndarray, tuple[int, int]] | None = None  # (3 x 3 K, (width, height))
        self._by_size: dict[tuple[int, int], np.ndarray | None] = {}
        self.rejected: dict[tuple[int, int], str] = {}

    def instead(self, consequence: str) -> str:
        """What is used after a CameraInfo was refused: the last good calibration when there is one, else nothing
        (`consequence` says what that means)."""
        if self.calibration is None:
            return f"{consequence} until a usable CameraInfo arrives; fix the camera driver's CameraInfo"
        (k, (width, height)) = self.calibration
        return (f"the last good calibration stays in use (fx {k[0, 0]:g}, fy {k[1, 1]:g}, cx {k[0, 2]:g}, "
                f"cy {k[1, 2]:g} at {width}x{height}); fix the camera driver's CameraInfo")

    def update(self, k, size: tuple[int, int], roi: tuple[int, int, int, int] = (0, 0, 0, 0)) -> str | None:
        """roi: (x_offset, y_offset, width, height); a non-empty one other than the full size crops K."""
        k = np.asarray(k, np.float64).reshape(-1)
        x_offset, y_offset, width, height = roi
        if width and height and (width, height) != tuple(size) and k.size == 9:
            k = k.reshape(3, 3).copy()
            k[0, 2] -= x_offset
            k[1, 2] -= y_offset
            k, size = k.reshape(-1), (int(width), int(height))
        if self.calibration is not None and np.array_equal(self.calibration[0].reshape(-1), k) \
                and self.calibration[1] == tuple(size):
            return None
        if k.size != 9 or not np.isfinite(k).all():
            return "K has NaN or infinite entries" if k.size == 9 else f"K has {k.size} entries, not 9"
        self.calibration = (k.reshape(3, 3), (int(size[0]), int(size[1])))
        self._by_size, self.rejected = {}, {}
        return None

    def for_size(self, image_size: tuple[int, int]) -> np.ndarray | None:
        """K for images of (width, height), or None (no calibration yet, or rejected: see `rejected`)."""
        if self.calibration is None:
            return None
        if image_size not in self._by_size:
            try:
                self._by_size[image_size] = intrinsics_for(self.calibration[0], self.calibration[1], image_size)
            except IntrinsicsError as exc:
                self._by_size[image_size], self.rejected[image_size] = None, str(exc)
        return self._by_size[image_size]
