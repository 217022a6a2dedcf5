"""The per-frame pipeline the node runs, free of ROS: retrieve, re-rank, accept loop closures, grow maps.

Two modes:
- `localize`: query a prebuilt map; the map does not change.
- `slam`: online loop closure. Processed keyframes join an in-memory map; queries ignore the map
  frames of the last `exclude_recent_s` seconds and `exclude_recent_frames` keyframes (they look
  like the query because they were just seen). Without a starting map, the first
  `bootstrap_frames` keyframes are buffered to fit the preset's vocabulary, then the map starts.

When the map carries an uncertainty model (vpr_train_uncertainty), every hypothesis gets the BayesCap
uncertainty of the query and of its map frame, their pair likelihood and a calibrated probability of
being the query's place; the best one is then accepted when its probability reaches
`accept_min_probability`, by default (< 0) the calibrator's own full-precision point, at least
AUTO_MIN_PROBABILITY (the similarity and inlier thresholds apply only to maps without a calibrator
for the ranking in use).

A hypothesis is accepted as a loop closure when it passes the thresholds below and, with
`temporal_window` M > 0, when the best candidates of the previous M frames lay within
`temporal_tolerance` map keys of it (a place is recognised over consecutive frames).

An accepted, verified loop closure gets a metric relative pose (matching/metric.py) when the map frame's
keypoints have depth or the frame came with an aligned depth image, and camera intrinsics are known;
otherwise FrameResult.scale_note says why its translation stays a direction.
"""

import dataclasses
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vpr_ros.core import LOGGER
from vpr_ros.core.config import AUTO_MIN_PROBABILITY, LocalizerConfig
from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.descriptors.joint import shares_backbone
from vpr_ros.core.inputs.depth import DepthError, check_depth, keypoint_depth
from vpr_ros.core.inputs.images import to_rgb8
from vpr_ros.core.maps.device_query import DeviceQuery, why_not
from vpr_ros.core.maps.frames import FrameTable, Session
from vpr_ros.core.maps.prior import PositionPrior, RadiusPolicy, RegionFinder
from vpr_ros.core.maps.map_store import Hypothesis, VPRMap
from vpr_ros.core.maps.recognizer import describe_map
from vpr_ros.core.maps.sequence import CentredSimilarity, PlainSimilarity, SequenceMatcher, map_segments, stamp_segments
from vpr_ros.core.matching.geometry import Verifiable, Verification
from vpr_ros.core.matching.local_features import (LocalExtractor, LocalFeatures, LocalFeatureTable,
                                                  features_from_joint)
from vpr_ros.core.matching.matchers import Matches
from vpr_ros.core.matching.metric import MetricEstimator, MetricPose, MetricSettings, agrees_with_two_view
from vpr_ros.core.matching.ransac import make_verifier
from vpr_ros.core.matching.reranker import Reranker
from vpr_ros.core.runtime.backends import Encoded, make_backend
from vpr_ros.core.runtime.devices import resolve_device, resolve_precision
from vpr_ros.core.runtime.threads import set_cpu_threads

NO_DEPTH = "no depth: the map frame's keypoints have none and no depth image came with the frame"


@dataclass
class PlaceResult(Verifiable):
    """One hypothesis: the map frame's metadata plus what re-ranking found."""

    hypothesis: Hypothesis  # key, global rank, similarity, stamp, pose, GPS, source
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


