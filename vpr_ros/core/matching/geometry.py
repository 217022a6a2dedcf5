"""Geometric verification of matches with OpenCV USAC (MAGSAC++), and the relative pose it implies.

Without intrinsics a fundamental matrix (or homography) is fitted and only the inliers are reported.
With the intrinsics of both cameras the essential matrix is fitted on normalised coordinates and
decomposed into the relative rotation and the direction of the translation (its scale is unknown).
A homography that explains the matches as well as the two-view model means the translation cannot be
recovered (pure rotation, no motion, or a plane seen without intrinsics); with intrinsics, a
homography that is a rotation gives that rotation.

Pose convention: `rotation`, `translation` are T_query_match, the map camera's pose in the query
camera's frame (x_query = R x_map + t), as LoopClosure.relative_pose carries it.

The inlier threshold is given in pixels of a 640-pixel-wide image and scaled by the image's longer
side, so the same setting works on 160x120 and 1280x720 cameras.

Verified means: at least `min_inliers` inliers, at least `min_inlier_ratio` of the matches, and more
inliers than chance explains (a contrario, as in ORSA / AC-RANSAC). The number of false alarms of k
inliers among n matches is NFA = (n - s) C(n, k) C(k, s) a^(k - s): s points fix the model, and a is
the probability that a point placed at random in the image lands within the threshold of where the
model puts it (2 d t / area for an epipolar line of length up to the diagonal d, pi t^2 / area for a
homography). log10 NFA must be at most `max_log_nfa` (0: less than one such pair expected by chance).
The test scales with the matches and the image: 15 inliers among 40 matches are chance for a
fundamental matrix, 15 among 20 are not, and a 2048-keypoint budget whose matches fill the image needs
proportionally more inliers than a 512-keypoint one.

Look-alikes (issue 41): a wrong place that shares real structure with the query (the same doors down a
corridor, a repeated facade, the same kind of parked car) is not chance, and passes the test above with
dozens of inliers. What it rarely has is agreement over the whole view: its inliers are a small part of
the keypoint budget (`min_keypoint_share` of the smaller keypoint count of the two images, when the caller
gives the counts) and lie on one object (`min_inlier_coverage`: the inliers' convex hull covers at least
this share of each image). The keypoint share was set on measured right and wrong pairs at 512 and
2048 keypoints, indoors and outdoors; the coverage separated nothing there and is off by default
(benchmarks/verification.py, docs/benchmarks.md "Verification that refuses look-alikes").
"""

import math

from dataclasses import dataclass, field

import cv2
import numpy as np

MODELS = ("fundamental", "homography")
MIN_MATCHES = {"fundamental": 8, "homography": 4, "essential": 5}
SAMPLE = {"fundamental": 7, "homography": 4, "essential": 5}  # points that fix each model
REFERENCE_WIDTH = 640.0
MIN_INLIERS, MIN_INLIER_RATIO = 15, 0.25  # what a verified candidate needs by default (the node's too: core/config.py)
MIN_KEYPOINT_SHARE, MIN_INLIER_COVERAGE = 0.03, 0.0  # look-alike rules (module docstring; docs/benchmarks.md)


@dataclass
class Verification:
    """Outcome of verifying one candidate's matches."""

    verified: bool
    model: str  # fundamental, homography, essential or "" when nothing could be fitted
    inlier_count: int
    inlier_ratio: float  # inliers / matches (NaN without matches)
    inliers: np.ndarray = field(repr=False)  # S bool, per match
    note: str = ""  # why unverified, or what limits the pose; empty when nothing to say
    rotation: np.ndarray | None = None  # 3 x 3, T_query_match; None without intrinsics
    translation: np.ndarray | None = None  # unit 3-vector (direction only); None when unknown
    log_nfa: float = float("nan")  # log10 of the number of pairs expected to reach as many inliers by chance
    keypoint_share: float = float("nan")  # inliers / the smaller keypoint count of the two images (NaN: not given)
    coverage: float = float("nan")  # share of each image the inliers' convex hull covers, the smaller (NaN: none)
    homography_share: float = float("nan")  # homography inliers / two-view model inliers: near 1 when the views
    #                                         differ by a rotation or a short step, lower with parallax (NaN: not fitted)

    @classmethod
    def failed(cls, matches: int, note: str) -> "Verification":
        return cls(False, "", 0, float("nan") if matches == 0 else 0.0, np.zeros(matches, bool), note)


