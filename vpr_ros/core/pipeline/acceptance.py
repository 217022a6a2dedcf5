"""Which hypothesis becomes a loop closure: the per-frame acceptance policy.

With a map that carries an uncertainty model (vpr_train_uncertainty), every hypothesis gets the BayesCap
uncertainty of the query and of its map frame, their pair likelihood and a calibrated probability of
being the query's place; the best one is accepted when its probability reaches `accept_min_probability`,
or (< 0) the threshold that keeps the false-closure rate per frame at most `accept_max_false_rate` on the
calibration queries (calibration.Calibrator.risk_threshold), at least AUTO_MIN_PROBABILITY. Maps without a
calibrator for the ranking in use fall back to the similarity, inlier and sequence-score thresholds.

With `temporal_window` M > 0 a hypothesis is accepted only when the best candidates of the previous M
frames lay within `temporal_tolerance` map keys of it (a place is recognised over consecutive frames).
"""

import time
from collections import deque

import numpy as np

from vpr_ros.core import LOGGER
from vpr_ros.core.config import AUTO_MIN_PROBABILITY, LocalizerConfig
from vpr_ros.core.map.store import VPRMap
from vpr_ros.core.pipeline.results import FrameResult, PlaceResult
from vpr_ros.core.uncertainty.features import hypothesis_features, verification_features


class LoopAcceptance:
    """Scores a frame's hypotheses (calibrated probabilities) and decides its loop closure; remembers the
    best candidates of the last frames for the temporal window."""

    def __init__(self, config: LocalizerConfig):
        self.config = config
        self.matcher = config.rerank  # the re-ranking whose calibrator applies (None: global retrieval)
        self._recent_best: deque[int | None] = deque(maxlen=max(config.temporal_window, 1))
        self._said_uncalibrated_sequence = False

    def reset(self) -> None:
        """Another map: the previous frames' candidates no longer compare."""
        self._recent_best.clear()

    def uncertainties(self, vpr_map: VPRMap, result: FrameResult) -> dict[int, tuple[float, float]] | None:
        """BayesCap: the query's uncertainty (into result) and, per global candidate (key -> values), its
        uncertainty and pair likelihood with the query, in one forward pass; None when the map has no
        uncertainty model."""
        model = vpr_map.uncertainty
        if model is None or not len(result.global_keys):
            return None
        t0 = time.perf_counter()
        keys = result.global_keys
        result.query_uncertainty, map_u, pair = model.describe(result.descriptor, vpr_map.descriptors[keys])
        result.timings_ms["uncertainty"] = (time.perf_counter() - t0) * 1e3
        return {int(key): (float(u), float(p)) for key, u, p in zip(keys, map_u, pair)}

    def confident(self, vpr_map: VPRMap, result: FrameResult, uncertain: dict[int, tuple[float, float]] | None
                  ) -> bool:
        """Whether the global first candidate's calibrated probability reaches skip_min_probability, so that
        re-ranking verifies it alone (and all candidates only if it fails)."""
        threshold = self.config.skip_min_probability
        if threshold is None or uncertain is None or self.matcher is None:
            return False
        map_u, pair = np.array([uncertain[int(key)] for key in result.global_keys]).T
        features = hypothesis_features(result.global_similarities, result.query_uncertainty, map_u, pair)
        probability = vpr_map.uncertainty.probabilities(features)[0]
        return bool(np.isfinite(probability) and probability >= threshold)

    def score(self, vpr_map: VPRMap, result: FrameResult, uncertain: dict[int, tuple[float, float]]) -> None:
        """Calibrated probabilities of the frame's hypotheses (and their map frames' uncertainties and pair
        likelihoods), and the probability a loop closure needs."""
        t0 = time.perf_counter()
        model, config = vpr_map.uncertainty, self.config
        map_u, pair = np.array([uncertain[p.hypothesis.key] for p in result.places]).reshape(-1, 2).T
        geometry = verification_features([p.verification for p in result.places]) if self.matcher else None
        calibrator, scores = None, None
        if result.sequence_length:  # ranked by sequence: the calibrator fitted for it, when there is one
            calibrator = model.sequence_calibrator(self.matcher, config.sequence_length, config.sequence_similarity)
            if calibrator is not None:
                scores = np.array([p.sequence_score for p in result.places])
            elif not self._said_uncalibrated_sequence:
                self._said_uncalibrated_sequence = True
                LOGGER.warning("map %s has no calibrator for sequence ranking (sequence_length %d, %s rows): "
                               "probabilities come from the single-image calibrator and do not include the "
                               "sequence score; vpr_train_uncertainty --session BAG fits one from another session",
                               vpr_map.name, config.sequence_length, config.sequence_similarity)
        calibrator = calibrator or model.calibrator_for(self.matcher)
        features = hypothesis_features(np.array([p.hypothesis.similarity for p in result.places]),
                                       result.query_uncertainty, map_u, pair, geometry, scores)
        probabilities = model.probabilities(features, self.matcher, calibrator)
        result.accept_min_probability = config.accept_min_probability
        if result.accept_min_probability < 0 and calibrator is not None:  # risk-controlled on the calibration
            result.accept_min_probability = max(AUTO_MIN_PROBABILITY,
                                                calibrator.risk_threshold(config.accept_max_false_rate))
        for place, u, likelihood, prob in zip(result.places, map_u, pair, probabilities):
            place.map_uncertainty, place.pair_likelihood, place.probability = float(u), float(likelihood), float(prob)
        result.timings_ms["uncertainty"] += (time.perf_counter() - t0) * 1e3

    def accept(self, places: list[PlaceResult], min_probability: float) -> PlaceResult | None:
        """The best hypothesis when it passes: its probability (calibrated maps), else the thresholds; then the
        temporal window. Every frame's best candidate joins the window, accepted or not."""
        config = self.config
        best = places[0] if places else None
        if best is not None and np.isfinite(best.probability):
            ok = best.probability >= min_probability
        else:
            ok = best is not None and best.hypothesis.similarity >= config.accept_min_similarity
            if ok and self.matcher is not None:
                ok = best.verified and best.verification.inlier_count >= config.accept_min_inliers
            if ok and config.accept_min_sequence_score > 0 and best.sequence_length:
                ok = best.sequence_score >= config.accept_min_sequence_score
        window = config.temporal_window
        if ok and window > 0:
            previous = list(self._recent_best)
            ok = len(previous) == window and all(
                key is not None and abs(key - best.hypothesis.key) <= config.temporal_tolerance
                for key in previous)
        self._recent_best.append(best.hypothesis.key if best is not None else None)
        return best if ok else None
