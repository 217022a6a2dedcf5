"""What a depth camera makes of the renderer's exact depth: range limits, noise that grows with distance,
holes at depth edges and dropouts, millimetre quantisation (sensor_msgs/Image 16UC1, 0 = no reading).

The noise is that of a stereo camera: a disparity error of `disparity_sigma_px` becomes a depth error
sigma_z = z^2 sigma_d / (f b) for focal length f (pixels) and baseline b, about 2 % of the range at 10 m
for the defaults (a ZED 2 class sensor: < 1 % at 3 m, < 5 % at 15 m). Stereo matching finds nothing where
one camera sees what the other cannot, so a band of pixels beside every depth jump is left empty, as are
random blobs (specular or textureless patches) and everything beyond `max_m` or nearer than `min_m`.
"""

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class DepthSensor:
    """Noise and holes of a simulated depth camera aligned to the colour camera."""

    baseline_m: float = 0.12
    disparity_sigma_px: float = 0.08
    min_m: float = 0.3
    max_m: float = 20.0
    edge_jump: float = 0.05  # relative depth change between neighbours that counts as an edge
    edge_band_px: int = 2  # pixels left empty on each side of an edge
    dropout: float = 0.02  # share of the image lost to random blobs

    def sigma_m(self, depth: np.ndarray, focal_px: float) -> np.ndarray:
        """Standard deviation of the measured depth at true depth `depth` (m)."""
        return np.asarray(depth, np.float64) ** 2 * self.disparity_sigma_px / (focal_px * self.baseline_m)

    def measure(self, depth: np.ndarray, focal_px: float, rng: np.random.Generator) -> np.ndarray:
        """Exact depth (H x W float, inf where nothing is hit) -> a 16UC1 reading in millimetres."""
        depth = np.asarray(depth, np.float64)
        finite = np.isfinite(depth)
        true = np.where(finite, depth, 0.0)
        measured = true + rng.standard_normal(depth.shape) * self.sigma_m(true, focal_px)
        valid = finite & (true >= self.min_m) & (true <= self.max_m)
        valid &= ~self._edges(np.where(finite, depth, 1e6))
        valid &= ~self._blobs(depth.shape, rng)
        millimetres = np.where(valid, np.round(measured * 1000.0), 0.0)
        return np.clip(millimetres, 0, 65535).astype(np.uint16)

    def _edges(self, depth: np.ndarray) -> np.ndarray:
        """Pixels within edge_band_px of a jump of more than edge_jump between neighbours."""
        jump = np.zeros(depth.shape, bool)
        for axis in (0, 1):
            a, b = (depth[1:], depth[:-1]) if axis == 0 else (depth[:, 1:], depth[:, :-1])
            edge = np.abs(a - b) > self.edge_jump * np.minimum(a, b)
            if axis == 0:
                jump[1:] |= edge
                jump[:-1] |= edge
            else:
                jump[:, 1:] |= edge
                jump[:, :-1] |= edge
        if self.edge_band_px > 1:
            size = 2 * self.edge_band_px - 1
            jump = cv2.dilate(jump.astype(np.uint8), np.ones((size, size), np.uint8)) > 0
        return jump

    def _blobs(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """Random elliptical holes covering about `dropout` of the image."""
        height, width = shape
        mask = np.zeros(shape, np.uint8)
        if self.dropout <= 0:
            return mask > 0
        radius = max(width, height) / 60
        count = int(round(self.dropout * width * height / (np.pi * radius ** 2)))
        for _ in range(count):
            centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
            axes = (max(int(radius * rng.uniform(0.5, 1.5)), 1), max(int(radius * rng.uniform(0.5, 1.5)), 1))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        return mask > 0
