"""Sequence matching (core/retrieval/sequence.py): the sliding-window alignment on synthetic maps with known
answers, the order check, and the Localizer ranking real Corridor frames by sequence in both modes."""

import logging

import numpy as np
import pytest

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.pipeline.localizer import Localizer
from vpr_ros.core.retrieval.sequence import (CentredSimilarity, PlainSimilarity, SequenceMatcher, map_segments,
                                        stamp_segments)

SECOND = 10**9


def _route_map(n: int = 600, dim: int = 64, seed: int = 0) -> np.ndarray:
    """An ordered map: descriptors drift along the route, so neighbours are alike and far keys are not."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(n, dim)), axis=0) * 0.4 + rng.normal(size=(n, dim)) * 2.0
    return (walk / np.linalg.norm(walk, axis=1, keepdims=True)).astype(np.float32)


def _noisy(m: np.ndarray, key: int, noise: float, rng) -> np.ndarray:
    q = m[key] + rng.normal(size=m.shape[1]).astype(np.float32) * noise
    return q / np.linalg.norm(q)


def test_sequence_finds_the_route_where_single_images_fail():
    m = _route_map()
    rng = np.random.default_rng(1)
    matcher = SequenceMatcher(10, max_step=3)
    matcher.set_map(np.zeros(len(m), np.int64))
    steps = rng.choice([0, 1, 1, 2, 2, 3], size=150)  # a varying speed with stops
    truth = 100 + np.cumsum(steps)
    single = sequence = 0
    for t, key in enumerate(truth):
        s = m @ _noisy(m, key, 0.17, rng)
        score = matcher.update(s, t * SECOND // 4)
        assert matcher.full == (t >= 9) and matcher.count == min(t + 1, 10)
        if matcher.full:
            sequence += abs(int(np.argmax(score)) - key) <= 2
            single += abs(int(np.argmax(s)) - key) <= 2
    assert sequence >= 0.9 * 141 and sequence > single + 20, (sequence, single)


def test_the_window_is_exact_and_gaps_widen_the_steps():
    """A map whose z-scores are known: the score is the mean over exactly the last L frames of the path."""
    n, length = 50, 4
    matcher = SequenceMatcher(length, max_step=1)
    matcher.set_map(np.zeros(n, np.int64))
    rows = []
    for t in range(8):  # the query stands on key 10 + t; its row peaks there
        row = np.zeros(n, np.float32)
        row[10 + t] = 1.0
        rows.append(row)
        score = matcher.update(row, t * SECOND)
    expected_z = (1.0 - 1 / n) / np.sqrt(1 / n * (1 - 1 / n))  # z of the single peak in a 0/1 row
    assert score.argmax() == 17 and score[17] == pytest.approx(expected_z, rel=1e-4)  # mean of 4 peaks
    # the robot skips 3 frames (gated): with max_step 1 the alignment may still jump 3 keys ahead
    row = np.zeros(n, np.float32)
    row[21] = 1.0
    score = matcher.update(row, 11 * SECOND)
    assert score.argmax() == 21 and score[21] == pytest.approx(expected_z, rel=1e-4)
    # going back in time restarts the window
    matcher.update(row, 5 * SECOND)
    assert matcher.count == 1 and not matcher.full
    # so does a forward jump of more than RESET_GAP_FACTOR typical intervals (a bag resumed, a robot carried)
    for t in range(6, 10):
        matcher.update(row, t * SECOND)
    assert matcher.count == length and matcher.full
    matcher.update(row, 9 * SECOND + 49 * SECOND)  # 49 intervals: a gap, not a restart
    assert matcher.count == length and matcher.full
    matcher.update(row, 58 * SECOND + 60 * SECOND)  # 60 intervals on: restarted
    assert matcher.count == 1 and not matcher.full


def test_keys_that_must_not_match_and_a_growing_map():
    m = _route_map(200)
    matcher = SequenceMatcher(5, max_step=2)
    matcher.set_map(np.zeros(150, np.int64))
    rng = np.random.default_rng(2)
    for t in range(12):
        score = matcher.update(m[:150] @ _noisy(m, 40 + t, 0.1, rng), t * SECOND, searchable=140)
        assert np.isneginf(score[140:]).all() and np.isfinite(score[:140]).all()
    matcher.grow(np.zeros(200, np.int64))  # slam: 50 keyframes joined
    score = matcher.update(m @ _noisy(m, 52, 0.1, rng), 12 * SECOND, searchable=190)
    assert score.shape == (200,) and abs(int(np.argmax(score)) - 52) <= 2 and matcher.full
    with pytest.raises(ValueError, match="similarity row of 150"):
        matcher.update(np.zeros(150, np.float32), 13 * SECOND)
    with pytest.raises(ValueError, match=">= 2 frames"):
        SequenceMatcher(1)


def test_segments_and_the_order_check():
    m = _route_map(300)
    stamps = np.arange(300) * SECOND // 4
    stamps[150:] += 3600 * SECOND  # a second session an hour later
    starts, reason = map_segments(m, stamps)
    assert reason == "" and starts[149] == 0 and starts[150] == 150 and starts[-1] == 150
    assert (stamp_segments(stamps) == starts).all()
    shuffled = m[np.random.default_rng(0).permutation(len(m))]
    starts, reason = map_segments(shuffled, stamps)
    assert starts is None and "no traversal order" in reason
    assert map_segments(m[:2], stamps[:2])[0] is None
    # within a segment an alignment never steps across its start
    matcher = SequenceMatcher(3, max_step=3)
    matcher.set_map(stamp_segments(stamps))
    candidates = matcher._candidates(1)
    assert candidates[:, 151].min() == 150 and candidates[:, 2].min() == 0


@pytest.fixture(scope="module")
def corridor(corridor_dir):
    """The real Corridor: a map of all references in traversal order, the queries in traversal order and
    each query's true references (ground_truth.csv)."""
    from pathlib import Path

    from vpr_ros.core.inputs.images import read_image
    from vpr_ros.core.map.frames import FrameTable
    from vpr_ros.core.build.map_builder import build_map
    from vpr_ros.core.build.sources import load_image_file

    paths = sorted((corridor_dir / "ref").glob("*.jpg"))
    frames = FrameTable.build(np.arange(len(paths)) * SECOND, paths)
    vpr_map = build_map("corridor", frames, load_image_file, clusters=16)
    lines = (corridor_dir / "ground_truth.csv").read_text().splitlines()[1:]
    truth = [{int(Path(ref).stem) for ref in line.split(",")[1].split()} for line in lines]
    queries = [read_image(corridor_dir / line.split(",")[0]) for line in lines]
    return vpr_map, queries, truth


