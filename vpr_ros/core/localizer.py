"""The per-frame pipeline the node runs, free of ROS: retrieve, re-rank, accept loop closures, grow maps.

Two modes:
- `localize`: query a prebuilt map; the map does not change.
- `slam`: online loop closure. Processed keyframes join an in-memory map; queries ignore the map
  frames of the last `exclude_recent_s` seconds and `exclude_recent_frames` keyframes (they look
  like the query because they were just seen). Without a starting map, the first
  `bootstrap_frames` keyframes are buffered to fit the preset's vocabulary, then the map starts.

When the map carries an uncertainty model (vpr_train_uncertainty), every hypothesis gets the BayesCap
uncertainty of the query and of its map frame and a calibrated probability of being the query's
place; the best one is then accepted when its probability reaches `accept_min_probability` (the
similarity and inlier thresholds apply only to maps without a calibrator for the ranking in use).

A hypothesis is accepted as a loop closure when it passes the thresholds below and, with
`temporal_window` M > 0, when the best candidates of the previous M frames lay within
`temporal_tolerance` map keys of it (a place is recognised over consecutive frames).
"""

import dataclasses
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from vpr_ros.core import LOGGER
from vpr_ros.core.descriptors import GlobalDescriptor
from vpr_ros.core.devices import PRECISIONS, resolve_device, resolve_precision
from vpr_ros.core.frames import FrameTable
from vpr_ros.core.geometry import GeometricVerifier, Verification
from vpr_ros.core.images import to_rgb8
from vpr_ros.core.local_features import LocalExtractor, LocalFeatures, LocalFeatureTable
from vpr_ros.core.map_store import Hypothesis, VPRMap
from vpr_ros.core.recognizer import describe_map
from vpr_ros.core.reranker import Reranker

MODES = ("localize", "slam")


@dataclass
class LocalizerConfig:
    """Everything that decides what a frame yields; the node's parameters map onto these fields."""

    mode: str = "localize"
    top_k: int = 5  # hypotheses per frame (re-ranked when `rerank` is set)
    rerank: str | None = None  # matcher name, or None for global retrieval only
    rerank_top_k: int = 0  # re-rank only the first this-many hypotheses, the rest follow in global order (0: all)
    skip_margin: float | None = None  # verify only the first candidate when it leads by this margin
    min_inliers: int = 15  # verified needs this many inliers (and min_inlier_ratio of the matches)
    min_inlier_ratio: float = 0.25
    accept_min_inliers: int = 30  # loop closure: inliers of the best hypothesis (with re-ranking)
    accept_min_similarity: float = 0.5  # loop closure: global similarity of the best hypothesis
    accept_min_probability: float = 0.9  # loop closure, calibrated maps: probability of the best hypothesis
    temporal_window: int = 0  # M previous frames whose best candidates must agree (0: off)
    temporal_tolerance: int = 5  # ... within this many map keys
    exclude_recent_s: float = 20.0  # slam: ignore map frames this recent
    exclude_recent_frames: int = 10  # slam: ignore the last this-many keyframes
    bootstrap_frames: int = 30  # slam without a map: keyframes buffered to fit the vocabulary
    preset: str = "default"  # slam without a map: descriptor preset
    checkpoint: str = ""  # weights file of a published-model preset (a map's own path when empty)
    max_keypoints: int = 512  # slam without a map: local features per keyframe (with re-ranking)
    device: str = "cpu"  # descriptor, local features, matcher and search: cpu, cuda[:N], or auto (cuda when torch sees a GPU)
    precision: str = "auto"  # fp32 or fp16 for torch on CUDA (auto: fp16 on CUDA, fp32 on the CPU)
    backend: str = "torch"  # descriptor backend: torch, onnxruntime or tensorrt (backends.BACKENDS)

    def __post_init__(self):
        from vpr_ros.core.backends import BACKENDS

        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.rerank_top_k < 0:
            raise ValueError(f"rerank_top_k must be >= 0 (0: all of top_k), got {self.rerank_top_k}")
        if self.top_k < 1 or self.bootstrap_frames < 2 or self.max_keypoints < 1:
            raise ValueError("top_k >= 1, bootstrap_frames >= 2 and max_keypoints >= 1 are required")
        if self.temporal_window < 0 or self.temporal_tolerance < 0:
            raise ValueError("temporal_window and temporal_tolerance must be >= 0")
        if self.exclude_recent_s < 0 or self.exclude_recent_frames < 0:
            raise ValueError("exclude_recent_s and exclude_recent_frames must be >= 0")
        if not 0.0 <= self.accept_min_probability <= 1.0:
            raise ValueError(f"accept_min_probability must lie in [0, 1], got {self.accept_min_probability}")


@dataclass
class PlaceResult:
    """One hypothesis: the map frame's metadata plus what re-ranking found."""

    hypothesis: Hypothesis  # key, global rank, similarity, stamp, pose, GPS, source
    rank: int
    rerank_score: float = float("nan")
    match_count: int = 0
    verification: Verification | None = None
    probability: float = float("nan")  # calibrated probability of being the query's place (NaN: no calibrator)
    map_uncertainty: float = float("nan")  # BayesCap uncertainty of the map frame's descriptor

    @property
    def verified(self) -> bool:
        return self.verification is not None and self.verification.verified

    @property
    def note(self) -> str:
        if self.verification is None:
            return "not_reranked"
        return self.verification.note


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


