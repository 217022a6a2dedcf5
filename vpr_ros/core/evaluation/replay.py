"""Replay a bag of query images through the core pipeline (the node's Localizer, no ROS graph) and keep,
per image, what was published: the same QueryRecord that a replay through the running node yields.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from vpr_ros.core import LOGGER
from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.inputs.images import ImageError
from vpr_ros.core.pipeline.localizer import Localizer
from vpr_ros.core.pipeline.results import FrameResult
from vpr_ros.core.map.store import VPRMap
from vpr_ros.core.inputs.sync import PositionPrior
from vpr_ros.core.uncertainty.features import VERIFICATION_FIELDS, geometry_features, hypothesis_features

PROCESSED, DROPPED, BAD = "processed", "dropped", "bad"


@dataclass
class QueryRecord:
    """One query image of a replay and what the pipeline answered for it."""

    index: int  # position in the bag's image stream
    stamp_ns: int
    true_pose: np.ndarray  # 7 (NaN when the bag gave no pose)
    status: str = PROCESSED  # processed, dropped (never answered), bad (refused image)
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # published hypotheses, best first
    global_ranks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    similarities: np.ndarray = field(default_factory=lambda: np.zeros(0))
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros(0))  # NaN without a calibrator
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # 0 when not verified
    verified: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    # the verification's other measures (matching/geometry.Verification; NaN when not matched or not recorded)
    inlier_ratio: np.ndarray = field(default_factory=lambda: np.zeros(0))
    keypoint_share: np.ndarray = field(default_factory=lambda: np.zeros(0))
    log_nfa: np.ndarray = field(default_factory=lambda: np.zeros(0))
    coverage: np.ndarray = field(default_factory=lambda: np.zeros(0))
    reranked: bool = False
    map_uncertainty: np.ndarray = field(default_factory=lambda: np.zeros(0))
    query_uncertainty: float = float("nan")
    pair_likelihoods: np.ndarray = field(default_factory=lambda: np.zeros(0))  # BayesCap pair likelihoods
    loop_key: int = -1  # the accepted loop closure's map key, -1 for none
    loop_method: str = ""  # its constraint's method (core.pipeline.constraints.loop_constraint), "" for none
    timings_ms: dict = field(default_factory=dict)
    note: str = ""
    sequence_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # NaN when ranked by the image alone
    sequence_length: int = 0  # frames in the sequence window that ranked the hypotheses (0: single-image)
    single_keys: np.ndarray | None = None  # with sequence matching, core replay: the single-image top_k
    # the loop closure's edge as published: T_query_match (7: x y z qx qy qz qw), its 6 x 6 covariance, whether
    # the translation is metric and, when not, why (NaN and "" without a loop closure)
    loop_relative: np.ndarray = field(default_factory=lambda: np.full(7, np.nan))
    loop_covariance: np.ndarray = field(default_factory=lambda: np.full((6, 6), np.nan))
    loop_scale_known: bool = False
    loop_scale_note: str = ""
    loop_match_stamp_ns: int = -1  # the matched frame's stamp (LoopClosure.match_stamp), -1 for none
    loop_detail: str = ""  # the constraint's detail (LoopClosure.method_detail): matcher, inliers, whose depth
    # vpr/pose as published (localize mode): the query camera's metric pose, or the map frame's pose
    localized_pose: np.ndarray = field(default_factory=lambda: np.full(7, np.nan))
    localized_metric: bool = False
    localized_covariance: np.ndarray = field(default_factory=lambda: np.full((6, 6), np.nan))
    search_frames: int = -1  # map frames a position prior let retrieval search (-1: the whole map)

    def features(self, reranked: bool | None = None) -> np.ndarray:
        """Its hypotheses' calibration features (uncertainty.features.hypothesis_features); the geometry ones
        when it was re-ranked (or as `reranked` says), the sequence score when sequence matching ranked it."""
        geometry = None
        if self.reranked if reranked is None else reranked:
            k = len(self.keys)
            geometry = geometry_features(self.inliers, *(getattr(self, name) if len(getattr(self, name)) == k
                                                         else np.full(k, np.nan) for name in VERIFICATION_FIELDS))
        return hypothesis_features(self.similarities, self.query_uncertainty, self.map_uncertainty,
                                   self.pair_likelihoods, geometry,
                                   self.sequence_scores if self.sequence_length else None)

    @property
    def global_order(self) -> np.ndarray:
        """The published keys in the order global retrieval ranked them."""
        return self.keys[np.argsort(self.global_ranks, kind="stable")]


def stage_timings(timings_ms: dict) -> dict:
    """The Localizer's stage timings with the map query's own "total" renamed "retrieval" and "total"
    set to the whole pipeline."""
    out = dict(timings_ms)
    if "total" in out:
        out["retrieval"] = out.pop("total")
    out["total"] = out.get("pipeline", float("nan"))
    return out


def record_from_result(index: int, stamp_ns: int, true_pose, result: FrameResult, matcher: str | None) -> QueryRecord:
    places = result.places
    record = QueryRecord(
        index, stamp_ns, _pose(true_pose), PROCESSED,
        keys=np.array([p.hypothesis.key for p in places], np.int64),
        global_ranks=np.array([p.hypothesis.rank for p in places], np.int64),
        similarities=np.array([p.hypothesis.similarity for p in places], np.float64),
        probabilities=np.array([p.probability for p in places], np.float64),
        inliers=np.array([p.verification.inlier_count if p.verification else 0 for p in places], np.int64),
        verified=np.array([p.verified for p in places], bool), reranked=matcher is not None,
        **{name: np.array([getattr(p.verification, name) if p.verification else np.nan for p in places], np.float64)
           for name in VERIFICATION_FIELDS},
        map_uncertainty=np.array([p.map_uncertainty for p in places], np.float64),
        query_uncertainty=result.query_uncertainty,
        pair_likelihoods=np.array([p.pair_likelihood for p in places], np.float64),
        sequence_scores=np.array([p.sequence_score for p in places], np.float64),
        sequence_length=result.sequence_length,
        single_keys=result.single_keys if result.single_keys is not None else result.global_keys,
        loop_key=result.loop.hypothesis.key if result.loop is not None else -1,
        timings_ms=stage_timings(result.timings_ms),
        search_frames=-1 if result.search_frames is None else result.search_frames)
    if result.loop is not None:
        edge = result.constraint
        record.loop_method, record.loop_scale_known, record.loop_scale_note = edge.method, edge.scale_known, edge.scale_note
        record.loop_detail, record.loop_match_stamp_ns = edge.detail, int(result.loop.hypothesis.stamp_ns)
        record.loop_relative = np.concatenate([edge.translation, edge.rotation_xyzw])
        record.loop_covariance = edge.covariance
        if result.localized is not None:
            record.localized_pose, record.localized_metric = result.localized.pose, result.localized.metric
            record.localized_covariance = np.asarray(result.localized.covariance, np.float64).reshape(6, 6)
    return record


def _pose(pose) -> np.ndarray:
    return np.full(7, np.nan) if pose is None else np.asarray(pose, np.float64).reshape(7)


def simulated_prior(sigma_m: float, seed: int = 0):
    """prior(stamp_ns, true pose) -> a position prior of standard deviation `sigma_m` (m) around the true
    position (None without one), as a GPS or an EKF of that accuracy would give; seeded, so runs repeat."""
    rng = np.random.default_rng(seed)

    def prior(stamp_ns: int, pose) -> PositionPrior | None:
        noise = rng.normal(0.0, sigma_m, 3)
        if pose is None or not np.isfinite(np.asarray(pose)[:3]).all():
            return None
        return PositionPrior(tuple(float(v) for v in np.asarray(pose)[:3] + noise), np.eye(3) * sigma_m ** 2, stamp_ns)

    return prior


def recorded_prior(fixes: list[tuple[int, tuple[float, float, float], np.ndarray]]):
    """prior(stamp_ns, true pose) -> the recorded GPS fix nearest the frame's stamp as a position prior (the
    localizer decides whether it is too old), None without any (build.bag_source.read_gps_priors)."""
    stamps = np.array([fix[0] for fix in fixes], np.int64)

    def prior(stamp_ns: int, pose) -> PositionPrior | None:
        if not len(stamps):
            return None
        i = int(np.clip(np.searchsorted(stamps, stamp_ns), 1, len(stamps)) - 1)
        if i + 1 < len(stamps) and abs(stamps[i + 1] - stamp_ns) < abs(stamps[i] - stamp_ns):
            i += 1
        stamp, position, covariance = fixes[i]
        try:
            return PositionPrior(position, covariance, int(stamp), "gps")
        except ValueError:  # a non-finite or indefinite covariance: no prior for this frame
            return None

    return prior


def replay_core(vpr_map: VPRMap | None, images, config: LocalizerConfig, camera_K: np.ndarray | None = None,
                progress: bool = False, depth=None, prior=None, odometry=None) -> list[QueryRecord]:
    """images: iterable of (stamp_ns, true pose or None, image loader callable). Every image is processed
    (a bag replayed offline drops nothing); an image the pipeline refuses is recorded as bad. depth:
    stamp_ns -> the aligned depth image (metres) or None (build.bag_source.BagDepth). prior: (stamp_ns, true
    pose) -> a PositionPrior or None (simulated_prior). odometry: stamp_ns -> the odometry's pose (7) or None,
    given to the localizer as the node gives its odometry (slam: the keyframes' poses, in the odometry's frame);
    vpr_map None: slam mode from an empty map."""
    localizer = Localizer(config, vpr_map)
    if odometry is not None:
        localizer.pose_frame_id = "odom"
    records = []
    for index, (stamp_ns, pose, load) in enumerate(images):
        start = time.perf_counter()
        try:
            image = load()
            decode_ms = (time.perf_counter() - start) * 1e3
            frame_depth = depth(stamp_ns) if depth is not None else None
            result = localizer.process(image, stamp_ns, odometry(stamp_ns) if odometry is not None else None,
                                       camera_K=camera_K, depth=frame_depth,
                                       depth_note="" if frame_depth is not None or depth is None else
                                       "no depth image near the frame's stamp",
                                       prior=prior(stamp_ns, pose) if prior is not None else None)
        except (ImageError, ValueError) as exc:
            LOGGER.warning("query %d (stamp %d): %s", index, stamp_ns, exc)
            records.append(QueryRecord(index, stamp_ns, _pose(pose), BAD, note=str(exc)))
            continue
        record = record_from_result(index, stamp_ns, pose, result, localizer.config.rerank)
        record.timings_ms["decode"] = decode_ms
        records.append(record)
        if progress and (index + 1) % 25 == 0:
            print(f"\r  replayed {index + 1} frames", end="", flush=True)
    if progress:
        print()
    return records