class Verifiable:
    """A candidate that may carry a Verification (None: not matched)."""

    verification: "Verification | None"

    @property
    def verified(self) -> bool:
        return self.verification is not None and self.verification.verified


def _spread(points: np.ndarray) -> float:
    """The smaller standard deviation of a point set along its principal axes (pixels)."""
    centred = points - points.mean(axis=0)
    return float(np.linalg.svd(centred / np.sqrt(len(points)), compute_uv=False)[-1])


def inlier_coverage(query_pts: np.ndarray, map_pts: np.ndarray, query_size: tuple[int, int],
                    map_size: tuple[int, int]) -> float:
    """The smaller share of the two images that the points' convex hull covers (0 for fewer than 3 points)."""
    shares = []
    for points, (w, h) in ((query_pts, query_size), (map_pts, map_size)):
        points = np.asarray(points, np.float32).reshape(-1, 2)
        if len(points) < 3 or w <= 0 or h <= 0:
            return 0.0
        points = np.clip(points, 0.0, [w, h]).astype(np.float32)  # a keypoint is in its image
        shares.append(float(cv2.contourArea(cv2.convexHull(points))) / float(w * h))
    return min(shares)


def chance_rates(threshold_px: float, query_size: tuple[int, int], map_size: tuple[int, int]) -> dict[str, float]:
    """Per model kind, the probability that a random point falls within `threshold_px` of the model's
    prediction, in images of these sizes (W, H): epipolar (a band around a line) or homography (a disc)."""
    area = 0.5 * (query_size[0] * query_size[1] + map_size[0] * map_size[1])
    diagonal = 0.5 * (math.hypot(*query_size) + math.hypot(*map_size))
    epipolar = min(2.0 * threshold_px * diagonal / area, 1.0)
    return {"fundamental": epipolar, "essential": epipolar,
            "homography": min(math.pi * threshold_px ** 2 / area, 1.0)}


def log10_nfa(model: str, matches: int, inliers: int, chance: float) -> float:
    """log10 of the number of false alarms of `inliers` of `matches` fitting `model` (module docstring)."""
    s = SAMPLE[model]
    if inliers <= s or matches <= s:
        return float("inf")
    log_choose = (math.lgamma(matches + 1) - math.lgamma(inliers + 1) - math.lgamma(matches - inliers + 1)
                  + math.lgamma(inliers + 1) - math.lgamma(s + 1) - math.lgamma(inliers - s + 1))
    return (math.log(matches - s) + log_choose + (inliers - s) * math.log(max(chance, 1e-300))) / math.log(10)


