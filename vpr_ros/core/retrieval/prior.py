"""Search with what the robot already knows: a position prior restricts retrieval to nearby map frames.

A prior is a position with a covariance (a PoseWithCovarianceStamped from an EKF or the last fix, in the
map's frame; or a NavSatFix, for maps whose frames have GPS). The searched region is a disc around it of
radius k sigma, sigma the largest horizontal standard deviation of the covariance, clipped to a floor and a
ceiling (RadiusPolicy). Map frames without a position (no pose, or no GPS for a GPS prior) cannot be ruled
out and stay in the region. The region is handed to faiss as an ID selector (DescriptorIndex.search's
`subset`), so the index itself skips the other frames. A stale prior, or a region holding no map frame,
searches the whole map, and the result says so.
"""

from dataclasses import dataclass

import numpy as np

from vpr_ros.core.inputs.sync import PositionPrior
from vpr_ros.core.map.frames import FrameTable

EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True)
class RadiusPolicy:
    """radius = clip(k_sigma * sigma, min_m, max_m)."""

    k_sigma: float = 4.0
    min_m: float = 10.0
    max_m: float = 1000.0

    def radius(self, prior: PositionPrior) -> float:
        return float(np.clip(self.k_sigma * prior.sigma_m, self.min_m, self.max_m))


@dataclass
class Region:
    """The map frames a prior allows (a boolean mask over map keys) and a line saying how it was chosen."""

    mask: np.ndarray | None  # N bool, None: the whole map
    note: str

    @property
    def frames(self) -> int | None:
        return None if self.mask is None else int(self.mask.sum())


class PositionGrid:
    """Map frames bucketed by horizontal position in square cells, sorted by cell: the frames within a radius
    are found from the cells it covers (binary search per cell row), not by measuring every frame."""

    def __init__(self, xy: np.ndarray, cell_m: float = 10.0):
        """xy: N x 2 metres, NaN rows for frames without a position."""
        self.xy, self.cell = np.asarray(xy, np.float64), float(cell_m)
        known = np.isfinite(self.xy).all(axis=1)
        self.known, rows = known, np.flatnonzero(known)
        cells = np.floor(self.xy[rows] / self.cell).astype(np.int64)
        self.origin = cells.min(axis=0) if len(rows) else np.zeros(2, np.int64)
        cells -= self.origin
        self.shape = cells.max(axis=0) + 1 if len(rows) else np.zeros(2, np.int64)
        keys = cells[:, 1] * self.shape[0] + cells[:, 0]
        order = np.argsort(keys, kind="stable")
        self.keys, self.rows = keys[order], rows[order]

    def within(self, centre, radius: float) -> np.ndarray:
        """Row indices of the frames with a position within `radius` of `centre` (x, y), ascending."""
        if not len(self.rows):
            return np.zeros(0, np.int64)
        centre = np.asarray(centre, np.float64)
        lo = np.floor((centre - radius) / self.cell).astype(np.int64) - self.origin
        hi = np.floor((centre + radius) / self.cell).astype(np.int64) - self.origin
        lo, hi = np.maximum(lo, 0), np.minimum(hi, self.shape - 1)
        if (lo > hi).any():
            return np.zeros(0, np.int64)
        lines = np.arange(lo[1], hi[1] + 1) * self.shape[0]
        starts = np.searchsorted(self.keys, lines + lo[0], side="left")
        ends = np.searchsorted(self.keys, lines + hi[0], side="right")
        if not (ends > starts).any():
            return np.zeros(0, np.int64)
        candidates = np.concatenate([self.rows[a:b] for a, b in zip(starts, ends) if b > a])
        near = np.hypot(*(self.xy[candidates] - centre).T) <= radius
        return np.sort(candidates[near])


def _local_xy(frames: FrameTable, kind: str) -> tuple[np.ndarray, float]:
    """Each map frame's horizontal position in metres (NaN unknown) for priors of `kind`, and for GPS the
    reference latitude of the local east-north projection (equirectangular about the map's mean latitude:
    well under 0.1 % off across a city)."""
    if kind == "pose":
        return np.where(frames.has_pose[:, None], frames.pose[:, :2], np.nan), 0.0
    lat0 = float(frames.gps[frames.has_gps, 0].mean()) if frames.has_gps.any() else 0.0
    xy = _east_north(frames.gps[:, 0], frames.gps[:, 1], lat0)
    return np.where(frames.has_gps[:, None], xy, np.nan), lat0


def _east_north(lat, lon, lat0: float) -> np.ndarray:
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    return np.stack([np.radians(lon) * EARTH_RADIUS_M * np.cos(np.radians(lat0)),
                     np.radians(lat) * EARTH_RADIUS_M], axis=-1)


class RegionFinder:
    """The region a prior allows, with the map's position grids kept between frames (rebuilt when the map grows)."""

    def __init__(self, policy: RadiusPolicy | None = None, max_age_s: float = 2.0):
        self.policy, self.max_age_s = policy or RadiusPolicy(), max_age_s
        self._grids: dict[str, tuple[int, int, PositionGrid, float]] = {}

    def _grid(self, frames: FrameTable, kind: str) -> tuple[PositionGrid, float]:
        cached = self._grids.get(kind)
        if cached is None or cached[:2] != (id(frames), len(frames)):
            xy, lat0 = _local_xy(frames, kind)
            cached = (id(frames), len(frames), PositionGrid(xy), lat0)
            self._grids[kind] = cached
        return cached[2], cached[3]

    def region(self, frames: FrameTable, prior: PositionPrior | None, stamp_ns: int) -> Region:
        """The map keys to search for a frame stamped `stamp_ns` given `prior`."""
        if prior is None:
            return Region(None, "map")
        age = abs(stamp_ns - prior.stamp_ns) / 1e9
        if age > self.max_age_s:
            return Region(None, f"map (prior {age:.1f} s from the frame: stale)")
        grid, lat0 = self._grid(frames, prior.kind)
        if not grid.known.any():
            return Region(None, f"map (no map frame has a {'pose' if prior.kind == 'pose' else 'GPS position'})")
        centre = (np.asarray(prior.position[:2]) if prior.kind == "pose" else
                  _east_north(prior.position[0], prior.position[1], lat0))
        radius = self.policy.radius(prior)
        inside = grid.within(centre, radius)
        if not len(inside):
            return Region(None, f"map (no map frame within {radius:.0f} m of the prior)")
        mask = ~grid.known
        mask[inside] = True
        return Region(mask, f"prior: {int(mask.sum())} of {len(mask)} map frames within {radius:.0f} m")

