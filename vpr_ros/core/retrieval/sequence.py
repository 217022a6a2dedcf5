"""Sequence matching: rank map frames by how well the robot's last L frames line up with map frames along
a trajectory-consistent alignment (the idea of SeqSLAM, run online as a sliding-window Viterbi).

Each processed query frame t brings its similarity row s_t (cosine of its descriptor with every map
frame), normalised to z_t: the z-score over the map, which keeps what stands out for this frame and
removes the global shift an appearance change puts on every cosine. An alignment is a path of map keys,
one per query frame, inside one map segment (a stretch recorded in order), moving forward by 0 to
`max_step` keys per frame (0: the robot stood still or the map is denser than the query stream; more:
it is sparser), and by up to `max_step` times the gap when frames were skipped (gated or dropped,
judged by the stamp interval against the typical one). The sequence score of map frame j is the mean
of z along the best alignment of the last L frames that ends at j.

Incremental and bounded: a frame costs O(N * (max_step + L)) for N map frames, one shifted maximum per
step and one gather of the tracked alignments, whatever came before. The best alignment into j extends
the best windowed alignment of one of its predecessors, from whose sum the frame leaving the window is
subtracted (exact sums along the tracked alignments; which alignments are tracked is decided greedily).

The similarity row is taken between centred descriptors: the map's descriptors minus their mean, and
each query's minus the running mean of the query stream (`CentredSimilarity`). A change of condition
(dusk, night, another season) moves every query descriptor the same way; the running mean removes that
shared shift, which plain cosines keep (demo dusk lap: single-image R@1 0.475 with plain cosines,
0.806 with centred ones; docs/benchmarks.md).

A map without order (an image folder in no particular order) cannot be aligned: `map_segments` finds
that from the descriptors (adjacent keys are no more alike than random pairs) and says so.
"""

from dataclasses import dataclass

import numpy as np

from vpr_ros.core import LOGGER

LOW = np.float32(-1e3)  # z of a map frame the query must not match (slam: the newest keyframes)
ORDER_QUANTILE = 0.9  # an ordered map: the median adjacent-key cosine exceeds this quantile of random pairs
SEGMENT_GAP = 10.0  # a new segment starts where the stamp interval exceeds this many times the median one
MAX_GAP_FACTOR = 4  # a skipped-frame gap widens the step range by at most this factor
RESET_GAP_FACTOR = 50.0  # a stamp gap this many times the typical interval (or going back) restarts the window


MAX_STEP = 3  # map frames the robot may advance per query frame by default (the node's too: core/config.py)
CENTRE_WINDOW = 50  # query frames the running mean follows (an exponential average of about this many)
CENTRE_PRIOR = 5  # ... starting from the map's mean, weighted as this many query frames (it adapts within ~5 frames)


class PlainSimilarity:
    """Cosines of a query with every map frame (for revisits in the map's own conditions)."""

    def __init__(self, descriptors: np.ndarray):
        self.descriptors = np.asarray(descriptors, np.float32)

    def grow(self, descriptors: np.ndarray) -> None:
        self.descriptors = np.concatenate([self.descriptors, np.asarray(descriptors, np.float32)])

    def __call__(self, query: np.ndarray) -> np.ndarray:
        return self.descriptors @ np.asarray(query, np.float32).reshape(-1)