def test_the_place_is_where_the_alignments_line_ends():
    """One last image that looks like a place two keys ahead pulls the best alignment's end there; the line
    fitted to the whole window ends where the robot is. Never outside the segment or the searchable keys."""
    n, length = 300, 20
    matcher = SequenceMatcher(length, max_step=3)
    matcher.set_map(np.where(np.arange(n) < 150, 0, 150))  # two segments
    rng = np.random.default_rng(0)
    for t in range(length):
        row = rng.normal(size=n).astype(np.float32) * 0.3
        truth = 100 + t
        row[truth if t < length - 1 else truth + 2] += 3.0  # the last frame looks like truth + 2
        score = matcher.update(row, t * SECOND)
    best = int(np.argmax(score))
    assert best == 121 and matcher.alignment(best)[0] == 100 and len(matcher.alignment(best)) == length
    assert matcher.place(best) == 119
    assert matcher.place(best, searchable=110) == 109  # slam: the newest keys may not be named
    matcher.reset()
    for t in range(length):  # along the end of segment 0 at 2 keys per frame: the line would leave it
        row = np.zeros(n, np.float32)
        row[min(112 + 2 * t, 149)] = 3.0
        matcher.update(row, t * SECOND)
    assert matcher.place(149) == 149


def test_centred_rows_see_through_a_change_of_condition():
    """A new condition moves every query descriptor the same way (towards what some map frames look like):
    plain cosines then rank those frames first for every query; the centred rows remove the shared shift."""
    m = _route_map(n=300, seed=3)
    rng = np.random.default_rng(2)
    shift = m[40] + rng.normal(size=m.shape[1]).astype(np.float32) * 0.1  # dusk: like the map's shaded frames
    truth = 150 + np.arange(80)
    hits = {}
    for rows in (PlainSimilarity(m), CentredSimilarity(m)):
        matcher = SequenceMatcher(10, max_step=3)
        matcher.set_map(np.zeros(len(m), np.int64))
        right = []
        for t, key in enumerate(truth):
            q = m[key] * 0.8 + shift + rng.normal(size=m.shape[1]).astype(np.float32) * 0.05
            score = matcher.update(rows(q / np.linalg.norm(q)), t * SECOND)
            if matcher.full:
                right.append(abs(int(np.argmax(score)) - key) <= 2)
        hits[type(rows).__name__] = np.mean(right)
    assert hits["CentredSimilarity"] >= 0.8 and hits["PlainSimilarity"] <= 0.2, hits  # 0.90 and 0.0


def test_localizer_ranks_corridor_by_sequence(corridor):
    vpr_map, queries, truth = corridor
    length = 5
    localizer = Localizer(LocalizerConfig(rerank="off", top_k=5, sequence_length=length, sequence_max_step=2,
                                          sequence_similarity="plain"),  # one corridor, its own conditions
                          vpr_map)
    assert localizer.sequence is not None
    results = [localizer.process(image, i * SECOND) for i, image in enumerate(queries)]
    for i, r in enumerate(results):
        if i < length - 1:  # the window is filling: ranked by the image, no sequence fields
            assert r.sequence_length == 0 and r.single_keys is None and np.isnan(r.places[0].sequence_score)
        else:
            assert r.sequence_length == length and all(p.sequence_length == length for p in r.places)
            scores = [p.sequence_score for p in r.places]
            assert np.isfinite(scores).all() and scores[1:] == sorted(scores[1:], reverse=True)  # [0]: the place
            assert r.timings_ms["sequence"] >= 0
    single = np.mean([int((r.single_keys if r.single_keys is not None else r.global_keys)[0]) in t
                      for r, t in zip(results, truth)])
    sequence = np.mean([r.places[0].hypothesis.key in t for r, t in zip(results, truth)])
    assert sequence >= 0.9 and sequence >= single + 0.05, (sequence, single)  # 0.92 vs 0.82 with 16 clusters


