"""Recall@N of the per-frame pipeline on an image-folder dataset: the references become a map (vocabulary
and PCA fitted on them, as a robot's map would be) and every query is answered alone by
Localizer.process, the node's own path. Reports the global and, with re-ranking, the re-ranked
Recall@N, per-stage latency and, with an uncertainty model, the confidence metrics."""

import dataclasses
import platform
import time
from pathlib import Path

import numpy as np
import torch

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.evaluation.confidence import evaluate_confidence
from vpr_ros.core.evaluation.datasets import ImageFolderDataset
from vpr_ros.core.evaluation.metrics import latency_summary, recall_at_n
from vpr_ros.core.evaluation.replay import stage_timings
from vpr_ros.core.evaluation.scoring import RECALL_NS
from vpr_ros.core.inputs.images import read_image
from vpr_ros.core.pipeline.localizer import Localizer
from vpr_ros.core.pipeline.results import FrameResult
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.build.map_builder import build_map
from vpr_ros.core.build.sources import load_image_file
from vpr_ros.core.matching.matchers import MATCHERS
from vpr_ros.core.build.uncertainty_training import train_uncertainty


def dataset_config(config: LocalizerConfig) -> LocalizerConfig:
    """The dataset evaluation's pipeline: at least max(RECALL_NS) hypotheses for Recall@N of the global
    order, of which the first `top_k` are re-ranked (the rest follow in global order)."""
    first = min(config.rerank_top_k or config.top_k, config.top_k)
    return dataclasses.replace(config, top_k=max(config.top_k, max(RECALL_NS)),
                               rerank_top_k=first if config.rerank else 0)


def _ranking(keys: np.ndarray, k: int) -> np.ndarray:
    """`keys` padded with -1 to length k (a map smaller than k answers fewer)."""
    return np.concatenate([keys, np.full(max(k - len(keys), 0), -1, np.int64)])[:k]


def summarize(results: list[FrameResult], published_k: int, reranked: bool) -> dict:
    """Per-query answers of Localizer.process -> the rankings, latencies and what was published.

    Returns `global` (Q x K map keys in global order), `reranked` (Q x K, best first), `latency_ms`
    per stage, `descriptors` (Q x D), `published` (per query the first `published_k` hypotheses'
    keys, similarities, inlier counts (None without re-ranking) and published probabilities), `ms_per_pair`
    and `skipped`."""
    k = max(len(r.global_keys) for r in results) if results else 0
    stages: dict[str, list[float]] = {}
    per_pair, published = [], []
    for r in results:
        for stage, ms in stage_timings(r.timings_ms).items():
            stages.setdefault(stage, []).append(ms)
        if r.rerank_pairs:
            per_pair.append((r.timings_ms["match"] + r.timings_ms["verify"]) / r.rerank_pairs)
        head = r.places[:published_k]
        inliers = np.array([p.verification.inlier_count if p.verification else 0 for p in head]) if reranked else None
        published.append((np.array([p.hypothesis.key for p in head], np.int64),
                          np.array([p.hypothesis.similarity for p in head]), inliers,
                          np.array([p.probability for p in head], np.float64)))
    return {"global": np.stack([_ranking(r.global_keys, k) for r in results]),
            "single": np.stack([_ranking(r.global_keys if r.single_keys is None else r.single_keys, k)
                                for r in results]),
            "sequence_frames": sum(bool(r.sequence_length) for r in results),
            "reranked": np.stack([_ranking(np.array([p.hypothesis.key for p in r.places], np.int64), k)
                                  for r in results]),
            "latency_ms": {stage: latency_summary(v) for stage, v in stages.items()},
            "descriptors": np.concatenate([r.descriptor for r in results]), "published": published,
            "ms_per_pair": latency_summary(per_pair), "skipped": sum(r.rerank_skipped for r in results)}


def _recalls(answers: dict, positives, config: LocalizerConfig) -> dict:
    report = {"recall": {str(n): r for n, r in recall_at_n(answers["single"], positives, RECALL_NS).items()},
              "latency_ms": answers["latency_ms"]}
    if config.sequence_length:  # retrieval ranked by sequence once the window filled; "recall" stays single-image
        report["sequence"] = {
            "length": config.sequence_length, "max_step": config.sequence_max_step,
            "frames_ranked_by_sequence": answers["sequence_frames"],
            "recall": {str(n): r for n, r in recall_at_n(answers["global"], positives, RECALL_NS).items()}}
    if config.rerank:
        report["rerank"] = {
            "matcher": config.rerank, "top_k": config.rerank_top_k, "skip_margin": config.skip_margin,
            "min_inliers": config.min_inliers,
            "recall": {str(n): r for n, r in recall_at_n(answers["reranked"], positives, RECALL_NS).items()},
            "matcher_ms_per_pair": answers["ms_per_pair"], "queries_skipped": answers["skipped"],
        }
    return report


def evaluate_dataset(root: Path, preset: str, config: LocalizerConfig, progress: bool = True,
                     uncertainty: dict | None = None, checkpoint: str | None = None) -> dict:
    """Build a map from the dataset's references, answer every query through Localizer.process, return
    the report dict. With `uncertainty` (training options, {} for the defaults), train the map's
    uncertainty model first and report the confidence metrics. `checkpoint`: the weights of a
    published-model preset."""
    dataset = ImageFolderDataset.load(root)
    frames = FrameTable.build(np.zeros(len(dataset.refs), np.int64), dataset.refs)
    start = time.perf_counter()
    overrides = {"checkpoint": checkpoint} if checkpoint else {}
    vpr_map = build_map(root.name, frames, load_image_file, preset, progress=progress,
                        local_features=MATCHERS[config.rerank].features if config.rerank else None,
                        max_keypoints=config.max_keypoints, **overrides)
    build_s = time.perf_counter() - start
    published_k = config.top_k
    config = dataset_config(config)
    localizer = Localizer(config, vpr_map)
    if uncertainty is not None:
        reranker = localizer.reranker
        vpr_map.uncertainty = train_uncertainty(vpr_map, uncertainty, [reranker] if reranker else [])
        localizer.set_map(vpr_map)
    results = [localizer.process(read_image(path), stamp_ns=i) for i, path in enumerate(dataset.queries)]
    answers = summarize(results, published_k, config.rerank is not None)
    extra = {}
    if uncertainty is not None:
        extra["confidence"] = evaluate_confidence(vpr_map.uncertainty, vpr_map, answers["descriptors"],
                                                  answers["published"], dataset.positives, config.rerank)
    return {
        "dataset": str(root), "preset": preset, "descriptor_dim": vpr_map.descriptor.dim,
        "fingerprint": vpr_map.descriptor.fingerprint(), "num_queries": len(dataset.queries),
        "map_size": len(vpr_map), "config": dict(vars(config)),
        **_recalls(answers, dataset.positives, config), **extra,
        "map_build_s": build_s, "machine": machine_info(),
    }


def machine_info() -> dict:
    return {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
            "cuda": torch.cuda.is_available()}
