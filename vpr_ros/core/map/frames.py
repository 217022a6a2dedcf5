"""Per-frame metadata of a map: stamp, camera pose, GPS, where the image came from and which session
(recording: one robot's run on one day) it belongs to."""

from dataclasses import dataclass, field

import numpy as np

POSE_FIELDS = ("x", "y", "z", "qx", "qy", "qz", "qw")
IDENTITY_POSE = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Session:
    """One recording in a map: its id (unique in the map, e.g. the bag's name) and the robot that made
    it ("" when unknown)."""

    id: str
    robot: str = ""

    def to_json(self) -> dict:
        return {"id": self.id, "robot": self.robot}

    @classmethod
    def from_json(cls, entry) -> "Session":
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not isinstance(
                entry.get("robot", ""), str):
            raise ValueError(f"a session must be an object with a string 'id' and 'robot', got {entry!r}"[:120])
        return cls(entry["id"], entry.get("robot", ""))

    def __str__(self) -> str:
        return f"{self.id!r}" + (f" (robot {self.robot!r})" if self.robot else "")


@dataclass
class FrameTable:
    """Column arrays, one row per map frame; the row index is the frame's key. `session` holds each row's
    index into `sessions`."""

    stamp_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # N
    pose: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.float64))  # N x (x y z qx qy qz qw)
    has_pose: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # N
    gps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float64))  # N x (lat lon alt)
    has_gps: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # N
    sources: list[str] = field(default_factory=list)  # N image references (path, or bag:topic@stamp)
    session: np.ndarray | None = None  # N int32 rows of `sessions` (None: all in the first)
    sessions: list[Session] = field(default_factory=lambda: [Session("")])

    def __post_init__(self):
        if self.session is None:
            self.session = np.zeros(len(self.stamp_ns), np.int32)
        self.session = np.asarray(self.session, np.int32)

    def __len__(self) -> int:
        return len(self.stamp_ns)

    def validate(self) -> None:
        n = len(self.stamp_ns)
        shapes = {"pose": (self.pose.shape, (n, 7)), "has_pose": (self.has_pose.shape, (n,)),
                  "gps": (self.gps.shape, (n, 3)), "has_gps": (self.has_gps.shape, (n,)),
                  "sources": ((len(self.sources),), (n,)), "session": (self.session.shape, (n,))}
        bad = {name: got for name, (got, want) in shapes.items() if got != want}
        if bad:
            raise ValueError(f"frame table columns disagree with {n} stamps: {bad}")
        if not np.isfinite(self.pose[self.has_pose]).all():
            raise ValueError("frame poses contain NaN or infinite values")
        if n and (self.session.min() < 0 or self.session.max() >= len(self.sessions)):
            raise ValueError(f"frame sessions must index the {len(self.sessions)} sessions, got "
                             f"{self.session.min()}..{self.session.max()}")
        ids = [s.id for s in self.sessions]
        if len(set(ids)) != len(ids):
            raise ValueError(f"session ids must be unique in a map, got {ids}")

    @classmethod
    def build(cls, stamp_ns, sources, pose=None, gps=None, session: Session | None = None) -> "FrameTable":
        """Rows from stamps and sources, with optional N x 7 poses and N x 3 GPS (NaN rows = unknown), all in
        one session."""
        n = len(stamp_ns)
        pose = np.full((n, 7), np.nan) if pose is None else np.asarray(pose, np.float64).reshape(n, 7)
        gps = np.full((n, 3), np.nan) if gps is None else np.asarray(gps, np.float64).reshape(n, 3)
        has_pose = np.isfinite(pose).all(axis=1)
        table = cls(np.asarray(stamp_ns, np.int64).reshape(n), np.where(has_pose[:, None], pose, IDENTITY_POSE),
                    has_pose, np.where(np.isfinite(gps), gps, 0.0), np.isfinite(gps[:, :2]).all(axis=1),
                    [str(s) for s in sources], np.zeros(n, np.int32), [session or Session("")])
        table.validate()
        return table

    def select(self, rows: np.ndarray) -> "FrameTable":
        rows = np.asarray(rows, np.int64)
        return FrameTable(self.stamp_ns[rows], self.pose[rows], self.has_pose[rows], self.gps[rows],
                          self.has_gps[rows], [self.sources[i] for i in rows], self.session[rows], list(self.sessions))

    def name_session(self, session: Session) -> None:
        """Give a one-session table (a new recording) its session id and robot."""
        if len(self.sessions) != 1:
            raise ValueError(f"only a one-session frame table can be named, this one has {len(self.sessions)}")
        self.sessions = [session]

    def session_of(self, key: int) -> Session:
        return self.sessions[int(self.session[key])]

    def rows_of(self, session_id: str) -> np.ndarray:
        """The keys of one session's frames."""
        ids = [s.id for s in self.sessions]
        if session_id not in ids:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.session == ids.index(session_id))

    def extend(self, other: "FrameTable") -> None:
        """Append `other`'s rows; its sessions join this table's (a session id already here is the same session,
        when the robot agrees)."""
        remap = np.zeros(len(other.sessions), np.int32)
        for i, session in enumerate(other.sessions):
            known = [s.id for s in self.sessions]
            if session.id in known:
                if self.sessions[known.index(session.id)] != session:
                    raise ValueError(f"session {session} is already in the map as {self.sessions[known.index(session.id)]}")
                remap[i] = known.index(session.id)
            else:
                remap[i] = len(self.sessions)
                self.sessions.append(session)
        self.stamp_ns = np.concatenate([self.stamp_ns, other.stamp_ns])
        self.pose = np.concatenate([self.pose, other.pose])
        self.has_pose = np.concatenate([self.has_pose, other.has_pose])
        self.gps = np.concatenate([self.gps, other.gps])
        self.has_gps = np.concatenate([self.has_gps, other.has_gps])
        self.sources = self.sources + other.sources
        self.session = np.concatenate([self.session, remap[other.session]]).astype(np.int32)
