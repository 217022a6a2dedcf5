"""Re-ranking of global candidates by local matching and geometric verification.

A candidate is *verified* when MAGSAC++ leaves enough inliers (GeometricVerifier). Verified
candidates come first, ordered by

    score = ln(1 + inlier_count) + similarity_weight * global_similarity

and unverified candidates follow in their global order, with score = similarity_weight *
global_similarity. The logarithm saturates the inlier count: neighbouring map frames of one place
verify with similar, noisy counts, and there the global similarity locates the query better; a wrong
place that verifies through repeated structure has few inliers. The map frames' local features come
from the map (stored at build time). docs/maps.md and docs/benchmarks.md have the measurements
behind the weight.

With `skip_margin`, when the global first candidate leads the second by at least that cosine margin
(or when the caller says the first is confident, e.g. by its calibrated probability), only the first
is matched and verified (the loop edge still gets its geometry); if it fails verification, all K are
matched after all. With OpenCV's verifier the pairs are verified in parallel threads (OpenCV releases
the GIL while it fits a model), at most `verify_workers` at a time (default: runtime.threads.cpu_threads());
with the batched one (ransac.BatchedVerifier) all pairs are fitted in one call on its device.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from vpr_ros.core.matching.geometry import GeometricVerifier, Verifiable, Verification
from vpr_ros.core.matching.local_features import LocalExtractor, LocalFeatures, LocalFeatureTable
from vpr_ros.core.matching.matchers import DEFAULT_MATCHER, Matcher, Matches
from vpr_ros.core.runtime.threads import cpu_threads


@dataclass
class RankedCandidate(Verifiable):
    """One map frame after re-ranking."""

    key: int
    global_rank: int
    global_similarity: float
    score: float
    match_count: int = 0
    verification: Verification | None = None  # None when the candidate was not matched
    matches: Matches | None = None  # the matches verified (None: not matched, or matched on the device)

    @property
    def note(self) -> str:
        return "not matched (the global result was confident)" if self.verification is None else self.verification.note


@dataclass
class RerankResult:
    """Candidates best first, whether matching was cut short, and per-stage timings."""

    candidates: list[RankedCandidate]
    skipped: bool = False  # True when only the confident global first candidate was matched
    pairs_matched: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ids(self) -> np.ndarray:
        return np.asarray([c.key for c in self.candidates], np.int64)


class Reranker:
    """Match a query's local features against its top-K candidates' stored features and re-order them."""

    def __init__(self, matcher: Matcher | str = DEFAULT_MATCHER, verifier: GeometricVerifier | None = None,
                 similarity_weight: float = 25.0, skip_margin: float | None = None, device: str = "cpu",
                 precision: str = "auto", verify_workers: int | None = None, matcher_layers: int = 0):
        if isinstance(matcher, str):
            matcher = Matcher(matcher, device=device, precision=precision, layers=matcher_layers)
        self.matcher = matcher
        self.verify_workers = max(1, verify_workers or cpu_threads())
        self._pool: ThreadPoolExecutor | None = None
        self.verifier = verifier or GeometricVerifier()
        self.similarity_weight = float(similarity_weight)
        self.skip_margin = skip_margin
        self._extractor: LocalExtractor | None = None

    def check_map(self, local_conf: dict | None) -> None:
        """Raise ValueError unless the map stores the local features this matcher needs."""
        if not local_conf:
            raise ValueError(f"the map stores no local features; rebuild it with --local-features "
                             f"{self.matcher.features} to re-rank with {self.matcher.name}, or turn re-ranking off (rerank: off)")
        if local_conf["extractor"] != self.matcher.features:
            raise ValueError(f"the map stores {local_conf['extractor']} local features; matcher "
                             f"{self.matcher.name} needs {self.matcher.features}")

    def extractor_for(self, local_conf: dict) -> LocalExtractor:
        """The extractor for query images, configured as the map's features were extracted."""
        self.check_map(local_conf)
        self._extractor = LocalExtractor.for_config(local_conf, str(self.matcher.device), self._extractor)
        return self._extractor

    def rerank(self, query: LocalFeatures, ids: np.ndarray, similarities: np.ndarray, map_local: LocalFeatureTable,
               query_K: np.ndarray | None = None, map_K: np.ndarray | None = None,
               confident: bool = False) -> RerankResult:
        """Re-order one query's global candidates (a row of QueryResult.ids / similarities); `confident`:
        the first candidate is very likely right, so verify it alone first."""
        rows = [(rank, int(i), float(s)) for rank, (i, s) in enumerate(zip(ids, similarities)) if i >= 0]
        candidates = [RankedCandidate(key, rank, sim, self.similarity_weight * sim) for rank, key, sim in rows]
        timings = {"match": 0.0, "verify": 0.0}
        if not candidates:
            return RerankResult([], timings_ms=timings)
        confident = confident or (self.skip_margin is not None and (
            len(candidates) == 1 or candidates[0].global_similarity - candidates[1].global_similarity >= self.skip_margin))
        todo = candidates[:1] if confident else candidates
        self._match_and_verify(query, todo, map_local, query_K, map_K, timings)
        pairs = len(todo)
        if confident and not todo[0].verified and len(candidates) > 1:
            self._match_and_verify(query, candidates[1:], map_local, query_K, map_K, timings)
            pairs, confident = len(candidates), False
        return RerankResult(self.order(candidates), confident, pairs, timings)

    @staticmethod
    def order(candidates: list[RankedCandidate]) -> list[RankedCandidate]:
        """Verified candidates by score, then the unverified in their global order."""
        return sorted(candidates, key=lambda c: (not c.verified, -c.score if c.verified else c.global_rank))

    def verify_pairs(self, query: LocalFeatures, pairs: list[tuple[LocalFeatures, Matches]],
                     query_K: np.ndarray | None = None, map_K: np.ndarray | None = None) -> list[Verification]:
        """Verify each (candidate features, matches) pair: all in one call with a batched verifier, else in
        parallel threads when there are several."""
        if hasattr(self.verifier, "verify_batch"):
            points = [(query.keypoints[m.query_idx], features.keypoints[m.map_idx], m.scores) for features, m in pairs]
            return self.verifier.verify_batch(points, query.image_size, [f.image_size for f, _ in pairs], query_K, map_K,
                                              [(len(query), len(f)) for f, _ in pairs])

        def verify(pair):
            features, m = pair
            return self.verifier.verify(query.keypoints[m.query_idx], features.keypoints[m.map_idx],
                                        query.image_size, features.image_size, query_K, map_K,
                                        (len(query), len(features)))

        if len(pairs) < 2 or self.verify_workers < 2:
            return [verify(pair) for pair in pairs]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.verify_workers, thread_name_prefix="vpr_verify")
        return list(self._pool.map(verify, pairs))

    def _match_and_verify(self, query, todo, map_local, query_K, map_K, timings) -> None:
        stored = [map_local[c.key] for c in todo]
        start = time.perf_counter()
        matches = self.matcher.match(query, stored)
        timings["match"] += (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        verifications = self.verify_pairs(query, list(zip(stored, matches)), query_K, map_K)
        for cand, m, verification in zip(todo, matches, verifications):
            cand.match_count, cand.verification, cand.matches = len(m), verification, m
            if cand.verification.verified:
                cand.score = float(np.log1p(cand.verification.inlier_count)
                                   + self.similarity_weight * cand.global_similarity)
        timings["verify"] += (time.perf_counter() - start) * 1e3
