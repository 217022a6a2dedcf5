"""The report's gallery: the answers worth looking at, as thumbnails an engineer can judge by eye.

Three rows of cases: the wrong top-1 answers (most confident first), the accepted loop closures with the
lowest probability (the ones a stricter threshold would drop), and a sample of right answers spread over
the run. Each shows the query and its top-1 map frame side by side with the verified matches drawn
(green: geometric inliers, grey: the rest; the configured matcher on the map's stored features), the map
frame nearest the query's true position (the true match), and the figures: distance, similarity,
inliers, probability. Thumbnails are JPEG at THUMB_HEIGHT pixels, inline, so that the report stays one
file of a few hundred kilobytes.
"""

import base64
from dataclasses import dataclass

import cv2
import numpy as np

from vpr_ros.core import LOGGER
from vpr_ros.core.evaluation.replay import PROCESSED

THUMB_HEIGHT = 120  # pixels
JPEG_QUALITY = 70
WRONG, LOW_PROBABILITY, RIGHT = 12, 8, 8  # cases per row
MAX_LINES = 60  # matches drawn per pair


@dataclass
class Case:
    record: object  # QueryRecord
    correct: bool
    true_key: int  # the map frame nearest the query's true position (-1: unknown)


def pick_cases(records, correct: list[bool | None], vpr_map) -> dict[str, list[Case]]:
    """The gallery's rows: wrong top-1 answers, the least probable accepted loop closures, right answers."""
    answered = [(r, ok) for r, ok in zip(records, correct) if r.status == PROCESSED and len(r.keys) and ok is not None]
    frames = vpr_map.frames
    posed = np.flatnonzero(frames.has_pose)

    def case(r, ok) -> Case:
        true_key = -1
        if len(posed) and np.isfinite(r.true_pose[:3]).all():
            true_key = int(posed[np.argmin(np.linalg.norm(frames.pose[posed, :3] - r.true_pose[:3], axis=1))])
        return Case(r, bool(ok), true_key)

    def confidence(r) -> float:
        p = float(r.probabilities[0]) if len(r.probabilities) else float("nan")
        return p if np.isfinite(p) else float(r.similarities[0])

    wrong = sorted((x for x in answered if not x[1]), key=lambda x: -confidence(x[0]))[:WRONG]
    loops = sorted((x for x in answered if x[0].loop_key >= 0), key=lambda x: confidence(x[0]))[:LOW_PROBABILITY]
    right = [x for x in answered if x[1]]
    if len(right) > RIGHT:
        right = [right[int(i)] for i in np.linspace(0, len(right) - 1, RIGHT).round()]
    return {"wrong": [case(*x) for x in wrong], "loops": [case(*x) for x in loops], "right": [case(*x) for x in right]}


class PairDrawer:
    """Side-by-side thumbnails of a query and a map frame with their verified matches drawn."""

    def __init__(self, vpr_map, matcher: str | None):
        self.vpr_map, self.reranker, self.extractor = vpr_map, None, None
        if matcher and vpr_map.local is not None:
            from vpr_ros.core.matching.geometry import GeometricVerifier
            from vpr_ros.core.matching.reranker import Reranker

            try:
                self.reranker = Reranker(matcher, GeometricVerifier())
                self.extractor = self.reranker.extractor_for(vpr_map.local_conf)
            except (ValueError, RuntimeError, FileNotFoundError) as exc:  # no weights here: thumbnails without lines
                LOGGER.warning("gallery: matches are not drawn: %s", exc)
                self.reranker = None

    def matches(self, query: np.ndarray, key: int):
        """(query keypoints, map keypoints, inlier mask) of the query's matches with map frame `key`, in each
        image's pixels; None without a matcher."""
        if self.reranker is None:
            return None
        features = self.extractor.extract([query])[0]
        stored = self.vpr_map.local[key]
        m = self.reranker.matcher.match(features, [stored])[0]
        verification = self.reranker.verify_pairs(features, [(stored, m)])[0]
        inliers = verification.inliers if len(verification.inliers) == len(m) else np.zeros(len(m), bool)
        return features.keypoints[m.query_idx], stored.keypoints[m.map_idx], inliers, stored.image_size

    def pair(self, query: np.ndarray, map_image: np.ndarray | None, key: int) -> str:
        left = _thumb(query)
        right = _thumb(map_image) if map_image is not None else _blank(left.shape[1], "map image not found")
        canvas = np.concatenate([left, right], axis=1)
        found = self.matches(query, key) if map_image is not None else None
        if found is not None:
            q, k, inliers, size = found
            sq, sk = left.shape[0] / query.shape[0], right.shape[0] / size[1]
            order = np.r_[np.flatnonzero(~inliers), np.flatnonzero(inliers)][-MAX_LINES:]  # inliers drawn last
            for i in order:
                a = (int(q[i, 0] * sq), int(q[i, 1] * sq))
                b = (int(k[i, 0] * sk) + left.shape[1], int(k[i, 1] * sk))
                colour = (40, 220, 40) if inliers[i] else (150, 150, 150)
                cv2.line(canvas, a, b, colour, 1, cv2.LINE_AA)
        return _jpeg(canvas)