class CentredSimilarity:
    """Cosines of a query with every map frame after removing the map's mean descriptor from the map and the
    query stream's running mean from each query (the running mean starts from the map's mean)."""

    def __init__(self, descriptors: np.ndarray):
        d = np.asarray(descriptors, np.float32)
        self.map_mean = d.mean(axis=0) if len(d) else np.zeros(d.shape[1], np.float32)
        self.centred = _unit(d - self.map_mean)
        self.query_mean, self.queries = self.map_mean.copy(), 0

    def __call__(self, query: np.ndarray) -> np.ndarray:
        q = np.asarray(query, np.float32).reshape(-1)
        self.queries += 1
        self.query_mean += (q - self.query_mean) / min(self.queries + CENTRE_PRIOR, CENTRE_WINDOW)
        return self.centred @ _unit(q - self.query_mean)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def map_segments(descriptors: np.ndarray, stamps_ns: np.ndarray, seed: int = 0) -> tuple[np.ndarray | None, str]:
    """Per map key the first key of its segment (stretches recorded in order), or None and the reason why the
    map cannot be aligned; the reason is "" for an ordered map."""
    n = len(descriptors)
    if n < 3:
        return None, f"the map has {n} frames; sequence matching needs an ordered map of at least 3"
    d = np.asarray(descriptors, np.float32)
    adjacent = np.einsum("ij,ij->i", d[:-1], d[1:])
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, min(4 * n, 20000))
    cols = rng.integers(0, n, len(rows))
    keep = np.abs(rows - cols) > 1
    random_pairs = np.einsum("ij,ij->i", d[rows[keep]], d[cols[keep]])
    if not len(random_pairs) or np.median(adjacent) <= np.quantile(random_pairs, ORDER_QUANTILE):
        return None, (f"adjacent map frames are no more alike than random pairs (median cosine "
                      f"{np.median(adjacent):.3f}, random pairs' {ORDER_QUANTILE:.0%} quantile "
                      f"{np.quantile(random_pairs, ORDER_QUANTILE) if len(random_pairs) else float('nan'):.3f}): "
                      "the map's frames are in no traversal order")
    return stamp_segments(stamps_ns), ""


def stamp_segments(stamps_ns: np.ndarray) -> np.ndarray:
    """Per key of a map recorded in key order the first key of its segment: a new segment starts where the
    stamps go back or pause for more than SEGMENT_GAP typical intervals."""
    steps = np.diff(np.asarray(stamps_ns, np.int64)).astype(np.float64)
    typical = np.median(steps[steps > 0]) if (steps > 0).any() else 0.0
    starts = np.zeros(len(stamps_ns), np.int64)
    if typical > 0:
        breaks = np.flatnonzero((steps <= 0) | (steps > SEGMENT_GAP * typical)) + 1
        starts[breaks] = breaks
    return np.maximum.accumulate(starts) if len(starts) else starts


def _segment_ends(starts: np.ndarray) -> np.ndarray:
    """Per key the last key of its segment."""
    if not len(starts):
        return starts.copy()
    last = np.r_[np.flatnonzero(starts[1:] != starts[:-1]), len(starts) - 1]  # each segment's last key
    return last[np.searchsorted(last, np.arange(len(starts)))]