class Localizer:
    """Process frames one at a time against a map (localize) or an online map (slam)."""

    def __init__(self, config: LocalizerConfig, vpr_map: VPRMap | None = None):
        if config.mode == "localize" and vpr_map is None:
            raise ValueError("localize mode needs a map")
        device = resolve_device(config.device)  # "auto" picks; an explicit cuda without a GPU raises
        config = dataclasses.replace(config, device=device, precision=resolve_precision(config.precision, device))
        self.config = config
        self.reranker = None
        if config.rerank:
            verifier = GeometricVerifier(min_inliers=config.min_inliers, min_inlier_ratio=config.min_inlier_ratio)
            self.reranker = Reranker(config.rerank, verifier, skip_margin=config.skip_margin, device=config.device,
                                     precision=config.precision)
        self.vpr_map: VPRMap | None = None
        self._map_extractor: LocalExtractor | None = None
        self._bootstrap: list[tuple[np.ndarray, int, np.ndarray | None]] = []
        self._recent_best: deque[int | None] = deque(maxlen=max(config.temporal_window, 1))
        self.frames_processed = 0
        self.pose_frame_id = "map"  # slam: frame of the keyframe poses (the node sets its odometry's frame)
        if vpr_map is not None:
            self.set_map(vpr_map)

    @property
    def map_name(self) -> str:
        return self.vpr_map.name if self.vpr_map is not None else ""

    def set_map(self, vpr_map: VPRMap) -> None:
        """Swap in another map (reload); raises ValueError, keeping the current map, if it cannot serve."""
        if self.reranker is not None:
            self.reranker.check_map(vpr_map.local_conf)
        vpr_map.backend = self._backend(vpr_map.descriptor)
        self._place_index(vpr_map)
        model = vpr_map.uncertainty
        if model is not None and model.calibrator_for(self.config.rerank) is None:
            LOGGER.warning("map %s has no calibrator for %s: probabilities stay NaN and loop closures use the "
                           "similarity/inlier thresholds; run vpr_train_uncertainty --rerank %s", vpr_map.name,
                           self.config.rerank or "global retrieval", self.config.rerank or "")
        self.vpr_map = vpr_map
        self._recent_best.clear()

    def process(self, image: np.ndarray, stamp_ns: int, pose: np.ndarray | None = None,
                camera_K: np.ndarray | None = None) -> FrameResult:
        """One frame -> its hypotheses and, when accepted, a loop closure. Raises images.ImageError
        (or ValueError) on an unusable image, leaving the localizer as it was."""
        start = time.perf_counter()
        frame_id = self.frames_processed
        if self.vpr_map is None:  # slam, still collecting frames for the vocabulary
            return self._collect(image, stamp_ns, pose, frame_id)
        vpr_map, result = self.vpr_map, FrameResult(frame_id, stamp_ns)
        excluded = self._excluded_suffix(stamp_ns)
        searchable = len(vpr_map) - excluded
        k = min(self.config.top_k, max(searchable, 0))
        answer = vpr_map.query([image], k=max(k, 1) + excluded)  # an empty map answers -1 ids
        result.timings_ms.update(answer.timings_ms)
        ids, sims = answer.ids[0], answer.similarities[0]
        keep = (ids >= 0) & (ids < searchable)
        ids, sims = ids[keep][:k], sims[keep][:k]
        query_features = None
        adds_features = self.config.mode == "slam" and vpr_map.local is not None
        if (self.reranker is not None and len(ids)) or adds_features:
            t0 = time.perf_counter()
            query_features = self._extractor().extract([image])[0]
            result.timings_ms["local_features"] = (time.perf_counter() - t0) * 1e3
        if self.reranker is not None and len(ids):
            first = self.config.rerank_top_k or len(ids)
            rerank = self.reranker.rerank(query_features, ids[:first], sims[:first], vpr_map.local, camera_K, camera_K)
            result.timings_ms.update(rerank.timings_ms)
            for rank, cand in enumerate(rerank.candidates):
                result.places.append(PlaceResult(Hypothesis.of(vpr_map.frames, cand.key, cand.global_rank,
                                                               cand.global_similarity),
                                                 rank, cand.score, cand.match_count, cand.verification))
            for rank in range(len(result.places), len(ids)):  # beyond rerank_top_k: global order, not re-ranked
                result.places.append(PlaceResult(Hypothesis.of(vpr_map.frames, int(ids[rank]), rank, float(sims[rank])),
                                                 rank))
        else:
            result.places = [PlaceResult(h, h.rank) for h in vpr_map.hypotheses(ids, sims)]
        if vpr_map.uncertainty is not None and result.places:
            t0 = time.perf_counter()
            self._score(vpr_map, answer.descriptors, result)
            result.timings_ms["uncertainty"] = (time.perf_counter() - t0) * 1e3
        result.loop = self._accept(result.places)
        if self.config.mode == "slam":
            result.map_key = self._add(answer.descriptors, stamp_ns, pose, query_features)
        self.frames_processed += 1
        result.timings_ms["pipeline"] = (time.perf_counter() - start) * 1e3
        return result

    def _score(self, vpr_map: VPRMap, query_descriptor: np.ndarray, result: FrameResult) -> None:
        """BayesCap uncertainties and calibrated probabilities of the frame's hypotheses."""
        model = vpr_map.uncertainty
        keys = np.array([p.hypothesis.key for p in result.places])
        both = model.uncertainty(np.concatenate([query_descriptor.reshape(1, -1), vpr_map.descriptors[keys]]))
        result.query_uncertainty, map_u = float(both[0]), both[1:]  # one forward pass for all
        inliers = None
        if self.reranker is not None:
            inliers = np.array([p.verification.inlier_count if p.verification else 0 for p in result.places])
        probabilities = model.probabilities(np.array([p.hypothesis.similarity for p in result.places]),
                                            result.query_uncertainty, map_u, inliers,
                                            self.config.rerank if self.reranker is not None else None)
        for place, u, prob in zip(result.places, map_u, probabilities):
            place.map_uncertainty, place.probability = float(u), float(prob)

    def _backend(self, descriptor: GlobalDescriptor):
        """The configured descriptor backend running `descriptor`."""
        from vpr_ros.core.backends import make_backend

        return make_backend(self.config.backend, descriptor, self.config.device, precision=self.config.precision)

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
        """slam: how many of the newest map frames a query must not match."""
        if self.config.mode != "slam" or self.vpr_map is None or len(self.vpr_map) == 0:
            return 0
        stamps = self.vpr_map.frames.stamp_ns
        by_time = int(np.count_nonzero(stamps > stamp_ns - int(self.config.exclude_recent_s * 1e9)))
        return min(len(stamps), max(by_time, self.config.exclude_recent_frames))

    def _accept(self, places: list[PlaceResult]) -> PlaceResult | None:
        best = places[0] if places else None
        if best is not None and np.isfinite(best.probability):
            ok = best.probability >= self.config.accept_min_probability
        else:
            ok = best is not None and best.hypothesis.similarity >= self.config.accept_min_similarity
            if ok and self.reranker is not None:
                ok = best.verified and best.verification.inlier_count >= self.config.accept_min_inliers
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
                                            self.vpr_map.local_conf["dim"])
        self.vpr_map.add(descriptor, _frame_row(stamp_ns, pose, f"online:{stamp_ns}"), local)
        return key

    def _collect(self, image, stamp_ns, pose, frame_id) -> FrameResult:
        rgb = to_rgb8(image)  # validates now, so a bad frame never poisons the vocabulary
        self._bootstrap.append((rgb, stamp_ns, pose))
        self.frames_processed += 1
        if len(self._bootstrap) < self.config.bootstrap_frames:
            return FrameResult(frame_id, stamp_ns, status=f"bootstrapping {len(self._bootstrap)}/"
                                                          f"{self.config.bootstrap_frames}", timings_ms={"pipeline": 0.0})
        start = time.perf_counter()
        self._start_online_map()
        return FrameResult(frame_id, stamp_ns, map_key=len(self.vpr_map) - 1,
                           status=f"online map started with {len(self.vpr_map)} frames",
                           timings_ms={"pipeline": (time.perf_counter() - start) * 1e3})

    def _start_online_map(self) -> None:
        config, frames = self.config, self._bootstrap
        overrides = {"checkpoint": config.checkpoint} if config.checkpoint else {}
        descriptor = GlobalDescriptor(config.preset, **overrides).to(config.device)
        descriptors = describe_map(descriptor, list(range(len(frames))), lambda i: frames[i][0])
        table = FrameTable.build([f[1] for f in frames], [f"online:{f[1]}" for f in frames],
                                 pose=np.stack([_pose_or_nan(f[2]) for f in frames]))
        local, local_conf = None, None
        if self.reranker is not None:  # the online map stores what the matcher needs
            extractor = LocalExtractor(self.reranker.matcher.features, config.max_keypoints, device=config.device)
            local = LocalFeatureTable.build(extractor.extract([f[0] for f in frames]), config.max_keypoints,
                                            extractor.dim)
            local_conf = extractor.config()
        self.vpr_map = VPRMap.create("online", descriptor, descriptors, table, frame_id=self.pose_frame_id,
                                     local=local, local_conf=local_conf)
        self.vpr_map.backend = self._backend(descriptor)
        self._place_index(self.vpr_map)
        self._bootstrap = []
        LOGGER.info("slam: online map started from %d keyframes", len(self.vpr_map))


def _pose_or_nan(pose) -> np.ndarray:
    return np.full(7, np.nan) if pose is None else np.asarray(pose, np.float64).reshape(7)


def _frame_row(stamp_ns: int, pose, source: str) -> FrameTable:
    return FrameTable.build([stamp_ns], [source], pose=_pose_or_nan(pose)[None])
