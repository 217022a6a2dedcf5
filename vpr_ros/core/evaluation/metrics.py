"""Retrieval metrics and latency summaries."""

from collections.abc import Sequence

import numpy as np


def recall_at_n(ranked: np.ndarray, positives: Sequence[set[int]], ns: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Fraction of queries with a true match among their first n candidates.

    ranked: Q x K candidate indices, best first (-1 pads missing candidates).
    positives: per query, the indices that count as the same place.
    """
    if len(ranked) != len(positives):
        raise ValueError(f"{len(ranked)} ranked lists for {len(positives)} queries")
    if len(ranked) == 0:
        raise ValueError("no queries to evaluate")
    first_hit = np.full(len(ranked), np.inf)
    for q, (row, pos) in enumerate(zip(ranked, positives)):
        hits = [rank for rank, idx in enumerate(row) if int(idx) in pos]
        if hits:
            first_hit[q] = hits[0]
    return {n: float(np.mean(first_hit < n)) for n in ns}


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / max / mean / count of samples: latencies in milliseconds, pose errors, ..."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan"), "mean": float("nan"), "count": 0}
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
            "max": float(values.max()), "mean": float(values.mean()), "count": int(values.size)}


# ---- telling a correct top-1 from a wrong one ---------------------------------------------------
# `confidence`: higher means "more likely correct"; `correct`: booleans. Ties are broken pessimistically
# nowhere: tied scores form one threshold, as a deployed threshold would treat them.


def _thresholds(confidence: np.ndarray, correct: np.ndarray):
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError(f"confidence {confidence.shape} and correct {correct.shape} must be equal 1-D arrays")
    if not np.isfinite(confidence).all():
        raise ValueError("confidence scores contain NaN or infinite values")
    order = np.argsort(-confidence, kind="stable")
    score, label = confidence[order], correct[order]
    last_of_tie = np.r_[score[1:] != score[:-1], True]  # accept everything down to each distinct score
    tp = np.cumsum(label)[last_of_tie]
    fp = np.cumsum(~label)[last_of_tie]
    return tp, fp, int(label.sum()), int((~label).sum())


def precision_recall(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of accepting every top-1 with confidence >= t, for each distinct t."""
    tp, fp, pos, _ = _thresholds(confidence, correct)
    return tp / np.maximum(tp + fp, 1), tp / max(pos, 1)


def average_precision(confidence, correct) -> float:
    """Area under the precision-recall curve (step-wise, as average precision); NaN without positives."""
    precision, recall = precision_recall(confidence, correct)
    if not np.asarray(correct, bool).any():
        return float("nan")
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auroc(confidence, correct) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    tp, fp, pos, neg = _thresholds(confidence, correct)
    if pos == 0 or neg == 0:
        return float("nan")
    tpr, fpr = np.r_[0.0, tp / pos], np.r_[0.0, fp / neg]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def recall_at_full_precision(confidence, correct) -> float:
    """Highest recall among thresholds that accept no wrong top-1 (0 when none does)."""
    precision, recall = precision_recall(confidence, correct)
    perfect = recall[precision >= 1.0]
    return float(perfect.max()) if len(perfect) else 0.0


def precision_at_recall(confidence, correct, recall_level: float) -> float:
    """Best precision among thresholds whose recall reaches `recall_level` (1.0: every correct top-1 kept)."""
    precision, recall = precision_recall(confidence, correct)
    reach = recall >= recall_level - 1e-12
    return float(precision[reach].max()) if reach.any() else float("nan")


def reliability(probability, correct, bins: int = 10) -> dict:
    """Reliability diagram data and expected calibration error over `bins` equal-width bins.

    Returns ece (sum over bins of |accuracy - mean probability| weighted by the bin's share), and per
    bin: lower edge, count, mean probability and accuracy (NaN for an empty bin).
    """
    probability = np.asarray(probability, np.float64)
    correct = np.asarray(correct, bool)
    if probability.shape != correct.shape or probability.size == 0:
        raise ValueError(f"probability {probability.shape} and correct {correct.shape} must be equal, non-empty")
    if not np.isfinite(probability).all() or probability.min() < 0 or probability.max() > 1:
        raise ValueError("probabilities must be finite and in [0, 1]")
    which = np.minimum((probability * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    mean_p = np.bincount(which, probability, bins) / np.maximum(count, 1)
    accuracy = np.bincount(which, correct.astype(np.float64), bins) / np.maximum(count, 1)
    ece = float(np.sum(count / probability.size * np.abs(accuracy - mean_p)))
    empty = count == 0
    return {"ece": ece, "bin_lower": (np.arange(bins) / bins).tolist(), "count": count.tolist(),
            "mean_probability": np.where(empty, np.nan, mean_p).tolist(),
            "accuracy": np.where(empty, np.nan, accuracy).tolist()}


def confidence_report(confidence, correct, probability=None) -> dict:
    """AUC-PR, AUROC, recall at 100 % precision (the loop-closure measure), precision at 100 % and 90 %
    recall, and with probabilities ECE and reliability."""
    out = {"auc_pr": average_precision(confidence, correct), "auroc": auroc(confidence, correct),
           "recall_at_precision_100": recall_at_full_precision(confidence, correct),
           "precision_at_recall_100": precision_at_recall(confidence, correct, 1.0),
           "precision_at_recall_90": precision_at_recall(confidence, correct, 0.9)}
    if probability is not None:
        rel = reliability(probability, correct)
        out["ece"] = rel.pop("ece")
        out["reliability"] = rel
    return out
