"""How well a confidence tells a correct top-1 from a wrong one: the published probability against the
baselines (confidence.py), on queries with ground truth.

Every method scores the same queries' published best hypothesis (after re-ranking when it ran).
Each baseline's probability comes from its own one-feature calibrator fitted with the map's model, so
every method also gets an expected calibration error; AUC-PR, AUROC and precision at recall depend
only on the ordering and not on those calibrators.
"""

import numpy as np

from vpr_ros.core.evaluation.metrics import confidence_report
from vpr_ros.core.uncertainty.features import baseline_scores, map_positions
from vpr_ros.core.uncertainty.model import UncertaintyModel


def evaluate_confidence(model: UncertaintyModel, vpr_map, descriptors: np.ndarray, published: list,
                        positives: list[set[int]], matcher: str | None = None) -> dict:
    """descriptors: Q x D query descriptors; published: per query (ids, similarities, inliers or None,
    probabilities) of its hypotheses in published order, as the pipeline published them; positives: per
    query, the map keys that are its place.

    Returns {"methods": {name: confidence_report + "scores", "probabilities"}, "correct": [...],
    "top1_accuracy", "queries"} over the queries that have a hypothesis.
    """
    if len(descriptors) != len(published) or len(published) != len(positives):
        raise ValueError(f"{len(descriptors)} descriptors, {len(published)} answers, {len(positives)} ground truths")
    scores: dict[str, list[float]] = {}
    correct = []
    for q, (ids, sims, inliers, probabilities) in enumerate(published):
        ids = np.asarray(ids)
        if len(ids) == 0:
            continue
        correct.append(int(ids[0]) in positives[q])
        query_u, map_u, pair = model.describe(descriptors[q], vpr_map.descriptors[ids])
        combined = float(probabilities[0])
        row = {"combined": combined, **baseline_scores(sims, map_positions(vpr_map.frames, ids), query_u,
                                                       None if inliers is None else float(inliers[0]), pair[0])}
        for name, value in row.items():
            scores.setdefault(name, []).append(float(value))
    if not correct:
        raise ValueError("no query has a hypothesis to evaluate")
    return {"methods": report_methods(scores, np.asarray(correct), model), "correct": list(correct),
            "top1_accuracy": float(np.mean(correct)), "queries": int(len(correct)), "matcher": matcher,
            "training": model.training}


def report_methods(scores: dict[str, list[float]], correct: np.ndarray, model: UncertaintyModel | None) -> dict:
    """Per method (name -> one score per query, higher = more likely correct) the confidence report;
    "combined" holds probabilities already, a baseline gets its probability from the map's calibrator."""
    methods = {}
    for name, values in scores.items():
        values = np.asarray(values, np.float64)
        if not np.isfinite(values).all():
            methods[name] = {"skipped": "no calibrator for this ranking" if name == "combined" else "not finite"}
            continue
        if name == "combined":
            probability = values
        else:
            calibrator = model.calibrators.get(f"baseline:{name}") if model is not None else None
            probability = calibrator.predict(values[:, None]) if calibrator is not None else None
        report = confidence_report(values, correct, probability)
        report["scores"] = values.tolist()
        report["probabilities"] = None if probability is None else probability.tolist()
        methods[name] = report
    return methods
