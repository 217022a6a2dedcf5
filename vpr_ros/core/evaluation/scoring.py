"""Score a replay (QueryRecords against a map) with ground truth: Recall@N of the published and of the
global order, loop-closure precision and recall, how well the top-1 confidence separates correct from
wrong answers (and, with an uncertainty model, the calibrated probability against the baselines),
latency per stage and dropped frames.

Ground truth, per query image, is the set of map keys showing its place:
- `by_distance`: map frames within `distance_m` of the query's true position (25 m in the VPR
  literature outdoors; a few metres for streets where 25 m spans several places);
- `by_frames`: the map frame nearest the query's true position and its `tolerance` neighbours by key
  (a map built in route order: "within N frames");
- `by_stamps`: an explicit table, query stamp -> map frame stamps (image-folder datasets converted to
  bags, whose ground truth names images rather than positions).
"""

import numpy as np

from vpr_ros.core.evaluation.confidence import report_methods
from vpr_ros.core.evaluation.metrics import (auroc, average_precision, latency_summary, precision_recall, recall_at_n,
                                             recall_at_full_precision)
from vpr_ros.core.evaluation.replay import BAD, DROPPED, PROCESSED, QueryRecord
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.uncertainty.features import baseline_scores, map_positions

RECALL_NS = (1, 5, 10)


def _map_xyz(frames: FrameTable) -> np.ndarray:
    if not frames.has_pose.any():
        raise ValueError("the map has no poses; ground truth by distance or frames needs them")
    return np.where(frames.has_pose[:, None], frames.pose[:, :3], np.inf)


def by_distance(frames: FrameTable, query_poses: np.ndarray, distance_m: float) -> list[set[int]]:
    """Map keys within distance_m of each query's true position (none for a query without a pose)."""
    if distance_m <= 0:
        raise ValueError(f"distance must be positive, got {distance_m}")
    xyz = _map_xyz(frames)
    return [set(np.flatnonzero(np.linalg.norm(xyz - q[:3], axis=1) <= distance_m).tolist())
            if np.isfinite(q[:3]).all() else set() for q in np.asarray(query_poses).reshape(-1, 7)]


def by_frames(frames: FrameTable, query_poses: np.ndarray, tolerance: int, max_distance_m: float = 25.0
              ) -> list[set[int]]:
    """The map key nearest each query's true position (if within max_distance_m) and keys within
    `tolerance` of it."""
    if tolerance < 0:
        raise ValueError(f"frame tolerance must be >= 0, got {tolerance}")
    xyz = _map_xyz(frames)
    out = []
    for q in np.asarray(query_poses).reshape(-1, 7):
        if not np.isfinite(q[:3]).all():
            out.append(set())
            continue
        d = np.linalg.norm(xyz - q[:3], axis=1)
        near = int(np.argmin(d))
        out.append(set(range(max(near - tolerance, 0), min(near + tolerance + 1, len(frames))))
                   if d[near] <= max_distance_m else set())
    return out


def by_stamps(frames: FrameTable, query_stamps: np.ndarray, table: dict[int, list[int]]) -> list[set[int]]:
    """Map keys whose stamps the table lists for each query stamp."""
    key_of = {int(s): k for k, s in enumerate(frames.stamp_ns)}
    return [{key_of[int(s)] for s in table.get(int(q), []) if int(s) in key_of} for q in query_stamps]


def _recall(rows: list[np.ndarray], positives: list[set[int]], available: int) -> dict:
    ns = [n for n in RECALL_NS if n <= available]
    if not rows:
        return {str(n): None for n in RECALL_NS}
    width = max(available, 1)
    ranked = np.full((len(rows), width), -1, np.int64)
    for i, row in enumerate(rows):
        ranked[i, :min(len(row), width)] = row[:width]
    got = recall_at_n(ranked, positives, ns)
    return {str(n): got.get(n) for n in RECALL_NS}


