"""Train a map's uncertainty model from the map itself: cross-view BayesCap pairs, then calibration.

1. **Positive pairs** (two views of one place): map frames whose poses lie within
   `positive_distance_m` and `positive_heading_deg` of each other. A map without poses falls back to
   its route order: frames at most `positive_frames` keys apart are the same place (right for a map
   built from one traversal in order, as from a bag or an image sequence; wrong for a shuffled folder,
   whose uncertainty is then meaningless). The fallback is recorded in uncertainty.json.
2. **Split**: a seeded `calibration_fraction` of the frames is held out from the head.
3. **Synthetic views** (when the map's images can still be read, sources.json): every frame is seen
   again under a seeded random change of viewpoint (shift, rotation, scale), light (exposure, gamma,
   low light, haze, colour cast), blur, noise and sometimes an occluder, described afresh. The
   change's strength is drawn per view between 0.3 and 1.7 times `view_strength`, so the views run
   from near-copies to revisits that global retrieval gets wrong.
4. **BayesCap head** (bayescap.py, in the descriptors' leading principal directions) on the training
   frames' pairs: map frame to map frame, and each view to every map frame of its place, both ways.
   That is `train_views` views per frame on top of the map's own pairs: thousands of pairs where the
   map alone gives hundreds. Pairs that touch a held-out frame measure its validation loss.
5. **Calibration queries**: each held-out frame becomes `views` queries. A query never sees its own
   map frame, so its true matches are its neighbours, as for a robot's revisit. Without the images
   the held-out frame's stored descriptor is the query (one view): such pairs are easier than real
   revisits and the calibration is optimistic (recorded as `calibration_views: "stored descriptors"`).
6. **Calibrators** (calibration.py, monotone in the evidence) on the top-K hypotheses of every
   calibration query: `global` from the global features, `rerank:<matcher>` with inliers for each
   reranker given (the map must store local features), and a one-feature calibrator per baseline for
   evaluation (on the global top-1; the inlier baseline with the first reranker). For each, the
   training record keeps the smallest probability above which no calibration hypothesis was wrong.
7. **Sequence ranking** (`fit_session_calibrators`, optional): hypotheses ranked by sequence carry the
   sequence score, which synthetic views of the map's own images cannot calibrate. Those views never
   change the condition, and sequences are right on them almost always. Their calibrators
   (`sequence:global`, `sequence:rerank:<matcher>`: the features above plus `sequence_score`) are
   fitted on a replay of another session of the same place with poses, labelled by distance.
"""

import time

import cv2
import numpy as np
import torch

from vpr_ros.core import LOGGER
from vpr_ros.core.uncertainty.bayescap import DEFAULT_CONF as HEAD_CONF, HEAD_KEYS, fit_head
from vpr_ros.core.uncertainty.calibration import Calibrator
from vpr_ros.core.uncertainty.features import (ALL_FEATURES, BASELINES, GLOBAL_FEATURES, RERANK_FEATURES, SEQUENCE_FEATURE,
                                               baseline_scores, hypothesis_features, map_positions, select,
                                               verification_features)
from vpr_ros.core.inputs.images import batch_to_tensor, to_rgb8
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.build.sources import SourceLoader
from vpr_ros.core.matching.reranker import Reranker
from vpr_ros.core.uncertainty.model import UncertaintyModel, others_key, ranking_key, rerank_key

DEFAULT_TRAINING = {
    "positive_distance_m": 5.0,  # poses this close ...
    "positive_heading_deg": 45.0,  # ... and this aligned show the same place
    "positive_frames": 2,  # maps without poses: frames this many keys apart show the same place
    "calibration_fraction": 0.3,  # frames held out from the head to fit the calibrators
    "max_calibration_frames": 300,
    "views": 3,  # calibration queries per held-out frame (needs the map's images)
    "train_views": 2,  # views per training frame that train the head (needs the map's images)
    "max_view_frames": 300,  # at most this many training frames get views (seeded subset)
    "view_strength": 1.5,  # mean scale of the synthetic views' change (see the module docstring)
    "top_k": 5,  # hypotheses per calibration query (as the node publishes)
    "calibrator": "logistic",  # or "isotonic"
    "epochs": 40,
    "max_pairs": 50000,  # training pairs are subsampled beyond this
    "seed": 0,
}
MIN_PAIRS = 8  # fewer training pairs than this is no training set


