"""What the pipeline answers, frame by frame: the candidates (map frames with what ranking and re-ranking
found), and for an accepted loop closure its finished edge for a pose graph and the localised pose.

One shape carries a candidate from retrieval to acceptance: PlaceResult, around the map frame's
Hypothesis (its metadata, global rank and similarity). The re-ranker's RankedCandidate is matching's own
answer (it knows no map metadata) and becomes a PlaceResult as soon as the localizer reads it.
Everything here is data: the node's messages and the evaluation read it and compute nothing.
"""

from dataclasses import dataclass, field

import numpy as np

from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.matching.geometry import Verifiable, Verification
from vpr_ros.core.matching.matchers import Matches
from vpr_ros.core.matching.metric import MetricPose


@dataclass(frozen=True)
class Hypothesis:
    """A candidate map frame for a query: its key (row in the map), rank, similarity and metadata."""

    key: int
    rank: int
    similarity: float
    stamp_ns: int
    pose: tuple[float, ...] | None  # x y z qx qy qz qw in the map's frame_id, None when unknown
    gps: tuple[float, float, float] | None  # latitude, longitude, altitude; None when unknown
    source: str  # where the map image came from
    session: str = ""  # the map frame's session id
    robot: str = ""  # the robot that recorded that session ("" unknown)

    @classmethod
    def of(cls, frames: FrameTable, key: int, rank: int, similarity: float) -> "Hypothesis":
        session = frames.session_of(key)
        return cls(key, rank, similarity, int(frames.stamp_ns[key]),
                   tuple(float(v) for v in frames.pose[key]) if frames.has_pose[key] else None,
                   tuple(float(v) for v in frames.gps[key]) if frames.has_gps[key] else None,
                   frames.sources[key], session.id, session.robot)


@dataclass
class LoopConstraint:
    """T_query_match in the query camera's optical frame, as far as the verification determined it."""

    method: str  # "global_descriptor", the verified model ("fundamental", "homography", "essential"), "pnp_depth"
    detail: str  # human-readable: matcher, model, inliers, verification note
    rotation_xyzw: np.ndarray  # 4; identity when unknown
    translation: np.ndarray  # 3; metres when scale_known, else a unit direction (zeros when unknown)
    covariance: np.ndarray  # 6 x 6
    inlier_count: int = 0
    scale_known: bool = False
    scale_note: str = ""  # why the scale is unknown


@dataclass
class LocalizedPose:
    """The query camera's pose in the map frame with its 6 x 6 covariance (x y z roll pitch yaw)."""

    pose: np.ndarray  # 7: x y z qx qy qz qw
    covariance: np.ndarray  # 6 x 6
    metric: bool  # from the metric relative pose (else the matched map frame's pose, position doubt only)


@dataclass
class PlaceResult(Verifiable):
    """One hypothesis: the map frame's metadata plus what re-ranking found."""

    hypothesis: Hypothesis  # key, global rank, similarity, stamp, pose, GPS, source, session, robot
    rank: int
    rerank_score: float = float("nan")
    match_count: int = 0
    verification: Verification | None = None
    probability: float = float("nan")  # calibrated probability of being the query's place (NaN: no calibrator)
    map_uncertainty: float = float("nan")  # BayesCap uncertainty of the map frame's descriptor
    pair_likelihood: float = float("nan")  # BayesCap pair likelihood of query and map frame (NaN: no head)
    sequence_score: float = float("nan")  # mean normalised similarity along its best alignment (NaN: not used)
    sequence_length: int = 0  # query frames that alignment spans (0: single-image ranking)
    matches: Matches | None = None  # the verified matches (None: not matched, or matched on the device)

    @property
    def note(self) -> str:
        return "not_reranked" if self.verification is None else self.verification.note


@dataclass
class FrameResult:
    """What one processed frame yields."""

    frame_id: int  # running count of processed frames
    stamp_ns: int
    places: list[PlaceResult] = field(default_factory=list)  # best first
    loop: PlaceResult | None = None  # the accepted loop closure, if any
    timings_ms: dict[str, float] = field(default_factory=dict)
    map_key: int | None = None  # slam: key this frame got in the online map
    status: str = ""  # e.g. "bootstrapping 12/30", "empty map"
    query_uncertainty: float = float("nan")  # BayesCap uncertainty of the query descriptor
    descriptor: np.ndarray | None = None  # 1 x D global descriptor of the query
    global_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # top_k map keys, global order
    global_similarities: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # ... their cosines
    accept_min_probability: float = float("nan")  # the probability a loop closure needed (NaN: no calibrator)
    sequence_scores: np.ndarray | None = None  # per global_keys entry, when sequence matching ranked them
    sequence_length: int = 0  # frames in the sequence window that ranked global_keys (0: single-image)
    single_keys: np.ndarray | None = None  # with sequence matching: the single-image top_k, for comparison
    rerank_pairs: int = 0  # candidate pairs matched and verified
    rerank_skipped: bool = False  # only the confident global first candidate was verified (skip_margin or
    #                               skip_min_probability)
    metric: MetricPose | None = None  # the loop closure's metric T_query_match, when depth gave one
    scale_note: str = ""  # with a loop closure and no metric pose: why
    query_depth_note: str = ""  # with a loop closure and no usable depth image of the frame: why (node: its pairing)
    depth_rejected: str = ""  # the frame's depth image could not be used: DepthError.reason ("" otherwise)
    search_scope: str = "map"  # what retrieval searched: "map", "prior: n of N map frames within r m", or
    #                            "map (why the prior was not used)"
    search_frames: int | None = None  # map frames the prior's region held (None: the whole map was searched)
    constraint: LoopConstraint | None = None  # with a loop closure: its edge for a pose graph
    localized: LocalizedPose | None = None  # with a loop closure to a posed map frame: where the query camera is