def evaluate_replay(records: list[QueryRecord], positives: list[set[int]], vpr_map) -> dict:
    """The report of a replay; positives[i] belongs to records[i]."""
    if len(records) != len(positives):
        raise ValueError(f"{len(records)} records for {len(positives)} ground-truth sets")
    processed = [(r, p) for r, p in zip(records, positives) if r.status == PROCESSED]
    with_truth = [(r, p) for r, p in processed if p]
    published = max((len(r.keys) for r, _ in processed), default=0)
    report = {
        "frames": {"total": len(records), "processed": len(processed),
                   "dropped": sum(r.status == DROPPED for r in records), "bad": sum(r.status == BAD for r in records),
                   "without_true_match": sum(1 for _, p in processed if not p)},
        "hypotheses_per_frame": published,
        "recall": _recall([r.keys for r, _ in with_truth], [p for _, p in with_truth], published),
        "recall_queries": len(with_truth),
    }
    if any(r.reranked for r, _ in processed):
        report["recall_global"] = _recall([r.global_order for r, _ in with_truth], [p for _, p in with_truth],
                                          published)
    if published < max(RECALL_NS):
        report["recall_note"] = (f"only {published} hypotheses were published per frame; Recall@N for larger N "
                                 "needs top_k >= N")
    if any(r.sequence_length for r, _ in processed):
        report["sequence"] = _sequence_report(with_truth, published)
    accepted = [(r, p) for r, p in processed if r.loop_key >= 0]
    true_loops = sum(r.loop_key in p for r, p in accepted)
    report["loop_closure"] = {
        "accepted": len(accepted), "correct": true_loops, "false": len(accepted) - true_loops,
        "precision": true_loops / len(accepted) if accepted else None,
        "recall": true_loops / len(with_truth) if with_truth else None,
        "methods": {m: sum(r.loop_method == m for r, _ in accepted) for m in sorted({r.loop_method for r, _ in accepted})},
    }
    answered = [(r, p) for r, p in processed if len(r.keys)]
    if answered:
        correct = np.array([int(r.keys[0]) in p for r, p in answered])
        probability = np.array([r.probabilities[0] for r, _ in answered])
        calibrated = bool(np.isfinite(probability).all())
        confidence = probability if calibrated else np.array([r.similarities[0] for r, _ in answered])
        precision, recall = precision_recall(confidence, correct)
        report["top1"] = {
            "confidence": "probability" if calibrated else "global similarity", "queries": len(answered),
            "accuracy": float(correct.mean()), "auc_pr": average_precision(confidence, correct),
            "recall_at_precision_100": recall_at_full_precision(confidence, correct),
            "pr_curve": {"precision": precision.tolist(), "recall": recall.tolist()},
            "correct": correct.tolist(), "scores": confidence.tolist(),
        }
        if vpr_map.uncertainty is not None or calibrated:
            report["confidence"] = _confidence(answered, correct, vpr_map)
    stages: dict[str, list[float]] = {}
    for r, _ in processed:
        for stage, ms in r.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    report["latency_ms"] = {stage: latency_summary(v) for stage, v in stages.items()}
    report["per_frame"] = [
        {"index": r.index, "stamp_ns": r.stamp_ns, "status": r.status,
         "top1": int(r.keys[0]) if len(r.keys) else None,
         "correct": (int(r.keys[0]) in p) if len(r.keys) and p else None,
         "loop": r.loop_key if r.loop_key >= 0 else None,
         "total_ms": r.timings_ms.get("total")} for r, p in zip(records, positives)]
    return report


def _sequence_report(with_truth: list, published: int) -> dict:
    """Recall of single-image and of sequence ranking over the same queries (before re-ranking); the first
    frames, before the window fills, are ranked by their image in both."""
    rows = [r for r, _ in with_truth]
    positives = [p for _, p in with_truth]
    out = {"length": max(r.sequence_length for r in rows) if rows else 0,
           "frames_ranked_by_sequence": sum(bool(r.sequence_length) for r in rows),
           "recall_sequence": _recall([r.global_order for r in rows], positives, published)}
    if rows and all(r.single_keys is not None for r in rows):
        out["recall_single"] = _recall([np.asarray(r.single_keys) for r in rows], positives, published)
    ranked = [(r, p) for r, p in with_truth if r.sequence_length and len(r.keys)]
    if ranked:  # does the sequence score tell a right top-1 from a wrong one (better than its cosine does)?
        first = [int(np.argmin(r.global_ranks)) for r, _ in ranked]
        correct = np.array([int(r.keys[i]) in p for (r, p), i in zip(ranked, first)])
        out["top1"] = {"queries": len(ranked), "accuracy": float(correct.mean())}
        for name, values in (("sequence_score", [r.sequence_scores[i] for (r, _), i in zip(ranked, first)]),
                             ("similarity", [r.similarities[i] for (r, _), i in zip(ranked, first)])):
            values = np.asarray(values, np.float64)
            out["top1"][name] = {"auc_pr": average_precision(values, correct),
                                 "auroc": auroc(values, correct) if 0 < correct.sum() < len(correct) else None,
                                 "recall_at_precision_100": recall_at_full_precision(values, correct)}
    return out


def _confidence(answered, correct: np.ndarray, vpr_map) -> dict:
    scores: dict[str, list[float]] = {}
    for r, _ in answered:
        row = {"combined": r.probabilities[0],
               **baseline_scores(r.similarities[np.argsort(r.global_ranks)], map_positions(vpr_map.frames, r.keys),
                                 r.query_uncertainty, float(r.inliers[0]) if r.reranked else None,
                                 float(r.pair_likelihoods[0]))}
        for name, value in row.items():
            scores.setdefault(name, []).append(float(value))
    model = vpr_map.uncertainty
    return {"methods": report_methods(scores, correct, model), "correct": correct.tolist(),
            "top1_accuracy": float(correct.mean()), "queries": int(len(correct)),
            "training": model.training if model is not None else None}
