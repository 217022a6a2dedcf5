"""Per-frame metadata of a map: stamp, camera pose, GPS and where the image came from."""

from dataclasses import dataclass, field

import numpy as np

POSE_FIELDS = ("x", "y", "z", "qx", "qy", "qz", "qw")
IDENTITY_POSE = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)


@dataclass
class FrameTable:
    """Column arrays, one row per map frame; the row index is the frame's key."""

    stamp_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # N
    pose: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.float64))  # N x (x y z qx qy qz qw)
    has_pose: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # N
    gps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float64))  # N x (lat lon alt)
    has_gps: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # N
    sources: list[str] = field(default_factory=list)  # N image references (path, or bag:topic@stamp)

    def __len__(self) -> int:
        return len(self.stamp_ns)

    def validate(self) -> None:
        n = len(self.stamp_ns)
        shapes = {"pose": (self.pose.shape, (n, 7)), "has_pose": (self.has_pose.shape, (n,)),
                  "gps": (self.gps.shape, (n, 3)), "has_gps": (self.has_gps.shape, (n,)),
                  "sources": ((len(self.sources),), (n,))}
        bad = {name: got for name, (got, want) in shapes.items() if got != want}
        if bad:
            raise ValueError(f"frame table columns disagree with {n} stamps: {bad}")
        if not np.isfinite(self.pose[self.has_pose]).all():
            raise ValueError("frame poses contain NaN or infinite values")

    @classmethod
    def build(cls, stamp_ns, sources, pose=None, gps=None) -> "FrameTable":
        """Rows from stamps and sources, with optional N x 7 poses and N x 3 GPS (NaN rows = unknown)."""
        n = len(stamp_ns)
        pose = np.full((n, 7), np.nan) if pose is None else np.asarray(pose, np.float64).reshape(n, 7)
        gps = np.full((n, 3), np.nan) if gps is None else np.asarray(gps, np.float64).reshape(n, 3)
        has_pose = np.isfinite(pose).all(axis=1)
        table = cls(np.asarray(stamp_ns, np.int64).reshape(n), np.where(has_pose[:, None], pose, IDENTITY_POSE),
                    has_pose, np.where(np.isfinite(gps), gps, 0.0), np.isfinite(gps[:, :2]).all(axis=1),
                    [str(s) for s in sources])
        table.validate()
        return table

    def select(self, rows: np.ndarray) -> "FrameTable":
        rows = np.asarray(rows, np.int64)
        return FrameTable(self.stamp_ns[rows], self.pose[rows], self.has_pose[rows], self.gps[rows],
                          self.has_gps[rows], [self.sources[i] for i in rows])

    def extend(self, other: "FrameTable") -> None:
        self.stamp_ns = np.concatenate([self.stamp_ns, other.stamp_ns])
        self.pose = np.concatenate([self.pose, other.pose])
        self.has_pose = np.concatenate([self.has_pose, other.has_pose])
        self.gps = np.concatenate([self.gps, other.gps])
        self.has_gps = np.concatenate([self.has_gps, other.has_gps])
        self.sources = self.sources + other.sources