def positive_pairs(frames: FrameTable, distance_m: float, heading_deg: float, window: int,
                   max_pairs: int | None = None, seed: int = 0) -> tuple[np.ndarray, str]:
    """P x 2 key pairs (i < j) that show the same place, and how they were found ("poses"/"route order")."""
    n = len(frames)
    if frames.has_pose.any():
        posed = np.flatnonzero(frames.has_pose)
        xyz, quat = frames.pose[posed, :3], frames.pose[posed, 3:]
        cos_half = np.cos(np.radians(heading_deg) / 2)
        found = []
        for start in range(0, len(posed), 1024):  # chunked: N x N would not fit for large maps
            block = slice(start, start + 1024)
            near = np.linalg.norm(xyz[block, None] - xyz[None], axis=2) <= distance_m
            aligned = np.abs(quat[block] @ quat.T) >= cos_half
            a, b = np.nonzero(near & aligned)
            a += start
            keep = a < b
            found.append(np.stack([posed[a[keep]], posed[b[keep]]], axis=1))
        pairs, how = np.concatenate(found), "poses"
        if not frames.has_pose.all():
            LOGGER.warning("%d of %d map frames have no pose and take no part in uncertainty training",
                           n - len(posed), n)
    else:
        i, j = np.triu_indices(n, k=1)
        keep = j - i <= window
        pairs, how = np.stack([i[keep], j[keep]], axis=1), "route order"
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = pairs[np.sort(np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False))]
    return pairs.astype(np.int64), how


def same_place(frames: FrameTable, query_key: int, keys: np.ndarray, how: str, distance_m: float,
               heading_deg: float, window: int) -> np.ndarray:
    """Which `keys` show the place of map frame `query_key`, by the criterion the pairs used."""
    keys = np.asarray(keys, np.int64)
    if how == "route order":
        return np.abs(keys - query_key) <= window
    if not frames.has_pose[query_key]:
        return np.zeros(len(keys), bool)
    near = np.linalg.norm(frames.pose[keys, :3] - frames.pose[query_key, :3], axis=1) <= distance_m
    aligned = np.abs(frames.pose[keys, 3:] @ frames.pose[query_key, 3:]) >= np.cos(np.radians(heading_deg) / 2)
    return near & aligned & frames.has_pose[keys]


