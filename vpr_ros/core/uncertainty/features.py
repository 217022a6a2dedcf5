"""Confidence of place hypotheses: the calibrator's features and the baselines it is measured against.

Per hypothesis (the features a calibrator combines):
- `similarity`: global cosine similarity to the query.
- `margin`: similarity minus the best similarity among the query's other hypotheses (s1 - s2 for
  the best one; negative for the others): how distinctive the match is.
- `first`: 1 for the published best hypothesis, else 0 (the best is chosen, so it is right more
  often than its similarity alone says).
- `log_query_uncertainty`, `log_map_uncertainty`: log of the BayesCap mean predicted variance of the
  query's and the map frame's descriptors.
- `pair_likelihood`: the BayesCap pair likelihood of query and map frame (bayescap.pair_log_likelihood):
  how well each descriptor lies where the other's generalized Gaussian expects a revisit.
- Geometry, when re-ranking ran (matching/geometry.py; 0 for a candidate that was not matched):
  - `log_inliers`: log(1 + inliers of the fitted two-view model);
  - `inlier_ratio`: inliers over matches;
  - `keypoint_share`: inliers over the smaller keypoint count of the two images (the budget);
  - `nfa_evidence`: -log10 of the a contrario number of false alarms, clipped to [0, NFA_CLIP]: how far
    beyond chance the inliers are, a bound that holds in any scene;
  - `coverage`: the share of each image the inliers' convex hull spans (the smaller).
  They depend on the geometry of the two views, not on how the light moved the global descriptor, but
  their scale still moves between synthetic views of a map and real revisits (Corridor's small frames):
  the shipped calibrators use log_inliers only (docs/uncertainty.md, benchmarks/calibration_transfer.py).
- `sequence_score`: with sequence ranking, the mean z-score along the hypothesis's best alignment
  (retrieval/sequence.py); only calibrators fitted on a replayed session have it (build/uncertainty_training.py).

`hypothesis_features` gives every feature (NaN where not measured); a calibrator takes the columns it
names (`select`), so calibrators fitted on different subsets read the same rows.

Baselines, per query, for its best hypothesis (higher = more confident):
- `l2`: minus the L2 distance of the top-1 descriptors, -sqrt(2 - 2 s1).
- `pa`: 1 - d1 / d2, the PA-score (ratio of the first to the second descriptor distance).
- `sue`: minus the spatial spread of the top-K map positions (trace of their covariance, weighted by
  softmax(similarity / SUE_TEMPERATURE)). Positions are map poses; for maps without poses, the frame
  key stands in as a 1-D position along the route (a map built from one traversal in order).
- `inliers`: inlier count of the top-1 (with re-ranking).
- `bayescap`: minus the query's BayesCap uncertainty (the head's per-image variance).
- `pair_likelihood`: the BayesCap pair likelihood of the top-1 (the head's score of the pair).
"""

import numpy as np

DESCRIPTOR_FEATURES = ["similarity", "margin", "first", "log_query_uncertainty", "log_map_uncertainty", "pair_likelihood"]
GEOMETRY_FEATURES = ["log_inliers", "inlier_ratio", "keypoint_share", "nfa_evidence", "coverage"]
# the Verification fields they come from besides inlier_count (QueryRecord keeps them per hypothesis)
VERIFICATION_FIELDS = ("inlier_ratio", "keypoint_share", "log_nfa", "coverage")
SEQUENCE_FEATURE = "sequence_score"
ALL_FEATURES = DESCRIPTOR_FEATURES + GEOMETRY_FEATURES + [SEQUENCE_FEATURE]
# What the calibrators use (docs/uncertainty.md, "Which features"; benchmarks/calibration_transfer.py measured
# them on conditions the calibration never saw). `first` is implicit: the best hypothesis has its own calibrator.
GLOBAL_FEATURES = ["similarity", "margin", "log_query_uncertainty", "log_map_uncertainty", "pair_likelihood"]
RERANK_FEATURES = GLOBAL_FEATURES + ["log_inliers"]
NFA_CLIP = 100.0
# Evidence for the place: a calibrator's probability never falls when one of these rises (calibration.py)
INCREASING = ("similarity", "margin", "first", "pair_likelihood", *GEOMETRY_FEATURES, SEQUENCE_FEATURE)
BASELINES = ("l2", "pa", "sue", "inliers", "bayescap", "pair_likelihood")
SUE_TEMPERATURE = 0.02  # cosine-similarity units; top-K within ~0.02 of each other weigh alike
TINY = 1e-12


def hypothesis_features(similarities: np.ndarray, query_uncertainty: float, map_uncertainty: np.ndarray,
                        pair_likelihood: np.ndarray, geometry: np.ndarray | None = None,
                        sequence_scores: np.ndarray | None = None) -> np.ndarray:
    """One query's K hypotheses -> K x len(ALL_FEATURES) features, NaN where not measured.

    similarities, map_uncertainty, pair_likelihood, sequence_scores: K values in the hypotheses' (published)
    order; geometry: K x len(GEOMETRY_FEATURES) (geometry_features), None without re-ranking.
    """
    sims = np.asarray(similarities, np.float64).reshape(-1)
    k = len(sims)
    if k == 0:
        return np.zeros((0, len(ALL_FEATURES)))
    others_best = np.array([np.max(np.delete(sims, i)) if k > 1 else -1.0 for i in range(k)])
    columns = [sims, sims - others_best, (np.arange(k) == 0).astype(np.float64),
               np.full(k, np.log(max(query_uncertainty, TINY)) if np.isfinite(query_uncertainty) else np.nan),
               np.log(np.maximum(np.asarray(map_uncertainty, np.float64).reshape(k), TINY)),
               np.asarray(pair_likelihood, np.float64).reshape(k)]
    geometry = np.full((k, len(GEOMETRY_FEATURES)), np.nan) if geometry is None else \
        np.asarray(geometry, np.float64).reshape(k, len(GEOMETRY_FEATURES))
    sequence = np.full(k, np.nan) if sequence_scores is None else np.asarray(sequence_scores, np.float64).reshape(k)
    return np.concatenate([np.stack(columns, axis=1), geometry, sequence[:, None]], axis=1)