def test_a_shuffled_folder_map_falls_back_to_single_images(corridor, caplog):
    vpr_map, queries, _ = corridor
    from vpr_ros.core.map.store import VPRMap

    order = np.random.default_rng(0).permutation(len(vpr_map))
    shuffled = VPRMap.create("shuffled", vpr_map.descriptor, vpr_map.descriptors[order], vpr_map.frames.select(order))
    with caplog.at_level(logging.WARNING, logger="vpr_ros"):
        localizer = Localizer(LocalizerConfig(rerank="off", top_k=3, sequence_length=5), shuffled)
    assert localizer.sequence is None
    assert any("sequence matching is off" in m and "no traversal order" in m for m in caplog.messages)
    result = [localizer.process(image, i * SECOND) for i, image in enumerate(queries[:8])][-1]
    assert result.sequence_length == 0 and len(result.places) == 3


def test_slam_mode_aligns_with_the_online_map(corridor):
    """slam: the online map grows each keyframe and the window follows; recent keyframes never match."""
    vpr_map, queries, truth = corridor
    refs = [vpr_map.frames.sources[k] for k in range(60)]
    from vpr_ros.core.inputs.images import read_image

    config = LocalizerConfig(mode="slam", rerank="off", top_k=3, bootstrap_frames=20, exclude_recent_s=15,
                             exclude_recent_frames=5, temporal_window=0, sequence_length=4)
    localizer = Localizer(config)
    for i, path in enumerate(refs):
        result = localizer.process(read_image(path), i * SECOND)
        assert all(p.hypothesis.key <= i - 15 for p in result.places)
    assert localizer.sequence is not None and len(localizer.sequence.matcher.starts) == len(localizer.vpr_map) == 60
    revisit = [localizer.process(image, (300 + i) * SECOND) for i, image in enumerate(queries[10:30])]
    assert all(r.sequence_length == 4 for r in revisit[3:])
    for i, r in enumerate(revisit):  # the revisit's own keyframes join the map and stay excluded while recent
        assert all(p.hypothesis.key < 60 or p.hypothesis.stamp_ns <= (300 + i - 15) * SECOND for p in r.places)
    # a vocabulary of 20 keyframes makes single images weak here (0.47 right); the sequence is no worse (0.53)
    right = np.mean([r.places[0].hypothesis.key in truth[10 + i] for i, r in enumerate(revisit[3:], start=3)])
    alone = np.mean([int(r.single_keys[0]) in truth[10 + i] for i, r in enumerate(revisit[3:], start=3)])
    assert right >= alone and right >= 0.45, (right, alone)


def test_config_checks_the_sequence_settings():
    with pytest.raises(ValueError, match="0 \\(off\\) or at least 2"):
        LocalizerConfig(sequence_length=1)
    with pytest.raises(ValueError, match="sequence_max_step"):
        LocalizerConfig(sequence_max_step=0)


def test_accept_min_sequence_score_gates_loop_closures_of_uncalibrated_maps(corridor):
    """With sequence matching on a map without a calibrator, a loop closure also needs the best hypothesis's
    sequence score (mean z-score along its alignment) to reach accept_min_sequence_score; 0 turns it off."""
    vpr_map, queries, _ = corridor
    base = dict(rerank="off", top_k=5, sequence_length=5, sequence_max_step=2, sequence_similarity="plain",
                temporal_window=0)
    results = {}
    for threshold in (0.0, 2.5, 100.0):
        localizer = Localizer(LocalizerConfig(**base, accept_min_sequence_score=threshold), vpr_map)
        results[threshold] = [localizer.process(image, i * SECOND) for i, image in enumerate(queries)]
    # the frames ranked by sequence (the first 4 fill the window: ranked by their image, not gated by it)
    loops = {t: [r.loop for r in rs if r.loop is not None and r.sequence_length] for t, rs in results.items()}
    scores = [p.sequence_score for p in loops[0.0]]
    assert len(loops[0.0]) >= 20 and min(scores) < 2.5 < max(scores), sorted(scores)
    assert loops[100.0] == [] and 0 < len(loops[2.5]) < len(loops[0.0])
    assert all(p.sequence_score >= 2.5 for p in loops[2.5])
    filling = {t: sum(r.loop is not None for r in rs if not r.sequence_length) for t, rs in results.items()}
    assert len(set(filling.values())) == 1, filling