class Localizer:
    """Process frames one at a time against a map (localize) or an online map (slam)."""

    def __init__(self, config: LocalizerConfig, vpr_map: VPRMap | None = None):
        if config.mode == "localize" and vpr_map is None:
            raise ValueError("localize mode needs a map")
        device = resolve_device(config.device)  # "auto" picks; an explicit cuda without a GPU raises
        config = dataclasses.replace(config, device=device, precision=resolve_precision(config.precision, device))
        self.config = config
        set_cpu_threads(config.cpu_threads)
        self.reranker = None
        self.metric = MetricEstimator(MetricSettings(config.metric_pixel_sigma, config.depth_sigma_m,
                                                     config.depth_sigma_per_m2, min_inliers=config.metric_min_inliers))
        if config.rerank:
            verifier = make_verifier(config.verifier, config.device, min_inliers=config.min_inliers,
                                     min_inlier_ratio=config.min_inlier_ratio)
            self.reranker = Reranker(config.rerank, verifier, skip_margin=config.skip_margin, device=config.device,
                                     precision=config.precision, matcher_layers=config.matcher_layers)
        self.vpr_map: VPRMap | None = None
        self.device_query: DeviceQuery | None = None
        self.sequence: SequenceMatcher | None = None
        self._rows: CentredSimilarity | PlainSimilarity | None = None  # the sequence matcher's similarity rows
        self._said_uncalibrated_sequence = False
        self._map_extractor: LocalExtractor | None = None
        self._bootstrap: list[tuple[np.ndarray, int, np.ndarray | None]] = []
        self._recent_best: deque[int | None] = deque(maxlen=max(config.temporal_window, 1))
        self.frames_processed = 0
        self._sizes_seen: set[tuple[int, int, int, int]] = set()
        self.pose_frame_id = "map"  # slam: frame of the keyframe poses (the node sets its odometry's frame)
        self._regions = RegionFinder(RadiusPolicy(config.prior_k_sigma, config.prior_min_radius_m,
                                                  config.prior_max_radius_m), config.prior_max_age_s)
        self.session = Session(config.session_id or time.strftime("slam-%Y%m%dT%H%M%SZ", time.gmtime()),
                               config.robot_id)  # slam: the session this run's keyframes join the map as
        if vpr_map is not None:
            self.set_map(vpr_map)

    @property
    def map_name(self) -> str:
        return self.vpr_map.name if self.vpr_map is not None else ""

    def set_map(self, vpr_map: VPRMap) -> None:
        """Swap in another map (reload); raises ValueError, keeping the current map, if it cannot serve."""
        if self.config.mode == "slam" and self.session.id in [s.id for s in vpr_map.frames.sessions]:
            raise ValueError(f"session_id {self.session.id!r} is already a session of map {vpr_map.name}; a slam run "
                             "adds a new session: choose another session_id (or leave it empty for the start time)")
        if self.config.mode == "slam" and vpr_map.index.read_only:
            raise ValueError(f"map {vpr_map.name} has an on-disk {vpr_map.index.factory} index, which cannot grow: slam "
                             "adds its keyframes to the map; use localize mode, or a map with an in-memory index")
        if self.reranker is not None:
            self.reranker.check_map(vpr_map.local_conf)
        local_conf = vpr_map.local_conf if self._joint_wanted(vpr_map) else None
        vpr_map.backend = self._backend(vpr_map.descriptor, local_conf)
        self._place_index(vpr_map)
        device_query = self._device_query(vpr_map)
        sequence, centred = self._sequence(vpr_map)
        model = vpr_map.uncertainty
        if model is not None and model.calibrator_for(self.config.rerank) is None:
            LOGGER.warning("map %s has no calibrator for %s: probabilities stay NaN and loop closures use the "
                           "similarity/inlier thresholds; run vpr_train_uncertainty --rerank %s", vpr_map.name,
                           self.config.rerank or "global retrieval", self.config.rerank or "")
        self.vpr_map, self.device_query, self.sequence, self._rows = vpr_map, device_query, sequence, centred
        self._recent_best.clear()

    def process(self, image: np.ndarray, stamp_ns: int, pose: np.ndarray | None = None,
                camera_K: np.ndarray | None = None, depth: "np.ndarray | DepthSource | None" = None,
                depth_K: np.ndarray | None = None, depth_note: str = "",
                prior: PositionPrior | None = None) -> FrameResult:
        """One frame -> its hypotheses and, when accepted, a loop closure. Raises inputs.images.ImageError
        (or ValueError) on an unusable image, leaving the localizer as it was.

        depth: the aligned depth image (metres, NaN no reading; inputs/depth.to_metres) of this frame, with
        its own intrinsics `depth_K` when its size differs; depth_note: why there is none, when one was
        expected. Or a DepthSource: a callable returning (depth, depth_K, note), called once, when the frame
        first needs its depth (an accepted loop closure's metric pose, a slam keyframe), so that a depth
        image on its own topic has the frame's processing time to arrive. A depth image that cannot be used
        is reported in `depth_rejected`, never raised.
        prior: where the robot is believed to be; retrieval then searches only the map frames near it
        (maps/prior.py; FrameResult.search_scope says what was searched)."""
        start = time.perf_counter()
        result = FrameResult(self.frames_processed, stamp_ns)
        frame_depth = _FrameDepth(depth, depth_K, depth_note, image, camera_K, result)
        if self.vpr_map is None:  # slam, still collecting frames for the vocabulary
            depth, depth_K, _ = frame_depth.get()
            return self._collect(image, result, pose, (depth, camera_K, depth_K) if depth is not None else None)
        self._check_size(image)
        if self.device_query is not None:
            features, rerank = None, self._on_device(image, camera_K, result)
            if prior is not None:
                result.search_scope = "map (the device chain searches the whole map; a prior is not applied there)"
            uncertain = self._uncertainties(result)
        else:
            encoded = self._retrieve(image, stamp_ns, result, prior)
            features = self._local_features(image, result, encoded)
            uncertain = self._uncertainties(result)
            rerank = None
        result.places = self._rank(features, camera_K, result, self._confident(result, uncertain), rerank)
        if uncertain is not None and result.places:
            self._score(result, uncertain)
        result.loop = self._accept(result.places, result.accept_min_probability)
        if result.loop is not None:
            self._metric(result, image, features, camera_K, frame_depth)
        if self.config.mode == "slam":  # the online map keeps the keyframe's keypoint depths
            depth, depth_K, _ = frame_depth.get()
            _with_depth(features, depth, camera_K, depth_K)
            result.map_key = self._add(result.descriptor, stamp_ns, pose, features)
        self.frames_processed += 1
        result.timings_ms["pipeline"] = (time.perf_counter() - start) * 1e3
        return result

    def map_K(self, camera_K: np.ndarray | None) -> np.ndarray | None:
        """Intrinsics of the map frames: the map's camera when it records one, else the query's (slam maps,
        maps built without a CameraInfo); None when the query's are unknown (no calibrated verification)."""
        if camera_K is None:
            return None
        camera = self.vpr_map.camera if self.vpr_map is not None else None
        return camera.K if camera is not None else camera_K

    def _metric(self, result: FrameResult, image: np.ndarray, features: LocalFeatures | None,
                camera_K: np.ndarray | None, frame_depth: "_FrameDepth") -> None:
        """The loop closure's metric pose from the depth of its matches, or why there is none."""
        place = result.loop
        if not place.verified:
            result.scale_note = "the loop closure is not geometrically verified"
            return
        if camera_K is None:
            result.scale_note = "no camera intrinsics (camera_info_topic): no relative pose"
            return
        t0 = time.perf_counter()
        stored = self.vpr_map.local[place.hypothesis.key]
        depth, depth_K, depth_note = frame_depth.get()
        result.query_depth_note = depth_note if depth is None else ""
        if stored.depth is None and depth is None:
            result.scale_note = result.scale_note or depth_note or NO_DEPTH
            return
        if place.matches is None or features is None:  # matched on the device: match this one pair here
            features = self._extractor().extract([image])[0]
            place.matches = self.reranker.matcher.match(features, [stored])[0]
        _with_depth(features, depth, camera_K, depth_K)
        query_idx, map_idx = place.matches.query_idx, place.matches.map_idx  # PnP RANSAC picks its own inliers
        map_depth = stored.depth[map_idx] if stored.depth is not None else None
        query_depth = features.depth[query_idx] if features.depth is not None else None
        try:
            metric, note = self.metric.estimate(features.keypoints[query_idx], stored.keypoints[map_idx], camera_K,
                                                self.map_K(camera_K), features.image_size, stored.image_size,
                                                map_depth, query_depth)
        except Exception as exc:  # noqa: BLE001: a fault of the metric step costs the metric pose, never the frame
            LOGGER.error("metric pose of frame %d failed (%s: %s); its loop closure keeps a translation direction",
                         result.frame_id, type(exc).__name__, exc)
            metric, note = None, f"the metric step failed ({type(exc).__name__}: {str(exc)[:120]}): direction only"
        if metric is not None and place.verification.rotation is not None:
            metric, note = agrees_with_two_view(metric, place.verification.rotation, place.verification.model)
        result.metric, result.scale_note = metric, note
        result.timings_ms["metric"] = (time.perf_counter() - t0) * 1e3

    def _check_size(self, image: np.ndarray) -> None:
        """Say once per image size when frames are much smaller than the descriptor's input (upsampled: its
        dense features carry little there) or of another shape (stretched to the input's aspect ratio)."""
        if not hasattr(image, "shape") or len(image.shape) < 2:
            return
        (height, width), (in_w, in_h) = image.shape[:2], self.vpr_map.descriptor.input_size
        if (width, height, in_w, in_h) in self._sizes_seen or not width or not height:
            return
        self._sizes_seen.add((width, height, in_w, in_h))
        if width < in_w / 2 or height < in_h / 2:
            LOGGER.warning("images of %dx%d are upsampled %.1fx by %.1fx to the descriptor's %dx%d input: its dense "
                           "features carry little at this resolution; expect weak single-image recall (sequence "
                           "matching, sequence_length, helps on such cameras)", width, height, in_w / width,
                           in_h / height, in_w, in_h)
        elif abs(np.log((width / height) / (in_w / in_h))) > np.log(1.1):
            LOGGER.warning("images of %dx%d (aspect %.2f) are stretched to the descriptor's %dx%d input (aspect "
                           "%.2f): shapes look distorted to it", width, height, width / height, in_w, in_h,
                           in_w / in_h)

    def _retrieve(self, image: np.ndarray, stamp_ns: int, result: FrameResult,
                  prior: PositionPrior | None = None) -> Encoded | None:
        """Global retrieval: the query's descriptor and its top_k map keys (slam: recent frames left out; with
        a prior, only map frames near it); returns the backend's output, which holds the local features when
        the backbone is shared."""
        excluded = self._excluded_suffix(stamp_ns)
        searchable = len(self.vpr_map) - excluded
        k = min(self.config.top_k, max(searchable, 0))
        region = self._regions.region(self.vpr_map.frames, prior, stamp_ns)
        result.search_scope, result.search_frames, subset = region.note, region.frames, region.mask
        if subset is not None and excluded:
            subset = subset.copy()
            subset[searchable:] = False
        answer = self.vpr_map.query([image], k=max(k, 1) + (excluded if subset is None else 0),
                                    subset=subset)  # an empty map answers -1 ids
        result.timings_ms.update(answer.timings_ms)
        ids, sims = answer.ids[0], answer.similarities[0]
        keep = (ids >= 0) & (ids < searchable)
        result.descriptor, result.global_keys, result.global_similarities = answer.descriptors, ids[keep][:k], sims[keep][:k]
        if self.sequence is not None and k > 0:
            self._sequence_rank(result, stamp_ns, searchable, k, subset)
        return answer.encoded

    def _sequence_rank(self, result: FrameResult, stamp_ns: int, searchable: int, k: int,
                       subset: np.ndarray | None = None) -> None:
        """Sequence matching: add the frame's similarity row to the window and, once it is full, make the
        candidates the top k map keys by sequence score (the single-image ones stay in single_keys); with a
        prior's region (`subset`), only keys inside it (the alignments themselves run over the whole map)."""
        t0 = time.perf_counter()
        row = self._rows(result.descriptor)
        score = self.sequence.update(row, stamp_ns, searchable)
        if subset is not None:
            score = np.where(subset[:len(score)], score, -np.inf)
            k = min(k, int(np.count_nonzero(subset[:searchable])))
        if self.sequence.full and k > 0:
            top = np.argpartition(-score[:searchable], k - 1)[:k] if k < searchable else np.arange(searchable)
            top = top[np.argsort(-score[top], kind="stable")]
            place = self.sequence.place(int(top[0]), searchable)  # the best alignment's line ends here
            if place != top[0] and np.isfinite(score[place]):
                top = np.concatenate([[place], top[top != place]])[:k]
            result.single_keys = result.global_keys
            cosines = self.vpr_map.descriptors[top] @ result.descriptor.reshape(-1).astype(np.float32)
            result.global_keys, result.global_similarities = top.astype(np.int64), cosines
            result.sequence_scores, result.sequence_length = score[top], self.sequence.count
        result.timings_ms["sequence"] = (time.perf_counter() - t0) * 1e3

    def _sequence(self, vpr_map: VPRMap, ordered: bool = False
                  ) -> tuple[SequenceMatcher, CentredSimilarity | PlainSimilarity] | tuple[None, None]:
        """The sequence matcher for `vpr_map` and the similarity rows it takes, when sequence_length asks for one
        and the map has an order to align with (said once when it has none: ranking stays single-image);
        `ordered`: a slam map, in keyframe order."""
        if not self.config.sequence_length:
            return None, None
        if ordered:
            starts, reason = stamp_segments(vpr_map.frames.stamp_ns), ""
        else:
            starts, reason = map_segments(vpr_map.descriptors, vpr_map.frames.stamp_ns)
        if starts is None:
            LOGGER.warning("map %s: sequence matching is off, ranking stays single-image: %s", vpr_map.name, reason)
            return None, None
        matcher = SequenceMatcher(self.config.sequence_length, self.config.sequence_max_step)
        matcher.set_map(starts)
        # the session's own map (slam) was seen in the query's conditions: nothing to remove
        rows = CentredSimilarity if self.config.sequence_similarity == "centred" and not ordered else PlainSimilarity
        return matcher, rows(vpr_map.descriptors)

    def _on_device(self, image: np.ndarray, camera_K: np.ndarray | None, result: FrameResult):
        """Retrieval and re-ranking as one device chain read back once (maps/device_query.py)."""
        answer = self.device_query(image, camera_K)
        result.timings_ms.update(answer.timings_ms)
        result.descriptor, result.global_keys, result.global_similarities = answer.descriptor, answer.ids, answer.similarities
        return answer.rerank

    def _device_query(self, vpr_map: VPRMap) -> DeviceQuery | None:
        """The map's device chain when `device_query` asks for it: on (refused with the reason when the map or
        settings do not allow it); auto and off keep the stage pipeline. auto stays off until the chain has been
        measured on a GPU (its CUDA tests have only ever skipped; docs/gpu.md): a default is a path that ran."""
        switch = self.config.device_query
        if switch != "on":
            if switch == "auto" and self.config.device.startswith("cuda"):
                LOGGER.info("device_query auto: the query runs stage by stage (the measured GPU path); the whole-"
                            "query device chain is available with device_query:=on but has not been measured on a "
                            "GPU yet (docs/gpu.md)")
            return None
        reason = ("slam maps grow every keyframe" if self.config.mode == "slam" else
                  "sequence matching needs every map frame's similarity" if self.config.sequence_length else
                  why_not(vpr_map, self.reranker))
        if reason:
            if switch == "on":
                raise ValueError(f"device_query is on but the query cannot stay on the device: {reason}")
            LOGGER.info("map %s: the query runs stage by stage (%s)", vpr_map.name, reason)
            return None
        return DeviceQuery(vpr_map, self.reranker, self.config.top_k, self.config.rerank_top_k)

    def _local_features(self, image: np.ndarray, result: FrameResult,
                        encoded: Encoded | None) -> LocalFeatures | None:
        """The query's local features, when re-ranking has candidates or the slam map stores them: from the
        descriptor's own pass when the backbone is shared, else from the extractor."""
        stores = self.config.mode == "slam" and self.vpr_map.local is not None
        if not stores and (self.reranker is None or not len(result.global_keys)):
            return None
        t0 = time.perf_counter()
        if encoded is not None and encoded.has_local:
            size = (image.shape[1], image.shape[0])
            features = features_from_joint(encoded.keypoints[0], encoded.local_descriptors[0], encoded.scores[0],
                                           size, self.vpr_map.backend.input_size)
        else:
            features = self._extractor().extract([image])[0]
        result.timings_ms["local_features"] = (time.perf_counter() - t0) * 1e3
        return features

    def _uncertainties(self, result: FrameResult) -> dict[int, tuple[float, float]] | None:
        """BayesCap: the query's uncertainty (into result) and, per global candidate (key -> values), its
        uncertainty and pair likelihood with the query, in one forward pass; None when the map has no
        uncertainty model."""
        model = self.vpr_map.uncertainty
        if model is None or not len(result.global_keys):
            return None
        t0 = time.perf_counter()
        keys = result.global_keys
        result.query_uncertainty, map_u, pair = model.describe(result.descriptor, self.vpr_map.descriptors[keys])
        result.timings_ms["uncertainty"] = (time.perf_counter() - t0) * 1e3
        return {int(key): (float(u), float(p)) for key, u, p in zip(keys, map_u, pair)}

    def _confident(self, result: FrameResult, uncertain: dict[int, tuple[float, float]] | None) -> bool:
        """Whether the global first candidate's calibrated probability reaches skip_min_probability, so that
        re-ranking verifies it alone (and all candidates only if it fails)."""
        threshold, model = self.config.skip_min_probability, self.vpr_map.uncertainty
        if threshold is None or uncertain is None or self.reranker is None:
            return False
        map_u, pair = np.array([uncertain[int(key)] for key in result.global_keys]).T
        probability = model.probabilities(result.global_similarities, result.query_uncertainty, map_u, pair)[0]
        return bool(np.isfinite(probability) and probability >= threshold)

    def _rank(self, features: LocalFeatures | None, camera_K: np.ndarray | None,
              result: FrameResult, confident: bool = False, rerank=None) -> list[PlaceResult]:
        """The hypotheses best first: re-ranked (the first rerank_top_k; `rerank`: done on the device
        already), the rest in global order."""
        frames, ids, sims = self.vpr_map.frames, result.global_keys, result.global_similarities
        if self.reranker is None or not len(ids):
            return self._with_sequence(result, [PlaceResult(h, h.rank) for h in self.vpr_map.hypotheses(ids, sims)])
        first = self.config.rerank_top_k or len(ids)
        if rerank is None:
            rerank = self.reranker.rerank(features, ids[:first], sims[:first], self.vpr_map.local, camera_K,
                                          self.map_K(camera_K), confident)
        result.timings_ms.update(rerank.timings_ms)
        result.rerank_pairs, result.rerank_skipped = rerank.pairs_matched, rerank.skipped
        places = [PlaceResult(Hypothesis.of(frames, c.key, c.global_rank, c.global_similarity), rank, c.score,
                              c.match_count, c.verification, matches=c.matches)
                  for rank, c in enumerate(rerank.candidates)]
        return self._with_sequence(result, places + [
            PlaceResult(Hypothesis.of(frames, int(ids[rank]), rank, float(sims[rank])), rank)
            for rank in range(len(places), len(ids))])

    @staticmethod
    def _with_sequence(result: FrameResult, places: list[PlaceResult]) -> list[PlaceResult]:
        """Each hypothesis's sequence score and window length, when sequence matching ranked the candidates."""
        if result.sequence_scores is not None:
            scores = {int(key): float(v) for key, v in zip(result.global_keys, result.sequence_scores)}
            for place in places:
                place.sequence_score, place.sequence_length = scores[place.hypothesis.key], result.sequence_length
        return places

    def _score(self, result: FrameResult, uncertain: dict[int, tuple[float, float]]) -> None:
        """Calibrated probabilities of the frame's hypotheses (and their map frames' uncertainties and pair
        likelihoods)."""
        t0 = time.perf_counter()
        model = self.vpr_map.uncertainty
        map_u, pair = np.array([uncertain[p.hypothesis.key] for p in result.places]).reshape(-1, 2).T
        inliers = None
        if self.reranker is not None:
            inliers = np.array([p.verification.inlier_count if p.verification else 0 for p in result.places])
        matcher = self.config.rerank if self.reranker is not None else None
        calibrator, scores = None, None
        if result.sequence_length:  # ranked by sequence: the calibrator fitted for it, when there is one
            calibrator = model.sequence_calibrator(matcher, self.config.sequence_length,
                                                   self.config.sequence_similarity)
            if calibrator is not None:
                scores = np.array([p.sequence_score for p in result.places])
            elif not self._said_uncalibrated_sequence:
                self._said_uncalibrated_sequence = True
                LOGGER.warning("map %s has no calibrator for sequence ranking (sequence_length %d, %s rows): "
                               "probabilities come from the single-image calibrator and do not include the "
                               "sequence score; vpr_train_uncertainty --session BAG fits one from another session",
                               self.vpr_map.name, self.config.sequence_length, self.config.sequence_similarity)
        calibrator = calibrator or model.calibrator_for(matcher)
        probabilities = model.probabilities(np.array([p.hypothesis.similarity for p in result.places]),
                                            result.query_uncertainty, map_u, pair, inliers, matcher, scores,
                                            calibrator)
        result.accept_min_probability = self.config.accept_min_probability
        if result.accept_min_probability < 0 and calibrator is not None:  # the calibrated curve's own
            result.accept_min_probability = max(AUTO_MIN_PROBABILITY, np.nan_to_num(calibrator.full_precision))
        for place, u, likelihood, prob in zip(result.places, map_u, pair, probabilities):
            place.map_uncertainty, place.pair_likelihood, place.probability = float(u), float(likelihood), float(prob)
        result.timings_ms["uncertainty"] += (time.perf_counter() - t0) * 1e3

    def _backend(self, descriptor: GlobalDescriptor, local_conf: dict | None):
        """The configured descriptor backend running `descriptor`; the joint graph (one XFeat pass for the
        descriptor and the local features) when the map's local features allow it."""
        max_keypoints = local_conf["max_keypoints"] if shares_backbone(descriptor, local_conf) else 0
        return make_backend(self.config.backend, descriptor, self.config.device, precision=self.config.precision,
                            max_keypoints=max_keypoints)

    def _joint_wanted(self, vpr_map: VPRMap) -> bool:
        """Whether frames need local features against this map: to re-rank, or to store in the slam map."""
        return vpr_map.local is not None and (self.reranker is not None or self.config.mode == "slam")

    def _place_index(self, vpr_map: VPRMap) -> None:
        """Search on the configured device; an index the GPU cannot hold here stays on the CPU, said once."""
        if vpr_map.index.device == self.config.device:
            return
        try:
            vpr_map.index.to_device(self.config.device)
        except ValueError as exc:
            LOGGER.warning("map %s: search stays on the cpu: %s", vpr_map.name, exc)

    @property
    def backend_label(self) -> str:
        """e.g. "onnxruntime/cpu"; before a slam map exists, the configured backend and device."""
        if self.vpr_map is not None and self.vpr_map.backend is not None:
            return self.vpr_map.backend.label
        return f"{self.config.backend}/{self.config.device}"

    def _excluded_suffix(self, stamp_ns: int) -> int:
        """slam: how many of the newest map frames a query must not match: recent ones of this session only (its
        frames are the map's last; an earlier session's frames are never excluded)."""
        if self.config.mode != "slam" or self.vpr_map is None or len(self.vpr_map) == 0:
            return 0
        stamps = self.vpr_map.frames.stamp_ns[self.vpr_map.frames.rows_of(self.session.id)]
        by_time = int(np.count_nonzero(stamps > stamp_ns - int(self.config.exclude_recent_s * 1e9)))
        return min(len(stamps), max(by_time, self.config.exclude_recent_frames))

    def _accept(self, places: list[PlaceResult], min_probability: float) -> PlaceResult | None:
        best = places[0] if places else None
        if best is not None and np.isfinite(best.probability):
            ok = best.probability >= min_probability
        else:
            ok = best is not None and best.hypothesis.similarity >= self.config.accept_min_similarity
            if ok and self.reranker is not None:
                ok = best.verified and best.verification.inlier_count >= self.config.accept_min_inliers
            if ok and self.config.accept_min_sequence_score > 0 and best.sequence_length:
                ok = best.sequence_score >= self.config.accept_min_sequence_score
        window = self.config.temporal_window
        if ok and window > 0:
            previous = list(self._recent_best)
            ok = len(previous) == window and all(
                key is not None and abs(key - best.hypothesis.key) <= self.config.temporal_tolerance
                for key in previous)
        self._recent_best.append(best.hypothesis.key if best is not None else None)
        return best if ok else None

    def _extractor(self) -> LocalExtractor:
        """The local feature extractor configured as the map's features were extracted."""
        conf = self.vpr_map.local_conf
        if self.reranker is not None:
            return self.reranker.extractor_for(conf)
        self._map_extractor = LocalExtractor.for_config(conf, self.config.device, self._map_extractor)
        return self._map_extractor

    def _add(self, descriptor: np.ndarray, stamp_ns: int, pose, features: LocalFeatures | None) -> int:
        key = len(self.vpr_map)
        local = None
        if self.vpr_map.local is not None:
            local = LocalFeatureTable.build([features], self.vpr_map.local_conf["max_keypoints"],
                                            self.vpr_map.local_conf["dim"], self.vpr_map.local.depth is not None)
        self.vpr_map.add(descriptor, _frame_row(stamp_ns, pose, f"online:{stamp_ns}", self.session), local)
        if self.sequence is not None:
            self.sequence.grow(stamp_segments(self.vpr_map.frames.stamp_ns))
            self._rows.grow(descriptor)
        return key

    def _collect(self, image, result: FrameResult, pose, depth) -> FrameResult:
        """slam before the online map: keep the frame (and its depth, with the intrinsics to read it)."""
        rgb = to_rgb8(image)  # validates now, so a bad frame never poisons the vocabulary
        self._bootstrap.append((rgb, result.stamp_ns, pose, depth))
        self.frames_processed += 1
        if len(self._bootstrap) < self.config.bootstrap_frames:
            result.status, result.timings_ms = (f"bootstrapping {len(self._bootstrap)}/{self.config.bootstrap_frames}",
                                                {"pipeline": 0.0})
            return result
        start = time.perf_counter()
        self._start_online_map()
        result.map_key, result.status = len(self.vpr_map) - 1, f"online map started with {len(self.vpr_map)} frames"
        result.timings_ms = {"pipeline": (time.perf_counter() - start) * 1e3}
        return result

    def _start_online_map(self) -> None:
        config, frames = self.config, self._bootstrap
        overrides = {"checkpoint": config.checkpoint} if config.checkpoint else {}
        descriptor = GlobalDescriptor(config.preset, **overrides).to(config.device)
        descriptors = describe_map(descriptor, list(range(len(frames))), lambda i: frames[i][0])
        table = FrameTable.build([f[1] for f in frames], [f"online:{f[1]}" for f in frames],
                                 pose=np.stack([_pose_or_nan(f[2]) for f in frames]), session=self.session)
        local, local_conf = None, None
        if self.reranker is not None:  # the online map stores what the matcher needs
            extractor = LocalExtractor(self.reranker.matcher.features, config.max_keypoints, device=config.device)
            extracted = extractor.extract([f[0] for f in frames])
            for features, frame in zip(extracted, frames):
                if frame[3] is not None:
                    _with_depth(features, *frame[3])
            local = LocalFeatureTable.build(extracted, config.max_keypoints, extractor.dim)
            local_conf = extractor.config()
        self.vpr_map = VPRMap.create("online", descriptor, descriptors, table, frame_id=self.pose_frame_id,
                                     local=local, local_conf=local_conf)
        self.vpr_map.backend = self._backend(descriptor, local_conf)
        self._place_index(self.vpr_map)
        self.sequence, self._rows = self._sequence(self.vpr_map, ordered=True)
        self._bootstrap = []
        LOGGER.info("slam: online map started from %d keyframes", len(self.vpr_map))


