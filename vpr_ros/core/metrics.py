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
    """p50 / p95 / max / mean of latency samples in milliseconds."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan"), "mean": float("nan"), "count": 0}
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
            "max": float(values.max()), "mean": float(values.mean()), "count": int(values.size)}