class SequenceMatcher:
    """Sliding-window alignment of the last `length` query frames with an ordered map (see the module doc)."""

    def __init__(self, length: int, max_step: int = MAX_STEP):
        if length < 2:
            raise ValueError(f"sequence length must be >= 2 frames, got {length}")
        if max_step < 1:
            raise ValueError(f"max_step must be >= 1 map frame per query frame, got {max_step}")
        self.length, self.max_step = int(length), int(max_step)
        self.starts = self.ends = np.zeros(0, np.int64)
        self.reset()

    def set_map(self, starts: np.ndarray) -> None:
        """A new map: per key the first key of its segment (map_segments). Restarts the window."""
        self.starts = np.asarray(starts, np.int64)
        self.ends = _segment_ends(self.starts)
        self.reset()

    def grow(self, starts: np.ndarray) -> None:
        """slam: the map gained keys (appended at the end); the window goes on."""
        old, new = len(self.starts), len(starts)
        self.starts = np.asarray(starts, np.int64)
        self.ends = _segment_ends(self.starts)
        if new == old:
            return
        pad = new - old
        self.total = np.concatenate([self.total, np.full(pad, LOW * self.length, np.float32)])
        self.z = np.concatenate([self.z, np.full((self.length, pad), LOW, np.float32)], axis=1)
        tail = np.broadcast_to(np.arange(old, new, dtype=np.int32), (self.length, pad))
        self.paths = np.concatenate([self.paths, tail], axis=1)
        self._steps.clear()

    def reset(self) -> None:
        """Forget the window (a new map, a jump in time)."""
        n = len(self.starts)
        self.count = 0  # frames in the window
        self.frame = 0  # frames since the reset (ring position)
        self.total = np.zeros(n, np.float32)  # windowed sum of z along the best alignment ending at each key
        self.z = np.zeros((self.length, n), np.float32)  # ring: z rows of the window's frames
        self.paths = np.zeros((self.length, n), np.int32)  # ring: per alignment end, the key at each window frame
        self.last_stamp: int | None = None
        self.intervals: list[int] = []
        self._steps: dict[int, np.ndarray] = {}

    @property
    def full(self) -> bool:
        return self.count >= self.length

    def update(self, similarities: np.ndarray, stamp_ns: int, searchable: int | None = None) -> np.ndarray:
        """Add one frame's similarity row (length = map size; keys >= searchable must not match) and return the
        sequence score of every map key: the mean normalised similarity along the best alignment of the window
        ending there (low for keys that cannot match). Check `full` before ranking by it."""
        n = len(self.starts)
        s = np.asarray(similarities, np.float32).reshape(-1)
        if len(s) != n:
            raise ValueError(f"similarity row of {len(s)} entries for a map of {n} frames")
        searchable = n if searchable is None else max(min(int(searchable), n), 0)
        gap = self._gap(int(stamp_ns))
        z = _zscore(s, searchable)
        slot = self.frame % self.length
        if self.count == 0:
            total = z.copy()
            self.paths[:, :] = np.arange(n, dtype=np.int32)
        else:
            carried = self.total
            if self.count >= self.length:  # the frame in `slot` leaves the window
                carried = carried - self.z[slot][self.paths[slot]]
            candidates = self._candidates(gap)
            best = np.argmax(carried[candidates], axis=0)
            pred = candidates[best, np.arange(n)]
            total = z + carried[pred]
            self.paths = self.paths[:, pred]
        self.paths[slot] = np.arange(n, dtype=np.int32)
        self.z[slot] = z
        self.total = total.astype(np.float32)
        self.count = min(self.count + 1, self.length)
        self.frame += 1
        score = self.total / self.count
        score[searchable:] = -np.inf
        return score

    def alignment(self, key: int) -> np.ndarray:
        """The map keys of the best alignment of the window ending at `key`, oldest frame first."""
        slots = np.arange(self.frame - self.count, self.frame) % self.length
        return self.paths[slots, int(key)].astype(np.int64)

    def place(self, key: int, searchable: int | None = None) -> int:
        """Where the robot is now by the best alignment ending at `key`: the end of the constant-velocity line
        fitted (least squares) to the alignment's keys, inside `key`'s segment and below `searchable`. The
        line averages over the window what the last frame alone decides for the argmax (one noisy image
        pulling the end ahead or behind; Corridor at L=20: 0.964 -> 0.991, docs/benchmarks.md)."""
        path = self.alignment(key)
        if len(path) < 3:
            return int(key)
        t = np.arange(len(path), dtype=np.float64)
        slope, intercept = np.polyfit(t, path.astype(np.float64), 1)
        n = len(self.starts)
        searchable = n if searchable is None else min(int(searchable), n)
        last = min(int(self.ends[key]), searchable - 1)
        return int(np.clip(round(slope * t[-1] + intercept), self.starts[key], max(last, self.starts[key])))

    def _gap(self, stamp_ns: int) -> int:
        """How many frame intervals passed since the last frame (1 normally); restarts the window on a jump."""
        last, self.last_stamp = self.last_stamp, stamp_ns
        if last is None:
            return 1
        interval = stamp_ns - last
        typical = float(np.median(self.intervals)) if self.intervals else float(interval)
        if interval <= 0 or (typical > 0 and interval > RESET_GAP_FACTOR * typical):
            if self.count:
                LOGGER.info("sequence window restarted: the stamp %s by %.3f s (typical interval %.3f s)",
                            "went back" if interval <= 0 else "jumped", abs(interval) / 1e9, typical / 1e9)
            self.count, self.intervals = 0, []
            return 1
        self.intervals = (self.intervals + [interval])[-32:]
        return int(min(max(round(interval / typical), 1), MAX_GAP_FACTOR)) if typical > 0 else 1

    def _candidates(self, gap: int) -> np.ndarray:
        """(steps + 1) x N predecessor keys of every key: j - k for k = 0..max_step * gap, held at the start
        of j's segment."""
        steps = self.max_step * gap
        if steps not in self._steps:
            keys = np.arange(len(self.starts))
            self._steps[steps] = np.maximum(keys[None] - np.arange(steps + 1)[:, None], self.starts[None])
        return self._steps[steps]