def _thumb(image: np.ndarray) -> np.ndarray:
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    width = max(int(round(rgb.shape[1] * THUMB_HEIGHT / rgb.shape[0])), 1)
    return cv2.resize(np.ascontiguousarray(rgb[..., :3]), (width, THUMB_HEIGHT), interpolation=cv2.INTER_AREA)


def _blank(width: int, text: str) -> np.ndarray:
    canvas = np.full((THUMB_HEIGHT, width, 3), 230, np.uint8)
    cv2.putText(canvas, text, (4, THUMB_HEIGHT // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (80, 80, 80), 1, cv2.LINE_AA)
    return canvas


def _jpeg(rgb: np.ndarray) -> str:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return base64.b64encode(data.tobytes()).decode("ascii") if ok else ""


ROWS = {"wrong": "Wrong top-1 answers (most confident first)",
        "loops": "Accepted loop closures with the lowest probability",
        "right": "Right answers (a sample over the run)"}
STYLE = (".gallery{display:flex;flex-wrap:wrap;gap:8px}.case{border:1px solid #bbb;padding:4px;font-size:12px;"
         "text-align:left}.case img{max-width:none;margin:0}.case.bad{border-color:#c33}.case.good{border-color:#3a3}")


def gallery_html(records, correct: list[bool | None], vpr_map, matcher: str | None, query_image,
                 map_image=None) -> list[str]:
    """The gallery's HTML parts. query_image(record) and map_image(key) give RGB images (None or an exception
    when unavailable: the case shows what it can)."""
    if map_image is None:
        from vpr_ros.core.build.sources import SourceLoader

        loader = SourceLoader()
        map_image = lambda key: loader(vpr_map.frames.sources[key])  # noqa: E731
    drawer = PairDrawer(vpr_map, matcher)
    cached: dict[int, np.ndarray | None] = {}

    def map_thumb(key: int) -> np.ndarray | None:
        if key not in cached:
            try:
                cached[key] = map_image(key)
            except (FileNotFoundError, ValueError, OSError) as exc:
                LOGGER.warning("gallery: map frame %d: %s", key, exc)
                cached[key] = None
        return cached[key]

    parts = [f"<style>{STYLE}</style>", "<h2>Gallery</h2>",
             "<p>Each case: the query (left) and its top-1 map frame (right) with the verified matches "
             "(green: geometric inliers, grey: other matches), then the map frame nearest the query's true "
             "position. Distance: from the top-1 map frame to the query's true position.</p>"]
    frames = vpr_map.frames
    for row, cases in pick_cases(records, correct, vpr_map).items():
        parts.append(f"<h3>{ROWS[row]} ({len(cases)})</h3>")
        if not cases:
            parts.append("<p>none</p>")
            continue
        items = []
        for case in cases:
            r, top = case.record, int(case.record.keys[0])
            try:
                query = query_image(r)
            except (FileNotFoundError, ValueError, OSError) as exc:
                LOGGER.warning("gallery: query %d: %s", r.index, exc)
                continue
            pair = drawer.pair(query, map_thumb(top), top)
            true_img = map_thumb(case.true_key) if case.true_key >= 0 else None
            truth = (f'<img alt="true match" src="data:image/jpeg;base64,{_jpeg(_thumb(true_img))}">'
                     if true_img is not None else "")
            distance = (np.linalg.norm(frames.pose[top, :3] - r.true_pose[:3])
                        if frames.has_pose[top] and np.isfinite(r.true_pose[:3]).all() else float("nan"))
            p = float(r.probabilities[0]) if len(r.probabilities) else float("nan")
            inliers = int(r.inliers[0]) if len(r.inliers) else 0
            facts = (f"query {r.index} &rarr; map {top} ({'right' if case.correct else 'wrong'}"
                     f"{', loop closure' if r.loop_key >= 0 else ''}); true match: map {case.true_key}<br>"
                     f"distance {distance:.1f} m, similarity {float(r.similarities[0]):.3f}, inliers "
                     f"{inliers if r.reranked else 'not re-ranked'}, probability "
                     f"{'n/a (no calibrator)' if not np.isfinite(p) else f'{p:.2f}'}")
            items.append(f'<div class="case {"good" if case.correct else "bad"}">'
                         f'<img alt="query and top-1" src="data:image/jpeg;base64,{pair}"> {truth}'
                         f"<br>{facts}</div>")
        parts.append('<div class="gallery">' + "".join(items) + "</div>")
    return parts