def geometry_features(inliers, inlier_ratio, keypoint_share, log_nfa, coverage) -> np.ndarray:
    """K x len(GEOMETRY_FEATURES) from per-hypothesis arrays (matching/geometry.Verification's fields; NaN
    where a candidate was not matched or a field not measured, which counts as no evidence: 0)."""
    inliers = np.nan_to_num(np.asarray(inliers, np.float64).reshape(-1))
    evidence = np.clip(-np.asarray(log_nfa, np.float64).reshape(-1), 0.0, NFA_CLIP)
    columns = [np.log1p(inliers), inlier_ratio, keypoint_share, evidence, coverage]
    return np.nan_to_num(np.stack([np.asarray(c, np.float64).reshape(-1) for c in columns], axis=1), nan=0.0,
                         posinf=NFA_CLIP, neginf=0.0)


def verification_features(verifications) -> np.ndarray:
    """K x len(GEOMETRY_FEATURES) from K Verifications (None: the candidate was not matched)."""
    fields = [(v.inlier_count, *(getattr(v, name) for name in VERIFICATION_FIELDS)) if v is not None
              else (0, *[np.nan] * len(VERIFICATION_FIELDS)) for v in verifications]
    return geometry_features(*np.asarray(fields, np.float64).reshape(-1, 1 + len(VERIFICATION_FIELDS)).T)


def select(features: np.ndarray, names: list[str]) -> np.ndarray:
    """The columns of hypothesis_features' rows that a calibrator names, in its order."""
    return np.asarray(features)[:, [ALL_FEATURES.index(name) for name in names]]


def spatial_spread(similarities: np.ndarray, positions: np.ndarray) -> float:
    """SUE: trace of the similarity-weighted covariance of the candidates' positions (K x P)."""
    sims = np.asarray(similarities, np.float64).reshape(-1)
    positions = np.asarray(positions, np.float64).reshape(len(sims), -1)
    if len(sims) < 2:
        return 0.0
    w = np.exp((sims - sims.max()) / SUE_TEMPERATURE)
    w /= w.sum()
    centre = w @ positions
    return float(w @ np.square(positions - centre).sum(axis=1))


def baseline_scores(similarities: np.ndarray, positions: np.ndarray, query_uncertainty: float = float("nan"),
                    inliers_top1: float | None = None, pair_likelihood_top1: float = float("nan")) -> dict[str, float]:
    """One query's baseline confidences (BASELINES) from its top-K similarities (best first)."""
    sims = np.asarray(similarities, np.float64).reshape(-1)
    distance = np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0))
    out = {"l2": -float(distance[0]),
           "pa": 1.0 - float(distance[0] / max(distance[1], TINY)) if len(sims) > 1 else 0.0,
           "sue": -spatial_spread(sims, positions),
           "bayescap": -float(query_uncertainty), "pair_likelihood": float(pair_likelihood_top1)}
    if inliers_top1 is not None:
        out["inliers"] = float(inliers_top1)
    return out


def map_positions(frames, keys: np.ndarray) -> np.ndarray:
    """K x 3 positions of map frames for SUE: their poses, or (key, 0, 0) when the map has no poses."""
    keys = np.asarray(keys, np.int64)
    if frames.has_pose[keys].all():
        return frames.pose[keys, :3]
    return np.stack([keys.astype(np.float64), np.zeros(len(keys)), np.zeros(len(keys))], axis=1)


def position_covariance(positions: np.ndarray, probabilities: np.ndarray, sigma_m: float) -> np.ndarray:
    """3 x 3 covariance of the place about the best hypothesis's position (row 0), as the second moment
    of a mixture: each hypothesis is the place with its probability (the rest of the best's share
    spread over the others in proportion to theirs), each known to `sigma_m`. A confident best
    hypothesis gives sigma_m² I; doubt among distant candidates inflates it along their spread."""
    positions = np.asarray(positions, np.float64).reshape(-1, 3)
    p = np.clip(np.nan_to_num(np.asarray(probabilities, np.float64).reshape(-1)), 0.0, 1.0)
    weights = np.zeros(len(positions))
    weights[0] = p[0]
    rest = p[1:].sum()
    if len(positions) > 1:
        weights[1:] = (1.0 - p[0]) * (p[1:] / rest if rest > 0 else np.full(len(p) - 1, 1.0 / (len(p) - 1)))
    else:
        weights[0] = 1.0
    offsets = positions - positions[0]
    return sigma_m ** 2 * np.eye(3) + (weights[:, None, None] * offsets[:, :, None] * offsets[:, None, :]).sum(axis=0)