def _zscore(s: np.ndarray, searchable: int) -> np.ndarray:
    """The row standardised over the keys that may match; the others get LOW."""
    z = np.full(len(s), LOW, np.float32)
    if searchable > 0:
        head = s[:searchable]
        finite = np.isfinite(head)
        mean = head[finite].mean() if finite.any() else 0.0
        std = head[finite].std() if finite.sum() > 1 else 1.0
        z[:searchable] = np.where(finite, (head - mean) / max(std, 1e-6), LOW)
    return z


@dataclass
class SequenceRanking:
    """The candidates of one frame by sequence score, once the window is full."""

    keys: np.ndarray  # k map keys, best first
    similarities: np.ndarray  # their cosines with the query's descriptor
    scores: np.ndarray  # their sequence scores
    length: int  # query frames the window spans


class SequenceRanker:
    """Sequence matching against one map: the matcher, the similarity rows it aligns, and the frame's candidates."""

    def __init__(self, matcher: SequenceMatcher, rows: CentredSimilarity | PlainSimilarity):
        self.matcher, self.rows = matcher, rows

    @classmethod
    def for_map(cls, descriptors: np.ndarray, stamps_ns: np.ndarray, name: str, length: int, max_step: int,
                similarity: str, ordered: bool = False) -> "SequenceRanker | None":
        """The ranker for a map when `length` asks for one and the map has an order to align with (said once
        when it has none: ranking stays single-image); `ordered`: a slam map, in keyframe order."""
        if not length:
            return None
        if ordered:
            starts, reason = stamp_segments(stamps_ns), ""
        else:
            starts, reason = map_segments(descriptors, stamps_ns)
        if starts is None:
            LOGGER.warning("map %s: sequence matching is off, ranking stays single-image: %s", name, reason)
            return None
        matcher = SequenceMatcher(length, max_step)
        matcher.set_map(starts)
        # the session's own map (slam) was seen in the query's conditions: nothing to remove
        rows = CentredSimilarity if similarity == "centred" and not ordered else PlainSimilarity
        return cls(matcher, rows(descriptors))

    def grow(self, descriptor: np.ndarray, stamps_ns: np.ndarray) -> None:
        """A keyframe joined the (slam) map: `descriptor` its own, `stamps_ns` every map frame's."""
        self.matcher.grow(stamp_segments(stamps_ns))
        self.rows.grow(descriptor)

    def rank(self, descriptor: np.ndarray, descriptors: np.ndarray, stamp_ns: int, searchable: int, k: int,
             subset: np.ndarray | None = None) -> SequenceRanking | None:
        """Add the frame's similarity row to the window and, once it is full, the top k map keys by sequence
        score (None before); with a prior's region (`subset`), only keys inside it (the alignments themselves
        run over the whole map). descriptors: the map's, N x D."""
        score = self.matcher.update(self.rows(descriptor), stamp_ns, searchable)
        if subset is not None:
            score = np.where(subset[:len(score)], score, -np.inf)
            k = min(k, int(np.count_nonzero(subset[:searchable])))
        if not self.matcher.full or k <= 0:
            return None
        top = np.argpartition(-score[:searchable], k - 1)[:k] if k < searchable else np.arange(searchable)
        top = top[np.argsort(-score[top], kind="stable")]
        place = self.matcher.place(int(top[0]), searchable)  # the best alignment's line ends here
        if place != top[0] and np.isfinite(score[place]):
            top = np.concatenate([[place], top[top != place]])[:k]
        cosines = descriptors[top] @ descriptor.reshape(-1).astype(np.float32)
        return SequenceRanking(top.astype(np.int64), cosines, score[top], self.matcher.count)
