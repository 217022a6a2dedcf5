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

from vpr_ros.core.maps.frames import FrameTable

EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True)
class PositionPrior:
    """Where the robot is believed to be at `stamp_ns`."""

    position: tuple[float, float, float]  # x y z in the map's frame ("pose"), or lat lon alt ("gps")
    covariance: np.ndarray  # 3 x 3, m^2 (x y z; for GPS east north up)
    stamp_ns: int
    kind: str = "pose"  # "pose" or "gps"

    def __post_init__(self):
        if self.kind not in ("pose", "gps"):
            raise ValueError(f"a prior is a 'pose' or a 'gps' prior, got {self.kind!r}")
        covariance = np.asarray(self.covariance, np.float64)
        if covariance.shape != (3, 3):
            raise ValueError(f"a prior's covariance is 3 x 3, got shape {covariance.shape}")
        if not (np.isfinite(self.position).all() and np.isfinite(covariance).all()):
            raise ValueError("a prior's position and covariance must be finite")
        if np.linalg.eigvalsh((covariance[:2, :2] + covariance[:2, :2].T) / 2).min() < 0:
            raise ValueError("a prior's horizontal covariance must be positive semi-definite")

    @property
    def sigma_m(self) -> float:
        """The largest horizontal standard deviation (metres)."""
        block = np.asarray(self.covariance, np.float64)[:2, :2]
        return float(np.sqrt(max(np.linalg.eigvalsh((block + block.T) / 2).max(), 0.0)))


@dataclass(frozen=True)
class RadiusPolicy:
    """radius = clip(k_sigma * sigma, min_m, max_m)."""

    k_sigma: float = 3.0
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


def horizontal_distances(frames: FrameTable, prior: PositionPrior) -> tuple[np.ndarray, np.ndarray]:
    """Each map frame's horizontal distance (m) from the prior, and whether it has a position of that kind."""
    if prior.kind == "pose":
        known = frames.has_pose
        offset = frames.pose[:, :2] - np.asarray(prior.position[:2])
    else:
        known = frames.has_gps
        lat0 = np.radians(prior.position[0])
        north = np.radians(frames.gps[:, 0] - prior.position[0]) * EARTH_RADIUS_M
        east = np.radians(frames.gps[:, 1] - prior.position[1]) * EARTH_RADIUS_M * np.cos(lat0)
        offset = np.stack([east, north], axis=1)
    return np.hypot(offset[:, 0], offset[:, 1]), known


def search_region(frames: FrameTable, prior: PositionPrior | None, policy: RadiusPolicy, stamp_ns: int,
                  max_age_s: float) -> Region:
    """The map keys to search for a frame stamped `stamp_ns` given `prior`."""
    if prior is None:
        return Region(None, "map")
    age = abs(stamp_ns - prior.stamp_ns) / 1e9
    if age > max_age_s:
        return Region(None, f"map (prior {age:.1f} s from the frame: stale)")
    distance, known = horizontal_distances(frames, prior)
    if not known.any():
        return Region(None, f"map (no map frame has a {'pose' if prior.kind == 'pose' else 'GPS position'})")
    radius = policy.radius(prior)
    inside = known & (distance <= radius)
    if not inside.any():
        return Region(None, f"map (no map frame within {radius:.0f} m of the prior)")
    mask = inside | ~known
    return Region(mask, f"prior: {int(mask.sum())} of {len(mask)} map frames within {radius:.0f} m")
