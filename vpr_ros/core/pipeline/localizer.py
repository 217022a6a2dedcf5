"""The per-frame pipeline the node runs, free of ROS: a list of step calls, each step and each decision in
a module of its own: retrieve (retrieval/: the global search, a prior's region, sequence ranking; or
device_chain.py, retrieval and re-ranking in one device call), local features (matching/local_features.py,
or the descriptor's own joint pass), re-rank (matching/reranker.py), score and accept (acceptance.py),
the metric pose (metric_step.py), the answer (constraints.py: the loop-closure constraint and the
localised pose, computed once) and, in slam mode, the online map (online_map.py).

Modes: `localize` queries a prebuilt map, which does not change; `slam` closes loops online, its
processed keyframes joining an in-memory map. The Localizer owns its map: loading, swapping and saving go
through it, under its lock, so that a frame is always answered from one map.
"""

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np

from vpr_ros.core import LOGGER
from vpr_ros.core.build.sessions import append_session
from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.descriptors.joint import Encoded, shares_backbone
from vpr_ros.core.inputs.images import input_size_note, to_rgb8
from vpr_ros.core.inputs.sync import PositionPrior
from vpr_ros.core.map.frames import Session
from vpr_ros.core.map.store import VPRMap
from vpr_ros.core.matching.local_features import LocalExtractor, LocalFeatures, features_from_joint
from vpr_ros.core.matching.ransac import make_verifier
from vpr_ros.core.matching.reranker import Reranker
from vpr_ros.core.pipeline.acceptance import LoopAcceptance
from vpr_ros.core.pipeline.constraints import finish
from vpr_ros.core.pipeline.device_chain import DeviceQuery, device_chain_for
from vpr_ros.core.pipeline.metric_step import DepthSource, FrameDepth, MetricStep, with_depth
from vpr_ros.core.pipeline.online_map import OnlineMap
from vpr_ros.core.pipeline.results import FrameResult, Hypothesis, PlaceResult
from vpr_ros.core.retrieval.prior import RadiusPolicy, RegionFinder
from vpr_ros.core.retrieval.recognizer import PlaceRecognizer
from vpr_ros.core.retrieval.sequence import SequenceRanker
from vpr_ros.core.runtime.backends import make_backend
from vpr_ros.core.runtime.devices import resolve_device, resolve_precision
from vpr_ros.core.runtime.threads import set_cpu_threads