DepthSource = Callable[[], tuple[np.ndarray | None, np.ndarray | None, str]]  # (depth, its own K, why none)


class _FrameDepth:
    """A frame's depth image, resolved once, when first asked for, and checked against the image it serves
    (inputs/depth.check_depth): an unusable one is reported in the result (`depth_rejected`), never raised."""

    def __init__(self, source, depth_K, note: str, image, camera_K, result: FrameResult):
        self._source, self._depth_K, self._note = source, depth_K, note
        self._image, self._camera_K, self._result = image, camera_K, result
        self._resolved: tuple | None = None

    def get(self) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        """(depth in metres or None, its own K or None, why there is none)."""
        if self._resolved is None:
            depth, depth_K, note = (self._source() if callable(self._source)
                                    else (self._source, self._depth_K, self._note))
            image, result = self._image, self._result
            if depth is not None and hasattr(image, "shape") and len(image.shape) >= 2:
                try:
                    check_depth(depth, (image.shape[1], image.shape[0]), self._camera_K, depth_K)
                except DepthError as exc:
                    result.depth_rejected, result.scale_note = exc.reason, f"depth image rejected: {exc}"
                    depth, depth_K, note = None, None, result.scale_note
            elif depth is not None:
                depth = None
            self._resolved = (depth, depth_K, note)
        return self._resolved


def _with_depth(features: LocalFeatures | None, depth: np.ndarray | None, camera_K, depth_K) -> None:
    """Give `features` their keypoints' depth from the frame's depth image, once (no-op without either)."""
    if features is not None and depth is not None and features.depth is None:
        features.depth = keypoint_depth(depth, features.keypoints, camera_K, depth_K)


def _pose_or_nan(pose) -> np.ndarray:
    return np.full(7, np.nan) if pose is None else np.asarray(pose, np.float64).reshape(7)


def _frame_row(stamp_ns: int, pose, source: str, session: Session) -> FrameTable:
    return FrameTable.build([stamp_ns], [source], pose=_pose_or_nan(pose)[None], session=session)