def synthetic_view(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Another view of the same place: a perspective change (a step sideways or a turn), light (exposure,
    gamma; sometimes low light, haze or a colour cast), blur, noise and sometimes an occluder. `strength`
    scales the geometric change and the light's departure from the original."""
    rgb = to_rgb8(image)
    h, w = rgb.shape[:2]
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = rng.uniform(-0.08, 0.08, (4, 2)) * (w, h)  # perspective
    shift = (rng.uniform(-0.2, 0.2) * w, rng.uniform(-0.05, 0.05) * h)  # turn / step
    zoom = rng.uniform(0.85, 1.2)  # forward / backward
    centre = np.float32([w / 2, h / 2])
    moved = (corners - centre) * (1 + (zoom - 1) * strength) + centre + strength * (jitter + shift)
    matrix = cv2.getPerspectiveTransform(corners, moved.astype(np.float32))
    out = cv2.warpPerspective(rgb, matrix, (w, h), borderMode=cv2.BORDER_REFLECT).astype(np.float32) / 255
    out = np.clip(out * rng.uniform(0.5, 1.5) + rng.uniform(-0.1, 0.1), 0, 1) ** rng.uniform(0.6, 1.6)
    light = min(strength / 2.5, 1.0)  # how far the light may move from the map's
    if rng.random() < 0.3 * light + 0.1:  # dusk or night: dark, flat and noisier
        out = out * rng.uniform(1.0 - 0.8 * light, 1.0)
    if rng.random() < 0.2 * light + 0.05:  # haze or fog: contrast lost towards a grey
        veil = rng.uniform(0.0, 0.6 * light)
        out = out * (1 - veil) + veil * rng.uniform(0.5, 0.9)
    if rng.random() < 0.3:  # white balance
        out = out * rng.uniform(1 - 0.15 * light, 1 + 0.15 * light, 3)
    if rng.random() < 0.5:
        sigma = rng.uniform(0.5, 1.5) * w / 640
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    out = out * 255 + rng.normal(0, rng.uniform(0, 6), out.shape)
    if rng.random() < 0.3:
        oh, ow = int(h * rng.uniform(0.2, 0.45)), int(w * rng.uniform(0.15, 0.35))
        y0, x0 = rng.integers(0, h - oh + 1), rng.integers(0, w - ow + 1)
        out[y0:y0 + oh, x0:x0 + ow] = rng.uniform(0, 255, 3)
    return np.clip(out, 0, 255).astype(np.uint8)


def train_uncertainty(vpr_map, options: dict | None = None, rerankers: list[Reranker] = (),
                      load=None, head_conf: dict | None = None, progress=None,
                      rows_out: dict | None = None) -> UncertaintyModel:
    """Train the BayesCap head and fit the calibrators for `vpr_map` (a map_store.VPRMap).

    load: reads a map source into an image (default: SourceLoader); pass False to use stored
    descriptors only. rows_out: receives each calibrator's (features, labels) rows (for benchmarks that
    fit other feature sets on the same queries). Raises ValueError when the map cannot yield a training set.
    """
    opts = {**DEFAULT_TRAINING, **(options or {})}
    unknown = set(opts) - set(DEFAULT_TRAINING)
    if unknown:
        raise ValueError(f"unknown uncertainty training option(s) {sorted(unknown)}; known: {sorted(DEFAULT_TRAINING)}")
    head_conf = {**HEAD_CONF, **(head_conf or {})}
    start = time.perf_counter()
    descriptors, frames, n = vpr_map.descriptors, vpr_map.frames, len(vpr_map)
    if not np.isfinite(descriptors).all():
        raise ValueError("the map's descriptors contain NaN or infinite values")
    if n < 10:
        raise ValueError(f"the map has {n} frames; uncertainty training needs at least 10")
    if np.ptp(descriptors, axis=0).max() < 1e-6:
        raise ValueError("all map descriptors are identical: there is nothing to learn uncertainty from")
    for reranker in rerankers:
        reranker.check_map(vpr_map.local_conf)
    rng = np.random.default_rng(opts["seed"])
    criterion = (opts["positive_distance_m"], opts["positive_heading_deg"], opts["positive_frames"])
    pairs, how = positive_pairs(frames, *criterion, max_pairs=opts["max_pairs"], seed=opts["seed"])
    n_cal = min(max(int(round(n * opts["calibration_fraction"])), 1), opts["max_calibration_frames"])
    held_out = np.sort(rng.choice(n, n_cal, replace=False))
    is_held = np.zeros(n, bool)
    is_held[held_out] = True
    train_pairs = pairs[~is_held[pairs].any(axis=1)]
    val_pairs = pairs[is_held[pairs].any(axis=1)]
    if len(train_pairs) < MIN_PAIRS:
        raise ValueError(f"only {len(train_pairs)} positive pairs ({how}) among the map's training frames; need "
                         f"{MIN_PAIRS}. Map more of each place, or widen the positive thresholds")
    training = np.flatnonzero(~is_held)
    viewed = np.sort(rng.choice(training, min(len(training), opts["max_view_frames"]), replace=False))
    views = _synthetic_views(vpr_map, viewed, held_out, opts, rng, load, rerankers)
    table, view_pairs = descriptors, np.zeros((0, 2), np.int64)
    if views is not None:  # each training view is paired with every training map frame of its place
        table = np.concatenate([descriptors, views["train_descriptors"]])
        found = [np.stack([np.full(len(keys), n + v), keys], axis=1) for v, key in enumerate(views["train_frame"])
                 if len(keys := training[same_place(frames, int(key), training, how, *criterion)])]
        view_pairs = np.concatenate(found) if found else view_pairs
        if len(view_pairs) > opts["max_pairs"]:
            view_pairs = view_pairs[np.sort(rng.choice(len(view_pairs), opts["max_pairs"], replace=False))]
    LOGGER.info("uncertainty: %d positive pairs by %s (%d to train, %d to validate), %d view pairs, %d frames held "
                "out", len(pairs), how, len(train_pairs), len(val_pairs), len(view_pairs), n_cal)
    head, stats = fit_head(table, np.concatenate([train_pairs, view_pairs]), head_conf, epochs=opts["epochs"],
                           seed=opts["seed"], val_pairs=val_pairs, log=progress)
    model = UncertaintyModel(head, {**{k: head_conf[k] for k in HEAD_KEYS}, "rank": head.rank},
                             vpr_map.descriptor.fingerprint())
    queries = views["calibration"] if views is not None else _stored_queries(vpr_map, held_out, rerankers)
    rows = _calibration_rows(vpr_map, model, queries, how, criterion, opts["top_k"], rerankers)
    if rows_out is not None:
        rows_out.update(rows)
    for name, (x, y) in rows.items():
        try:
            names = _feature_names(name)
            if name.startswith("baseline:"):
                model.calibrators[name] = Calibrator(names, opts["calibrator"], increasing=names).fit(x, y)
                continue
            _fit_best_and_others(model, name, x, y, names, opts["calibrator"])
        except ValueError as exc:
            if name.startswith("baseline:"):
                LOGGER.warning("uncertainty: no %s calibrator: %s", name, exc)
                continue
            raise ValueError(f"cannot calibrate ({name}): {exc}. The held-out queries' hypotheses are all "
                             "right or all wrong; use a larger map or other positive thresholds") from exc
    top1_y = rows["baseline:l2"][1]
    model.training = {
        "positives": how, "positive_distance_m": criterion[0], "positive_heading_deg": criterion[1],
        "positive_frames": criterion[2], "pairs": int(len(pairs)), "train_pairs": int(len(train_pairs)),
        "view_pairs": int(len(view_pairs)), "val_pairs": int(len(val_pairs)), "held_out_frames": int(n_cal),
        "rank": head.rank, **{k: opts[k] for k in (
            "views", "train_views", "view_strength", "top_k", "calibrator", "epochs", "seed")},
        "calibration_views": queries["kind"], "calibration_queries": int(len(queries["descriptors"])),
        "calibration_top1_accuracy": float(np.mean(top1_y)),
        "calibration_top1_similarity": float(np.mean(queries["top1_similarity"])),
        "train_loss": stats["train_loss"][-1], "val_loss": stats["val_loss"][-1] if stats["val_loss"] else None,
        "map_uncertainty_median": float(np.median(model.uncertainty(descriptors))),
        "seconds": time.perf_counter() - start,
    }
    return model


def _fit_best_and_others(model: UncertaintyModel, name: str, x: np.ndarray, y: np.ndarray, names: list[str],
                         kind: str) -> None:
    """Calibrator `name` on the best hypotheses' rows (x: hypothesis_features), `name:others` on the rest
    (skipped, with a warning, when those are all right or all wrong: the best one's calibrator then serves)."""
    best = x[:, ALL_FEATURES.index("first")] == 1
    if y[best].all() or not y[best].any():  # a small or easy map: one calibrator for every hypothesis
        LOGGER.warning("uncertainty: %s: the calibration queries' best hypotheses are all %s; one calibrator for every "
                       "hypothesis", name, "right" if y[best].all() else "wrong")
        model.calibrators[name] = Calibrator(names, kind, increasing=names).fit(select(x, names), y)
        return
    model.calibrators[name] = Calibrator(names, kind, increasing=names).fit(select(x[best], names), y[best])
    try:
        model.calibrators[others_key(name)] = Calibrator(names, kind, increasing=names).fit(
            select(x[~best], names), y[~best])
    except ValueError as exc:
        LOGGER.warning("uncertainty: %s: one calibrator for every hypothesis (%s)", name, exc)


def _feature_names(calibrator: str) -> list[str]:
    if calibrator == "global":
        return GLOBAL_FEATURES
    if calibrator.startswith("rerank:"):
        return RERANK_FEATURES
    return [calibrator.split(":", 1)[1]]


def _stored_queries(vpr_map, held_out: np.ndarray, rerankers) -> dict:
    """Calibration queries without the map's images: the held-out frames' stored descriptors and features."""
    local = {r.matcher.features: [vpr_map.local[int(i)] for i in held_out] for r in rerankers}
    return {"kind": "stored descriptors", "frame": held_out, "descriptors": vpr_map.descriptors[held_out],
            "local": local}


def _synthetic_views(vpr_map, viewed: np.ndarray, held_out: np.ndarray, opts: dict, rng, load, rerankers
                     ) -> dict | None:
    """Views of the `viewed` training frames (train_views each, for the head) and of the held-out frames
    (views each, the calibration queries, with local features for the rerankers); None when the map's
    images cannot be read."""
    sources = vpr_map.frames.sources
    loader = SourceLoader() if load is None else load
    if not loader:
        return None
    try:
        images = {int(i): loader(sources[i]) for i in np.concatenate([held_out, viewed])}
    except (FileNotFoundError, ValueError) as exc:
        LOGGER.warning("uncertainty: the map's images cannot be read (%s); the head learns from the map's "
                       "descriptors alone and the calibration uses them, which is optimistic", exc)
        return None
    low, high = 0.3 * opts["view_strength"], 1.7 * opts["view_strength"]
    made, frame = [], []
    for keys, count in ((viewed, opts["train_views"]), (held_out, opts["views"])):
        for key in keys:
            for _ in range(count):
                made.append(synthetic_view(images[int(key)], rng, rng.uniform(low, high)))
                frame.append(key)
    descriptor = vpr_map.descriptor
    with torch.inference_mode():
        desc = np.concatenate([descriptor.describe(batch_to_tensor(made[s:s + 8], descriptor.input_size))
                               for s in range(0, len(made), 8)])
    split = len(viewed) * opts["train_views"]
    calibration = made[split:]
    local = {}
    for reranker in rerankers:  # matchers on the same features share one extraction
        if reranker.matcher.features not in local:
            extractor = reranker.extractor_for(vpr_map.local_conf)
            local[reranker.matcher.features] = [extractor.extract([v])[0] for v in calibration]
    return {"train_descriptors": desc[:split], "train_frame": np.asarray(frame[:split], np.int64),
            "calibration": {"kind": "synthetic views of the map's images", "frame": np.asarray(frame[split:]),
                            "descriptors": desc[split:], "local": local}}


def _calibration_rows(vpr_map, model: UncertaintyModel, queries: dict, how, criterion, top_k,
                      rerankers) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Feature rows and labels for each calibrator, from every calibration query's top-K."""
    frames, descriptors = vpr_map.frames, vpr_map.descriptors
    sims_all = queries["descriptors"] @ descriptors.T
    rows: dict[str, tuple[list, list]] = {"global": ([], [])}
    for reranker in rerankers:
        rows[rerank_key(reranker.matcher.name)] = ([], [])
    rows.update({f"baseline:{b}": ([], []) for b in BASELINES if b != "inliers" or rerankers})
    queries["top1_similarity"] = []
    for q, key in enumerate(queries["frame"]):
        sims = sims_all[q].copy()
        sims[key] = -np.inf  # a revisit never sees its own map frame
        ids = np.argsort(-sims, kind="stable")[:top_k]
        labels = same_place(frames, int(key), ids, how, *criterion)
        query_u, map_u, pair = model.describe(queries["descriptors"][q], descriptors[ids])
        features = hypothesis_features(sims[ids], query_u, map_u, pair)
        rows["global"][0].append(features)
        rows["global"][1].append(labels)
        queries["top1_similarity"].append(sims[ids[0]])
        inliers_top1 = None
        for reranker in rerankers:
            ranked = reranker.rerank(queries["local"][reranker.matcher.features][q], ids, sims[ids], vpr_map.local)
            rids = ranked.ids
            inliers = np.array([c.verification.inlier_count if c.verification else 0 for c in ranked.candidates])
            rsims = np.array([c.global_similarity for c in ranked.candidates])
            name = rerank_key(reranker.matcher.name)
            order = [list(ids).index(k) for k in rids]
            geometry = verification_features([c.verification for c in ranked.candidates])
            rows[name][0].append(hypothesis_features(rsims, query_u, map_u[order], pair[order], geometry))
            rows[name][1].append(same_place(frames, int(key), rids, how, *criterion))
            if inliers_top1 is None:  # the inlier baseline: the first matcher's count, in global order
                inliers_top1 = float(inliers[list(rids).index(ids[0])])
        scores = baseline_scores(sims[ids], map_positions(frames, ids), query_u, inliers_top1, pair[0])
        for name, value in scores.items():
            rows[f"baseline:{name}"][0].append(np.array([[value]]))
            rows[f"baseline:{name}"][1].append(labels[:1])
    return {name: (np.concatenate(x), np.concatenate(y)) for name, (x, y) in rows.items()}


def session_rows(records, positives: list[set[int]], reranked: bool) -> tuple[np.ndarray, np.ndarray]:
    """Every hypothesis of a replayed session (QueryRecords) as calibration rows (hypothesis_features) and
    labels (its map frame shows the frame's place); frames without a place in the map are left out."""
    if len(records) != len(positives):
        raise ValueError(f"{len(records)} replayed frames for {len(positives)} ground-truth sets")
    x, y = [], []
    for record, places in zip(records, positives):
        if len(record.keys) and places:
            x.append(record.features(reranked=reranked))
            y.append(np.array([int(key) in places for key in record.keys]))
    if not x:
        raise ValueError("no frame of the session has its place in the map")
    return np.concatenate(x), np.concatenate(y)


def fit_single_image_on_session(model: UncertaintyModel, view_rows: dict, replays: dict,
                                positives: list[set[int]], kind: str = "logistic", session: str = "") -> dict:
    """Refit the single-image calibrators (`global`, `rerank:<matcher>` and their `:others`) on the synthetic
    views' rows (view_rows: train_uncertainty's rows_out) together with a real session replayed against the map
    without sequence matching (replays: matcher or None -> its QueryRecords). Real revisits under another light
    or from another route carry the shift that views of the map's own images cannot; returns the record."""
    fitted = {}
    for matcher, records in replays.items():
        name = ranking_key(matcher)
        names = RERANK_FEATURES if matcher else GLOBAL_FEATURES
        x, y = session_rows(records, positives, matcher is not None)
        keep = np.isfinite(select(x, names)).all(axis=1)
        x, y = x[keep], y[keep]
        if name in view_rows:
            x, y = np.concatenate([view_rows[name][0], x]), np.concatenate([view_rows[name][1], y])
        _fit_best_and_others(model, name, x, y, names, kind)
        fitted[name] = {"session_hypotheses": int(keep.sum()), "rows": int(len(y))}
    model.training["session_calibration"] = {"session": session, "calibrators": fitted}
    return model.training["session_calibration"]


def fit_session_calibrators(model: UncertaintyModel, replays: dict, positives: list[set[int]], length: int,
                            similarity: str, kind: str = "logistic", session: str = "") -> dict:
    """Fit the sequence-ranking calibrators of `model` from replays of another session against its map.

    replays: matcher name (None: global ranking) -> the session's QueryRecords (evaluation/replay.py) with
    sequence matching on (window `length`, `similarity` rows); positives[i]: the map keys of query i's place.
    Each hypothesis of a frame ranked by sequence is one row (the calibrator's features plus its sequence
    score), labelled by whether it is the query's place. Returns what was fitted, for the model's record."""
    fitted = {}
    for matcher, records in replays.items():
        if len(records) != len(positives):
            raise ValueError(f"{len(records)} replayed frames for {len(positives)} ground-truth sets")
        ranked = [(r, p) for r, p in zip(records, positives) if r.sequence_length and len(r.keys) and p]
        name = ranking_key(matcher, sequence=True)
        if not ranked:
            raise ValueError(f"{name}: no frame of the session was ranked by sequence (is the session longer than "
                             f"{length} frames, and the map in traversal order?)")
        x, y = session_rows(*zip(*ranked), matcher is not None)
        features = (RERANK_FEATURES if matcher else GLOBAL_FEATURES) + [SEQUENCE_FEATURE]
        keep = np.isfinite(select(x, features)).all(axis=1)
        try:
            _fit_best_and_others(model, name, x[keep], y[keep], features, kind)
        except ValueError as exc:
            raise ValueError(f"cannot calibrate {name} on the session: {exc}") from exc
        fitted[name] = {"hypotheses": int(keep.sum()), "right": int(y[keep].sum())}
    model.training["sequence"] = {"length": int(length), "similarity": similarity, "session": session,
                                  "calibrators": fitted}
    return model.training["sequence"]