def _nearest_rotation(matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """The rotation closest to a 3x3 matrix scaled to unit determinant, and how far from one it was."""
    det = np.linalg.det(matrix)
    if not np.isfinite(det) or abs(det) < 1e-12:
        return np.eye(3), np.inf
    matrix = matrix / np.cbrt(det)
    u, s, vt = np.linalg.svd(matrix)
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        return rotation, np.inf
    return rotation, float(np.abs(s - 1.0).max())


class GeometricVerifier:
    """Fit a two-view model with MAGSAC++ and count inliers.

    Verified needs `min_inliers` inliers making up at least `min_inlier_ratio` of the matches (200
    random correspondences leave about 15 fundamental-matrix inliers, 7 %, at the default threshold, so
    a count alone cannot tell a wrong place with many spurious matches from a right one), and more
    than chance explains for that many matches in images of that size (log10 NFA <= `max_log_nfa`).
    """

    def __init__(self, model: str = "fundamental", threshold_px: float = 3.0, confidence: float = 0.999,
                 max_iters: int = 2000, min_inliers: int = MIN_INLIERS, min_inlier_ratio: float = MIN_INLIER_RATIO,
                 homography_ratio: float = 0.95, max_log_nfa: float = 0.0,
                 min_keypoint_share: float = MIN_KEYPOINT_SHARE, min_inlier_coverage: float = MIN_INLIER_COVERAGE):
        if model not in MODELS:
            raise ValueError(f"unknown geometric model {model!r}; choose one of {MODELS}")
        if threshold_px <= 0 or not 0 < confidence < 1 or min_inliers < 1:
            raise ValueError("threshold_px > 0, 0 < confidence < 1 and min_inliers >= 1 are required")
        self.model, self.threshold_px, self.confidence = model, float(threshold_px), float(confidence)
        self.max_iters, self.min_inliers, self.homography_ratio = int(max_iters), int(min_inliers), homography_ratio
        self.min_inlier_ratio, self.max_log_nfa = float(min_inlier_ratio), float(max_log_nfa)
        if not (0 <= min_keypoint_share <= 1 and 0 <= min_inlier_coverage <= 1):
            raise ValueError("min_keypoint_share and min_inlier_coverage must lie in [0, 1]")
        self.min_keypoint_share, self.min_inlier_coverage = float(min_keypoint_share), float(min_inlier_coverage)

    def verify(self, query_pts: np.ndarray, map_pts: np.ndarray, query_size: tuple[int, int],
               map_size: tuple[int, int], query_K: np.ndarray | None = None,
               map_K: np.ndarray | None = None, keypoints: tuple[int, int] | None = None) -> Verification:
        """Matched keypoints (S x 2 each, pixels) -> Verification; never raises on degenerate input.
        keypoints: the two images' keypoint counts, for the keypoint-share rule (None: not applied)."""
        return self.judge_structure(self._verify(query_pts, map_pts, query_size, map_size, query_K, map_K),
                                    query_pts, map_pts, query_size, map_size, keypoints)

    def judge_structure(self, verification: Verification, query_pts: np.ndarray, map_pts: np.ndarray,
                        query_size: tuple[int, int], map_size: tuple[int, int],
                        keypoints: tuple[int, int] | None = None) -> Verification:
        """The look-alike rules (module docstring) on a fitted verification: records its keypoint share and
        inlier coverage, and unverifies it, with the reason, when either falls short."""
        v = verification
        if not len(v.inliers) or not v.inliers.any():
            return v
        mask = v.inliers
        v.coverage = inlier_coverage(np.asarray(query_pts).reshape(-1, 2)[mask], np.asarray(map_pts).reshape(-1, 2)[mask],
                                     query_size, map_size)
        if keypoints is not None and min(keypoints) > 0:
            v.keypoint_share = v.inlier_count / float(min(keypoints))
        if not v.verified:
            return v
        if v.keypoint_share < self.min_keypoint_share:  # NaN (counts not given) compares False
            v.verified = False
            v.note = (f"{v.inlier_count} inliers are {v.keypoint_share:.1%} of the {min(keypoints)} keypoints, under "
                      f"min_keypoint_share={self.min_keypoint_share:.0%} (a look-alike)") + (f"; {v.note}" if v.note else "")
        elif v.coverage < self.min_inlier_coverage:
            v.verified = False
            v.note = (f"the inliers span {v.coverage:.1%} of the image, under min_inlier_coverage="
                      f"{self.min_inlier_coverage:.0%} (one object, not the view)") + (f"; {v.note}" if v.note else "")
        return v

    def _verify(self, query_pts, map_pts, query_size, map_size, query_K, map_K) -> Verification:
        p0 = np.ascontiguousarray(query_pts, np.float64).reshape(-1, 2)
        p1 = np.ascontiguousarray(map_pts, np.float64).reshape(-1, 2)
        if len(p0) != len(p1):
            raise ValueError(f"{len(p0)} query points for {len(p1)} map points")
        n = len(p0)
        if not (np.isfinite(p0).all() and np.isfinite(p1).all()):
            return Verification.failed(n, "non-finite keypoint coordinates")
        with_pose = query_K is not None and map_K is not None
        model = "essential" if with_pose else self.model
        if n < max(MIN_MATCHES[model], self.min_inliers):
            return Verification.failed(n, f"{n} matches, fewer than the {max(MIN_MATCHES[model], self.min_inliers)} "
                                          f"a verified {model} model needs")
        scale0 = max(query_size) / REFERENCE_WIDTH
        scale1 = max(map_size) / REFERENCE_WIDTH
        threshold = self.threshold_px * 0.5 * (scale0 + scale1)
        chance = chance_rates(threshold, query_size, map_size)
        if min(_spread(p0) / scale0, _spread(p1) / scale1) < self.threshold_px:
            return Verification.failed(n, "matched keypoints are (nearly) collinear or coincident: "
                                          "no two-view geometry can be fitted")
        try:
            if with_pose:
                return self._essential(p0, p1, np.asarray(query_K, np.float64), np.asarray(map_K, np.float64),
                                       threshold, chance)
            return self._uncalibrated(p0, p1, threshold, chance)
        except cv2.error as exc:  # OpenCV rejects some degenerate configurations outright
            return Verification.failed(n, f"OpenCV could not fit a model: {str(exc).strip().splitlines()[-1]}")

    def _homography_inliers(self, p0, p1, threshold) -> tuple[np.ndarray, np.ndarray | None]:
        h, mask = cv2.findHomography(p0, p1, cv2.USAC_MAGSAC, threshold, maxIters=self.max_iters,
                                     confidence=self.confidence)
        return (mask.ravel() > 0) if h is not None and mask is not None else np.zeros(len(p0), bool), h

    def _result(self, model, mask, chance, note="", rotation=None, translation=None,
                homography_share: float = float("nan")) -> Verification:
        count = int(mask.sum())
        ratio = count / len(mask)
        nfa = log10_nfa(model, len(mask), count, chance[model])
        verified = count >= self.min_inliers and ratio >= self.min_inlier_ratio and nfa <= self.max_log_nfa
        if count < self.min_inliers:
            note = f"{count} inliers, fewer than min_inliers={self.min_inliers}" + (f"; {note}" if note else "")
        elif ratio < self.min_inlier_ratio:
            note = (f"{count} inliers are {ratio:.0%} of the matches, under min_inlier_ratio="
                    f"{self.min_inlier_ratio:.0%}") + (f"; {note}" if note else "")
        elif not verified:
            note = (f"{count} inliers of {len(mask)} matches are what chance gives (log10 NFA {nfa:.1f} > "
                    f"{self.max_log_nfa:g})") + (f"; {note}" if note else "")
        return Verification(verified, model, count, ratio, mask, note, rotation, translation, nfa,
                            homography_share=float(homography_share))

    def _uncalibrated(self, p0, p1, threshold, chance) -> Verification:
        h_mask, _ = self._homography_inliers(p0, p1, threshold)
        if self.model == "homography":
            return self._result("homography", h_mask, chance)
        f, mask = cv2.findFundamentalMat(p0, p1, cv2.USAC_MAGSAC, threshold, self.confidence, self.max_iters)
        f_mask = (mask.ravel() > 0) if f is not None and mask is not None else np.zeros(len(p0), bool)
        share = h_mask.sum() / max(f_mask.sum(), 1)
        if h_mask.sum() >= self.homography_ratio * f_mask.sum():
            # F is not determined when a homography explains the matches; the homography's inliers count
            return self._result("homography", h_mask, chance, "a homography explains the matches (a plane, pure "
                                                              "rotation or no motion)", homography_share=share)
        return self._result("fundamental", f_mask, chance, homography_share=share)

    def _essential(self, p0, p1, k0, k1, threshold, chance) -> Verification:
        n0 = cv2.undistortPoints(p0.reshape(-1, 1, 2), k0, None).reshape(-1, 2)
        n1 = cv2.undistortPoints(p1.reshape(-1, 1, 2), k1, None).reshape(-1, 2)
        focal = 0.25 * (k0[0, 0] + k0[1, 1] + k1[0, 0] + k1[1, 1])
        e, mask = cv2.findEssentialMat(n0, n1, np.eye(3), cv2.USAC_MAGSAC, self.confidence, threshold / focal,
                                       maxIters=self.max_iters)
        if e is None or mask is None or e.shape != (3, 3):
            e_mask = np.zeros(len(p0), bool)
        else:
            e_mask = mask.ravel() > 0
        h_mask, h = self._homography_inliers(n0, n1, threshold / focal)
        share = h_mask.sum() / max(e_mask.sum(), 1)
        if h is not None and h_mask.sum() >= self.homography_ratio * e_mask.sum():
            rotation, error = _nearest_rotation(h)
            if error < 0.05:  # the homography is a rotation: the cameras did not translate measurably
                # h maps query to map rays: x_map ~ R_mq x_query, so T_query_match has R_qm = R_mq^T
                return self._result("homography", h_mask, chance, "pure rotation or no motion: translation unknown",
                                    rotation.T, None, share)
        if not e_mask.any():
            return self._result("essential", e_mask, chance, "no essential matrix could be fitted", homography_share=share)
        _, r, t, pose_mask = cv2.recoverPose(e, n0, n1, np.eye(3), mask=e_mask.astype(np.uint8).copy())
        # recoverPose: x_map = r x_query + t; invert for T_query_match
        rotation = r.T
        translation = -(r.T @ t).ravel()
        translation /= max(np.linalg.norm(translation), 1e-12)
        return self._result("essential", e_mask, chance, "translation direction only (scale unknown)", rotation,
                            translation, share)