class Localizer:
    """Process frames one at a time against a map (localize) or an online map (slam)."""

    def __init__(self, config: LocalizerConfig, vpr_map: "VPRMap | str | Path | None" = None,
                 map_options: dict | None = None):
        """vpr_map: the map, or the path of one to load; map_options: VPRMap.load's checksum options
        (verify_checksums, recheck_s) for every map this localizer loads."""
        if config.mode == "localize" and vpr_map is None:
            raise ValueError("localize mode needs a map")
        device = resolve_device(config.device)  # "auto" picks; an explicit cuda without a GPU raises
        config = dataclasses.replace(config, device=device, precision=resolve_precision(config.precision, device))
        self.config, self.map_options = config, dict(map_options or {})
        self.lock = threading.RLock()  # held while a frame is processed and while the map is swapped or saved
        set_cpu_threads(config.cpu_threads)
        self.reranker = None
        if config.rerank:
            verifier = make_verifier(config.verifier, config.device, min_inliers=config.min_inliers,
                                     min_inlier_ratio=config.min_inlier_ratio,
                                     min_keypoint_share=config.min_keypoint_share)
            self.reranker = Reranker(config.rerank, verifier, skip_margin=config.skip_margin, device=config.device,
                                     precision=config.precision, matcher_layers=config.matcher_layers)
        self.acceptance, self.metric = LoopAcceptance(config), MetricStep(config)
        self.vpr_map: VPRMap | None = None
        self.backend = None  # the descriptor backend serving the map (runtime/backends.py)
        self.device_query: DeviceQuery | None = None
        self.sequence: SequenceRanker | None = None
        self._map_extractor: LocalExtractor | None = None
        self.frames_processed = 0
        self._sizes_seen: set[tuple[int, int, int, int]] = set()
        self.pose_frame_id = "map"  # slam: frame of the keyframe poses (the node sets its odometry's frame)
        self._regions = RegionFinder(RadiusPolicy(config.prior_k_sigma, config.prior_min_radius_m,
                                                  config.prior_max_radius_m), config.prior_max_age_s)
        self.session = Session(config.session_id or time.strftime("slam-%Y%m%dT%H%M%SZ", time.gmtime()),
                               config.robot_id)  # slam: the session this run's keyframes join the map as
        self.online = OnlineMap(config, self.session) if config.mode == "slam" else None
        if vpr_map is not None:
            self.set_map(self._read(vpr_map) if isinstance(vpr_map, (str, Path)) else vpr_map)

    @property
    def map_name(self) -> str:
        return self.vpr_map.name if self.vpr_map is not None else ""

    @property
    def backend_label(self) -> str:
        """e.g. "onnxruntime/cpu"; before a slam map exists, the configured backend and device."""
        return self.backend.label if self.backend is not None else f"{self.config.backend}/{self.config.device}"

    # ---- the map ------------------------------------------------------------------------------
    def _read(self, path: str | Path) -> VPRMap:
        return VPRMap.load(Path(path).expanduser(), checkpoint=self.config.checkpoint or None, **self.map_options)

    def load_map(self, path: str | Path) -> VPRMap:
        """Read the map at `path` and serve it; raises (MapError, ValueError, OSError, ...) keeping the
        current map on any failure."""
        vpr_map = self._read(path)
        with self.lock:
            previous = self.vpr_map
            self.set_map(vpr_map)
        if previous is not None and previous.checksums is not None:
            previous.checksums.stop()  # the map it watched no longer serves
        return vpr_map

    def save_map(self, path: str | Path, overwrite: bool = False, append: bool = False) -> tuple[Path, int]:
        """Write the map atomically (only an existing vpr_ros map is ever replaced), or with `append` add this
        session's frames to the map at `path`; returns the path and its frame count."""
        with self.lock:
            if self.vpr_map is None:
                raise ValueError("no map yet (slam is still collecting its bootstrap frames)")
            if append:
                return append_session(path, self.vpr_map, self.session.id)
            return self.vpr_map.save(path, overwrite=overwrite), len(self.vpr_map)

    def recheck_map(self) -> bool:
        """Verify the served map's files read from disk against their checksums now; False when it has none."""
        checksums = self.vpr_map.checksums if self.vpr_map is not None else None
        if checksums is not None:
            checksums.recheck_now()
        return checksums is not None

    def check_map(self) -> None:
        """Raise MapDamaged when a background checksum found the served map damaged."""
        if self.vpr_map is not None:
            self.vpr_map.check_intact()

    def close(self) -> None:
        """Stop the served map's background checks."""
        if self.vpr_map is not None and self.vpr_map.checksums is not None:
            self.vpr_map.checksums.stop()

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
        backend, sequence = self._serve(vpr_map)
        device_query = device_chain_for(self.config, vpr_map, backend, self.reranker)
        model = vpr_map.uncertainty
        if model is not None and model.calibrator_for(self.config.rerank) is None:
            LOGGER.warning("map %s has no calibrator for %s: probabilities stay NaN and loop closures use the "
                           "similarity/inlier thresholds; run vpr_train_uncertainty --rerank %s", vpr_map.name,
                           self.config.rerank or "global retrieval", self.config.rerank or "")
        with self.lock:
            self.vpr_map, self.backend, self.device_query, self.sequence = vpr_map, backend, device_query, sequence
            self.acceptance.reset()

    def _serve(self, vpr_map: VPRMap, ordered: bool = False) -> tuple[object, SequenceRanker | None]:
        """The descriptor backend for `vpr_map` (the joint graph, one XFeat pass for the descriptor and the
        local features, when its local features allow it), its index on the configured device (an index the
        GPU cannot hold here stays on the CPU, said once), and its sequence ranker; `ordered`: a slam map."""
        joint = vpr_map.local is not None and (self.reranker is not None or self.config.mode == "slam")  # re-rank, store
        local_conf = vpr_map.local_conf if joint else None
        max_keypoints = local_conf["max_keypoints"] if shares_backbone(vpr_map.descriptor, local_conf) else 0
        backend = make_backend(self.config.backend, vpr_map.descriptor, self.config.device,
                               precision=self.config.precision, max_keypoints=max_keypoints)
        if vpr_map.index.device != self.config.device:
            try:
                vpr_map.index.to_device(self.config.device)
            except ValueError as exc:
                LOGGER.warning("map %s: search stays on the cpu: %s", vpr_map.name, exc)
        config = self.config
        sequence = SequenceRanker.for_map(vpr_map.descriptors, vpr_map.frames.stamp_ns, vpr_map.name,
                                          config.sequence_length, config.sequence_max_step,
                                          config.sequence_similarity, ordered)
        return backend, sequence

    # ---- one frame ----------------------------------------------------------------------------
    def process(self, image: np.ndarray, stamp_ns: int, pose: np.ndarray | None = None,
                camera_K: np.ndarray | None = None, depth: "np.ndarray | DepthSource | None" = None,
                depth_K: np.ndarray | None = None, depth_note: str = "",
                prior: PositionPrior | None = None) -> FrameResult:
        """One frame -> its hypotheses and, when accepted, a loop closure with its constraint and localised
        pose. Raises inputs.images.ImageError (or ValueError) on an unusable image, leaving the localizer as
        it was, and map.store.MapDamaged when the map failed a background checksum.

        depth: the aligned depth image (metres, NaN no reading; inputs/depth.to_metres) of this frame, with
        its own intrinsics `depth_K` when its size differs; depth_note: why there is none, when one was
        expected. Or a DepthSource (metric_step.py), called once, when the frame first needs its depth.
        prior: where the robot is believed to be; retrieval then searches only the map frames near it
        (retrieval/prior.py; FrameResult.search_scope says what was searched)."""
        with self.lock:
            start = time.perf_counter()
            result = FrameResult(self.frames_processed, stamp_ns)
            frame_depth = FrameDepth(depth, depth_K, depth_note, image, camera_K, result)
            if self.vpr_map is None:  # slam, still collecting frames for the vocabulary
                return self._collect(image, result, pose, frame_depth, camera_K)
            self.vpr_map.check_intact()
            self._check_size(image)
            if self.device_query is not None:  # retrieval and re-ranking as one chain, read back once
                answer, features = self.device_query(image, camera_K), None
                result.timings_ms.update(answer.timings_ms)
                result.descriptor, result.global_keys, result.global_similarities = (answer.descriptor, answer.ids,
                                                                                     answer.similarities)
                rerank = answer.rerank
                if prior is not None:
                    result.search_scope = "map (the device chain searches the whole map; a prior is not applied there)"
            else:
                encoded, rerank = self._retrieve(image, stamp_ns, result, prior), None
                features = self._local_features(image, result, encoded)
            uncertain = self.acceptance.uncertainties(self.vpr_map, result)
            confident = self.acceptance.confident(self.vpr_map, result, uncertain)
            result.places = self._rank(features, camera_K, result, confident, rerank)
            if uncertain is not None and result.places:
                self.acceptance.score(self.vpr_map, result, uncertain)
            result.loop = self.acceptance.accept(result.places, result.accept_min_probability)
            if result.loop is not None:
                self.metric(result, image, features, camera_K, self.map_K(camera_K), self.vpr_map.local,
                            frame_depth, self._match_here)
                finish(result, self.config.rerank, self.vpr_map.camera, self.config.pose_sigma_m)
            if self.online is not None:  # the online map keeps the keyframe's keypoint depths
                depth, depth_K, _ = frame_depth.get()
                with_depth(features, depth, camera_K, depth_K)
                result.map_key = self.online.add(self.vpr_map, result.descriptor, stamp_ns, pose, features)
                if self.sequence is not None:
                    self.sequence.grow(result.descriptor, self.vpr_map.frames.stamp_ns)
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

    def _check_size(self, image: np.ndarray) -> None:
        """Say once per image size what is worth saying about it against the descriptor's input."""
        if hasattr(image, "shape") and len(image.shape) >= 2:
            key = (image.shape[1], image.shape[0], *self.vpr_map.descriptor.input_size)
            if key not in self._sizes_seen:
                self._sizes_seen.add(key)
                if note := input_size_note(*key[:2], key[2:]):
                    LOGGER.warning(note)

    def _retrieve(self, image: np.ndarray, stamp_ns: int, result: FrameResult,
                  prior: PositionPrior | None = None) -> Encoded | None:
        """Global retrieval: the query's descriptor and its top_k map keys (slam: recent frames left out; with
        a prior, only map frames near it; with sequence matching, ranked by sequence score once the window is
        full, the single-image ones kept in single_keys); returns the backend's output, which holds the local
        features when the backbone is shared."""
        excluded = self.online.excluded_suffix(self.vpr_map, stamp_ns) if self.online is not None else 0
        searchable = len(self.vpr_map) - excluded
        k = min(self.config.top_k, max(searchable, 0))
        region = self._regions.region(self.vpr_map.frames, prior, stamp_ns)
        result.search_scope, result.search_frames, subset = region.note, region.frames, region.mask
        if subset is not None and excluded:
            subset = subset.copy()
            subset[searchable:] = False
        answer = PlaceRecognizer(self.backend, self.vpr_map.index).query(
            [image], k=max(k, 1) + (excluded if subset is None else 0), subset=subset)  # an empty map answers -1 ids
        result.timings_ms.update(answer.timings_ms)
        ids, sims = answer.ids[0], answer.similarities[0]
        keep = (ids >= 0) & (ids < searchable)
        result.descriptor, result.global_keys, result.global_similarities = answer.descriptors, ids[keep][:k], sims[keep][:k]
        if self.sequence is not None and k > 0:
            t0 = time.perf_counter()
            ranking = self.sequence.rank(result.descriptor, self.vpr_map.descriptors, stamp_ns, searchable, k, subset)
            if ranking is not None:
                result.single_keys = result.global_keys
                result.global_keys, result.global_similarities = ranking.keys, ranking.similarities
                result.sequence_scores, result.sequence_length = ranking.scores, ranking.length
            result.timings_ms["sequence"] = (time.perf_counter() - t0) * 1e3
        return answer.encoded

    def _local_features(self, image: np.ndarray, result: FrameResult,
                        encoded: Encoded | None) -> LocalFeatures | None:
        """The query's local features, when re-ranking has candidates or the slam map stores them: from the
        descriptor's own pass when the backbone is shared, else from the extractor."""
        stores = self.online is not None and self.vpr_map.local is not None
        if not stores and (self.reranker is None or not len(result.global_keys)):
            return None
        t0 = time.perf_counter()
        if encoded is not None and encoded.has_local:
            size = (image.shape[1], image.shape[0])
            features = features_from_joint(encoded.keypoints[0], encoded.local_descriptors[0], encoded.scores[0],
                                           size, self.backend.input_size)
        else:
            features = self._extractor().extract([image])[0]
        result.timings_ms["local_features"] = (time.perf_counter() - t0) * 1e3
        return features

    def _rank(self, features: LocalFeatures | None, camera_K: np.ndarray | None,
              result: FrameResult, confident: bool = False, rerank=None) -> list[PlaceResult]:
        """The hypotheses best first: re-ranked (the first rerank_top_k; `rerank`: done on the device
        already), the rest in global order."""
        frames, ids, sims = self.vpr_map.frames, result.global_keys, result.global_similarities
        places = []
        if self.reranker is not None and len(ids):
            first = self.config.rerank_top_k or len(ids)
            if rerank is None:
                rerank = self.reranker.rerank(features, ids[:first], sims[:first], self.vpr_map.local, camera_K,
                                              self.map_K(camera_K), confident)
            result.timings_ms.update(rerank.timings_ms)
            result.rerank_pairs, result.rerank_skipped = rerank.pairs_matched, rerank.skipped
            places = [PlaceResult(Hypothesis.of(frames, c.key, c.global_rank, c.global_similarity), rank, c.score,
                                  c.match_count, c.verification, matches=c.matches)
                      for rank, c in enumerate(rerank.candidates)]
        places += [PlaceResult(Hypothesis.of(frames, int(ids[rank]), rank, float(sims[rank])), rank)
                   for rank in range(len(places), len(ids)) if ids[rank] >= 0]
        if result.sequence_scores is not None:  # each hypothesis's sequence score and window length
            scores = {int(key): float(v) for key, v in zip(result.global_keys, result.sequence_scores)}
            for place in places:
                place.sequence_score, place.sequence_length = scores[place.hypothesis.key], result.sequence_length
        return places

    def _extractor(self) -> LocalExtractor:
        """The local feature extractor configured as the map's features were extracted."""
        conf = self.vpr_map.local_conf
        if self.reranker is not None:
            return self.reranker.extractor_for(conf)
        self._map_extractor = LocalExtractor.for_config(conf, self.config.device, self._map_extractor)
        return self._map_extractor

    def _match_here(self, image: np.ndarray, stored: LocalFeatures) -> tuple:
        """(the query's features, its matches with `stored`) for a pair the device chain matched."""
        features = self._extractor().extract([image])[0]
        return features, self.reranker.matcher.match(features, [stored])[0]

    def _collect(self, image, result: FrameResult, pose, frame_depth: FrameDepth, camera_K) -> FrameResult:
        """slam before the online map: keep the frame (and its depth, with the intrinsics to read it)."""
        rgb = to_rgb8(image)  # validates now, so a bad frame never poisons the vocabulary
        depth, depth_K, _ = frame_depth.get()
        count = self.online.collect(rgb, result.stamp_ns, pose, (depth, camera_K, depth_K) if depth is not None else None)
        self.frames_processed += 1
        if not self.online.ready:
            result.status = f"bootstrapping {count}/{self.config.bootstrap_frames}"
            result.timings_ms = {"pipeline": 0.0}
            return result
        start = time.perf_counter()
        vpr_map = self.online.start(self.pose_frame_id, self.reranker.matcher.features if self.reranker else None)
        self.backend, self.sequence = self._serve(vpr_map, ordered=True)
        self.vpr_map = vpr_map
        result.map_key, result.status = len(vpr_map) - 1, f"online map started with {len(vpr_map)} frames"
        result.timings_ms = {"pipeline": (time.perf_counter() - start) * 1e3}
        return result
