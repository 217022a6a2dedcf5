"""Metric relative pose of a verified match from depth: PnP with RANSAC, a weighted refinement, and the
covariance of the result.

The 3-D points come from the view that has depth (the map frame's stored keypoint depths, else the
query's depth image) and are matched to the other view's keypoints. OpenCV's RANSAC PnP (EPnP) finds the
inliers; a Gauss-Newton refinement then weights every point by the noise of its reprojection: the
keypoint's pixel noise in both views plus the depth noise along its ray,

    sigma_z(z) = depth_sigma_m + depth_sigma_per_m2 * z^2    (stereo and time-of-flight cameras: ~z^2)

so a point 10 m away counts far less than one at 2 m. The covariance of the pose is (J^T W J)^-1 from
the refinement's Jacobian, multiplied by the variance factor chi^2 / (2n - 6) of the inlier residuals when
that exceeds 1 (the data are noisier than the model says: never more confident than the residuals allow).

Pose convention: T_query_match (x_query = R x_match + t), as geometry.Verification and LoopClosure. The
covariance is over (x, y, z, rot_x, rot_y, rot_z) as in geometry_msgs: the error of t, and the rotation
error about the query camera's fixed axes (R_true = exp([dtheta]x) R).
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np

from vpr_ros.core.matching.geometry import REFERENCE_WIDTH
from vpr_ros.core.matching.transforms import invert, matrix_to_rotvec, rotation_angle_deg, rotvec_to_matrix, skew

# per degrees of freedom of a match's residual (2: a reprojection; 3: and the query's depth of the map point):
# the chi-square 99 % point (a match whose whitened squared residual exceeds it, times the robust scale, is an
# outlier), its median, and E[d^2 | d^2 < 99 % point] / dof (what the kept matches' variance factor reads)
CHI2_99 = {2: 9.21, 3: 11.34}
CHI2_MEDIAN = {2: 1.386, 3: 2.366}
TRUNCATED_MEAN = {2: 0.953, 3: 0.965}
MIN_INFORMATION_RATIO = 1e-12  # the least to the largest eigenvalue of J^T W J a pose's covariance needs
MAX_CONDITION = 1e12  # a match's residual covariance more ill-conditioned than this gives it no weight
MIN_POINT_DEPTH_M = 1e-3  # a 3-D point nearer a camera than this (or behind it) has no usable projection there
MAX_ROTATION_DISAGREEMENT_DEG = 15.0  # PnP vs the verified two-view rotation (simulated revisits: mostly < 8 deg)
AMBIGUOUS_SHARE = 0.5  # a second pose fitting this share of the first's points, elsewhere, makes the pose ambiguous


@dataclass
class MetricSettings:
    """Noise model and gates of the metric pose."""

    pixel_sigma: float = 2.0  # keypoint noise per view, pixels at 640 wide
    depth_sigma_m: float = 0.01  # depth noise at zero range ...
    depth_sigma_per_m2: float = 0.002  # ... growing with the square of the range (2 % at 10 m: ZED 2, D455 class)
    ransac_threshold_px: float = 6.0  # at 640 pixels wide
    min_inliers: int = 12  # PnP inliers a metric pose needs
    max_range_m: float = 40.0  # 3-D points farther than this are left out
    max_variance_factor: float = 9.0  # residuals 3x the modelled noise: the matches fit no rigid pose

    def depth_sigma(self, z: np.ndarray) -> np.ndarray:
        return self.depth_sigma_m + self.depth_sigma_per_m2 * np.square(z)


@dataclass
class MetricPose:
    """A metric T_query_match and its covariance."""

    rotation: np.ndarray  # 3 x 3
    translation: np.ndarray  # 3, metres
    covariance: np.ndarray  # 6 x 6 over (x, y, z, rot_x, rot_y, rot_z)
    inlier_count: int
    points: int  # matches with a 3-D point (a depth on either side; inlier_count is out of these)
    depth_from: str  # whose depth the 3-D points came from: "map", "query", or "map and query"
    variance_factor: float  # chi^2 / dof of the inlier residuals under the noise model


def agrees_with_two_view(metric: MetricPose, rotation: np.ndarray, model: str) -> tuple[MetricPose | None, str]:
    """The metric pose, or None and why when its rotation and the verified two-view rotation disagree by more
    than MAX_ROTATION_DISAGREEMENT_DEG: a gross PnP failure (a wrong minimal set that the refinement could not
    leave) contradicts the two-view rotation, which is seldom off by more than a few degrees."""
    angle = rotation_angle_deg(np.asarray(rotation) @ metric.rotation.T)
    if angle > MAX_ROTATION_DISAGREEMENT_DEG:
        return None, f"the PnP rotation and the two-view ({model}) rotation disagree by {angle:.0f} deg: no metric pose"
    return metric, ""


def pose_error(rotation: np.ndarray, translation: np.ndarray, true_rotation: np.ndarray,
               true_translation: np.ndarray) -> np.ndarray:
    """The 6-vector (dt, dtheta) of the module's convention: true = estimate perturbed by it."""
    return np.concatenate([np.asarray(true_translation) - np.asarray(translation),
                           matrix_to_rotvec(np.asarray(true_rotation) @ np.asarray(rotation).T)])


def perturbed(rotation: np.ndarray, translation: np.ndarray, xi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) moved by xi = (dt, dtheta): R <- exp(dtheta) R, t <- t + dt."""
    return rotvec_to_matrix(xi[3:]) @ rotation, translation + xi[:3]


def propagate(covariance: np.ndarray, rotation: np.ndarray, translation: np.ndarray, transform, step: float = 1e-6
              ) -> np.ndarray:
    """Covariance of transform(R, t) -> (R', t') at the estimate, both in the module's convention, by a
    numerical Jacobian (central differences)."""
    r0, t0 = transform(rotation, translation)
    jacobian = np.zeros((6, 6))
    for k in range(6):
        delta = np.zeros(6)
        delta[k] = step
        rp, tp = transform(*perturbed(rotation, translation, delta))
        rm, tm = transform(*perturbed(rotation, translation, -delta))
        jacobian[:, k] = (pose_error(r0, t0, rp, tp) - pose_error(r0, t0, rm, tm)) / (2 * step)
    out = jacobian @ covariance @ jacobian.T
    return 0.5 * (out + out.T)


def backproject(points: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (M x 2) at depths (M) -> M x 3 points in that camera's optical frame."""
    rays = (np.column_stack([points, np.ones(len(points))]) - [K[0, 2], K[1, 2], 0.0]) / [K[0, 0], K[1, 1], 1.0]
    return rays * depth[:, None]


class MetricEstimator:
    """T_query_match from matched keypoints when either view has depth (module docstring)."""

    def __init__(self, settings: MetricSettings | None = None):
        self.settings = settings or MetricSettings()

    def estimate(self, query_pts: np.ndarray, map_pts: np.ndarray, query_K: np.ndarray, map_K: np.ndarray,
                 query_size: tuple[int, int], map_size: tuple[int, int], map_depth: np.ndarray | None = None,
                 query_depth: np.ndarray | None = None) -> tuple[MetricPose | None, str]:
        """Matched keypoints (S x 2 each) and the depths of either side (S, NaN unknown) -> (pose, "") or
        (None, why not). Never raises on what the inputs hold: degenerate geometry (a plane at one depth,
        collinear points, no parallax) that defeats the numerics gives (None, the reason)."""
        try:
            with np.errstate(all="ignore"):
                return self._estimate(query_pts, map_pts, query_K, map_K, query_size, map_size, map_depth, query_depth)
        except (np.linalg.LinAlgError, cv2.error, FloatingPointError, ZeroDivisionError, OverflowError) as exc:
            return None, f"the metric pose failed numerically ({type(exc).__name__}: {str(exc).strip()[:120]})"

    def _estimate(self, query_pts, map_pts, query_K, map_K, query_size, map_size, map_depth, query_depth):
        s = self.settings
        views = _Views(np.asarray(query_pts, np.float64).reshape(-1, 2), np.asarray(map_pts, np.float64).reshape(-1, 2),
                       np.asarray(query_K, np.float64), np.asarray(map_K, np.float64),
                       _usable(map_depth, len(query_pts), s.max_range_m), _usable(query_depth, len(query_pts), s.max_range_m),
                       s.pixel_sigma * max(query_size) / REFERENCE_WIDTH, s.pixel_sigma * max(map_size) / REFERENCE_WIDTH,
                       s.depth_sigma)
        counts = {"map": int(np.isfinite(views.map_depth).sum()), "query": int(np.isfinite(views.query_depth).sum())}
        if not counts["map"] and not counts["query"]:
            return None, "no depth: neither the map frame's keypoints nor the query's have any"
        side = "map" if counts["map"] >= counts["query"] else "query"
        points = counts[side]
        if points < s.min_inliers:
            return None, (f"{points} of {len(views.query_pts)} matches have a depth reading, fewer than the "
                          f"{s.min_inliers} a metric pose needs")
        threshold = s.ransac_threshold_px * max(query_size if side == "map" else map_size) / REFERENCE_WIDTH
        found = self._ransac(views, side, threshold)
        if found is None:
            return None, f"PnP RANSAC found no pose among {points} points with depth"
        rotation, translation, kept = found
        if kept < s.min_inliers:
            return None, f"PnP RANSAC kept {kept} of {points} points, fewer than {s.min_inliers}"
        refined = self._refine(views, rotation, translation)
        if isinstance(refined, str):
            return None, refined
        rotation, translation, covariance, inliers, factor = refined
        kept = int(inliers.sum())
        if kept < s.min_inliers:
            return None, f"{kept} of {points} points fit the refined pose, fewer than {s.min_inliers}"
        if factor > s.max_variance_factor:
            return None, (f"the {kept} points fit the pose only at {math.sqrt(factor):.1f} times the modelled noise "
                          f"(more than {math.sqrt(s.max_variance_factor):.0f}): no metric pose")
        other = self._ransac(views, side, threshold, exclude=inliers)  # repeated structure: a second pose
        if other is not None and other[2] >= max(s.min_inliers, AMBIGUOUS_SHARE * kept):
            apart = float(np.linalg.norm(other[1] - translation))
            if apart > max(3.0 * math.sqrt(np.trace(covariance[:3, :3])), 0.25):
                return None, (f"two poses {apart:.1f} m apart fit the matches ({kept} and {other[2]} points; "
                              "repeated structure?): no metric pose")
        if not (np.isfinite(rotation).all() and np.isfinite(translation).all()):
            return None, "the refined pose is not finite: no metric pose"
        used = "map and query" if counts["map"] and counts["query"] else side
        with_depth = int((np.isfinite(views.map_depth) | np.isfinite(views.query_depth)).sum())
        return MetricPose(rotation, translation, covariance, kept, with_depth, used, factor), ""

    @staticmethod
    def _ransac(views: "_Views", side: str, threshold: float, exclude: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, int] | None:
        """An initial T_query_match by OpenCV's RANSAC EPnP on the side with more depth (leaving out the
        matches `exclude`), and its inlier count."""
        ok = np.isfinite(views.map_depth if side == "map" else views.query_depth)
        if exclude is not None:
            ok = ok & ~exclude
        if ok.sum() < 6:
            return None
        if side == "map":  # 3-D in the map camera, seen by the query
            X, pixels, K = views.X_map[ok], views.query_pts[ok], views.query_K
        else:  # 3-D in the query camera, seen by the map frame: T_match_query, inverted below
            X, pixels, K = views.X_query[ok], views.map_pts[ok], views.map_K
        try:
            found, rvec, tvec, inliers = cv2.solvePnPRansac(X.reshape(-1, 1, 3), pixels.reshape(-1, 1, 2), K, None,
                                                            iterationsCount=1000, reprojectionError=float(threshold),
                                                            confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
        except cv2.error:
            return None
        if not found or inliers is None or not np.isfinite(rvec).all() or not np.isfinite(tvec).all():
            return None
        rotation, translation = rotvec_to_matrix(rvec), tvec.ravel().astype(np.float64)
        if side == "query":
            rotation, translation = invert(rotation, translation)
        return rotation, translation, len(inliers)

    def _refine(self, views: "_Views", rotation, translation, iterations: int = 10):
        """Weighted Gauss-Newton over every match's residuals (_Views: reprojections, and the query's depth of
        the map point where both have depth), the inliers chosen by their whitened residual against a
        robust scale (the median residual says how much noisier than the model the matches are) and chosen
        again once, then the covariance; why not, when it diverges or the points do not fix the pose."""
        diverged = "the refinement of the PnP pose did not converge"
        r, J, W, dof = views.linearise(rotation, translation)
        d2 = np.einsum("na,nab,nb->n", r, W, r)
        inliers = (dof > 0) & (d2 < _table(CHI2_99, dof) * _robust_scale(d2, dof, dof > 0))
        for selection in range(2):
            for _ in range(iterations):
                if inliers.sum() < 4:
                    return diverged
                H = np.einsum("nai,nab,nbj->ij", J[inliers], W[inliers], J[inliers])
                g = np.einsum("nai,nab,nb->i", J[inliers], W[inliers], r[inliers])
                try:
                    step = -np.linalg.solve(H, g)
                except np.linalg.LinAlgError:
                    return diverged
                rotation, translation = perturbed(rotation, translation, step)
                r, J, W, dof = views.linearise(rotation, translation)
                if not np.isfinite(r).all() or np.linalg.norm(step) < 1e-9:
                    break
            if not np.isfinite(r).all():
                return diverged
            d2 = np.einsum("na,nab,nb->n", r, W, r)
            if selection == 0:
                inliers = (dof > 0) & (d2 < _table(CHI2_99, dof) * _robust_scale(d2, dof, inliers))
        inliers &= dof > 0  # a point that ended behind a camera is no inlier of the pose
        if inliers.sum() < 4:
            return diverged
        H = np.einsum("nai,nab,nbj->ij", J[inliers], W[inliers], J[inliers])
        expected = float((dof[inliers] * _table(TRUNCATED_MEAN, dof[inliers])).sum())
        factor = float(d2[inliers].sum()) / max(expected * (1 - 6 / max(int(dof[inliers].sum()), 7)), 1e-9)
        # the information must fix all six degrees of freedom: a plane seen head-on without parallax, collinear
        # or repeated points leave some free, and inverting that would publish a meaningless covariance
        values, vectors = np.linalg.eigh(0.5 * (H + H.T))
        if not np.isfinite(values).all() or values[0] <= MIN_INFORMATION_RATIO * values[-1]:
            return (f"the {int(inliers.sum())} points do not fix all six degrees of freedom of the pose "
                    "(degenerate geometry: collinear or repeated points, or no parallax)")
        covariance = (vectors / values) @ vectors.T * max(factor, 1.0)
        if not np.isfinite(covariance).all():
            return diverged
        return rotation, translation, 0.5 * (covariance + covariance.T), inliers, factor


def _usable(depth, n: int, max_range: float) -> np.ndarray:
    """Depths (n) with NaN where unknown, non-positive or beyond max_range; all NaN for None."""
    if depth is None:
        return np.full(n, np.nan)
    depth = np.asarray(depth, np.float64).reshape(n)
    with np.errstate(invalid="ignore"):
        return np.where((depth > 0) & (depth <= max_range), depth, np.nan)


def _robust_scale(d2: np.ndarray, dof: np.ndarray, selected: np.ndarray) -> float:
    """How much larger than the model's the residuals of the selected matches are (>= 1): the median of
    their squared whitened residuals, each over the chi-square median of its degrees of freedom."""
    selected = selected & (dof > 0)
    if not selected.any():
        return 1.0
    return max(1.0, float(np.median(d2[selected] / _table(CHI2_MEDIAN, dof[selected]))))


def _table(values: dict[int, float], dof: np.ndarray) -> np.ndarray:
    """values[dof] per match (0 where a match has no residual)."""
    out = np.zeros(len(dof))
    for k, v in values.items():
        out[dof == k] = v
    return out


class _Views:
    """The matches of one pair with the depth of either side, and their residuals.

    Per match: r_q, the map point (map pixel at map depth) projected into the query minus the query pixel,
    when the map keypoint has depth, and then also r_z, that point's depth in the query camera minus the
    query's depth reading, when the query keypoint has one too (the RGB-D residual: it fixes the distance
    along the view that the pixels leave to the map's depth alone); else r_m, the query point projected into
    the map frame minus the map pixel, when only the query keypoint has depth; else nothing. The joint
    covariance of a match's residuals comes from the noise sources they share: both pixels (pixel_sigma
    each) and both depths (depth_sigma(z)). r_m is never paired with r_q: they share both pixel errors with
    opposite signs, and for cameras a few metres apart their sum says almost nothing but the depths, which
    the linearisation overweights (tried: NEES in the thousands in simulation).
    """

    def __init__(self, query_pts, map_pts, query_K, map_K, map_depth, query_depth, query_sigma, map_sigma, depth_sigma):
        self.query_pts, self.map_pts, self.query_K, self.map_K = query_pts, map_pts, query_K, map_K
        self.map_depth, self.query_depth = map_depth, query_depth
        self.has_map = np.isfinite(map_depth)
        self.has_both = self.has_map & np.isfinite(query_depth)
        self.has_query = np.isfinite(query_depth) & ~self.has_map
        self.dof = 2 * self.has_map.astype(int) + 2 * self.has_query.astype(int) + self.has_both.astype(int)
        self.X_map = backproject(map_pts, np.where(self.has_map, map_depth, 1.0), map_K)
        self.X_query = backproject(query_pts, np.where(np.isfinite(query_depth), query_depth, 1.0), query_K)
        n = len(query_pts)
        sources = np.zeros((n, 6))  # variances of: query pixel x, y; map pixel x, y; map depth; query depth
        sources[:, :2], sources[:, 2:4] = query_sigma ** 2, map_sigma ** 2
        sources[:, 4] = np.where(self.has_map, depth_sigma(np.nan_to_num(map_depth)) ** 2, 0.0)
        sources[:, 5] = np.where(np.isfinite(query_depth), depth_sigma(np.nan_to_num(query_depth)) ** 2, 0.0)
        self.sources = sources

    def linearise(self, rotation, translation):
        """Residuals (n x 5: r_q, r_m, r_z), their Jacobians by (dt, dtheta) of T_query_match (n x 5 x 6),
        weights (n x 5 x 5, zero for the residuals a match does not have) and degrees of freedom (n)."""
        n = len(self.query_pts)
        r, J, S = np.zeros((n, 5)), np.zeros((n, 5, 6)), np.zeros((n, 5, 6))
        # map points seen by the query: P = R X_map + t
        RX = self.X_map @ rotation.T
        in_front_q = (RX[:, 2] + translation[2]) > MIN_POINT_DEPTH_M
        d_pi, projected = _projection(RX + translation, self.query_K)
        r[:, :2] = projected - self.query_pts
        dP = np.zeros((n, 3, 6))
        dP[:, :, :3] = np.eye(3)
        dP[:, :, 3:] = -np.stack([skew(v) for v in RX])  # d(exp(dtheta) R X) = -[R X]x dtheta
        J[:, :2] = d_pi @ dP
        S[:, :2, :2] = -np.eye(2)
        lateral_m = np.linalg.inv(self.map_K)[:, :2]
        across = (rotation @ lateral_m)[None] * np.where(self.has_map, self.map_depth, 0.0)[:, None, None]  # dP/d map px
        along = (self.X_map / np.where(self.has_map, self.map_depth, 1.0)[:, None]) @ rotation.T  # dP/d map depth
        S[:, :2, 2:4] = d_pi @ across
        S[:, :2, 4] = (d_pi @ along[:, :, None])[..., 0]
        # the map point's depth in the query camera against the query's reading there
        r[:, 4] = RX[:, 2] + translation[2] - np.nan_to_num(self.query_depth)
        J[:, 4] = dP[:, 2]
        S[:, 4, 2:4], S[:, 4, 4], S[:, 4, 5] = across[:, 2], along[:, 2], -1.0
        # query points seen by the map frame: P = R^T (X_query - t)
        v = self.X_query - translation
        in_front_m = (v @ rotation)[:, 2] > MIN_POINT_DEPTH_M
        d_pi, projected = _projection(v @ rotation, self.map_K)
        r[:, 2:4] = projected - self.map_pts
        dP = np.zeros((n, 3, 6))
        dP[:, :, :3] = -rotation.T
        dP[:, :, 3:] = rotation.T[None] @ np.stack([skew(x) for x in v])  # R^T exp(-dtheta) v = R^T (v + [v]x dtheta)
        J[:, 2:4] = d_pi @ dP
        S[:, 2:4, 2:4] = -np.eye(2)
        lateral_q = np.linalg.inv(self.query_K)[:, :2]
        S[:, 2:4, :2] = d_pi @ (rotation.T @ lateral_q)[None] * np.where(self.has_query, self.query_depth, 0.0)[:, None, None]
        S[:, 2:4, 5] = (d_pi @ ((self.X_query / np.where(self.has_query, self.query_depth, 1.0)[:, None]) @ rotation)[:, :, None])[..., 0]
        # a point behind (or at) a camera has no projection there: that residual is left out at this pose
        seen_q, seen_m = self.has_map & in_front_q, self.has_query & in_front_m
        missing = np.concatenate([np.repeat(~seen_q[:, None], 2, 1), np.repeat(~seen_m[:, None], 2, 1),
                                  ~(self.has_both & in_front_q)[:, None]], 1)
        r[missing], S[missing] = 0.0, 0.0
        J[missing] = 0.0
        C = S @ (self.sources[:, :, None] * S.transpose(0, 2, 1)) + np.eye(5)[None] * missing[:, :, None]
        W, usable = _weights(C)
        W[missing] = 0.0
        W.transpose(0, 2, 1)[missing] = 0.0
        dof = np.where(usable, 2 * seen_q + 2 * seen_m + (self.has_both & in_front_q), 0)
        r[~usable], J[~usable] = 0.0, 0.0
        return r, J, W, dof


def _weights(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverses of the per-match residual covariances (n x 5 x 5, symmetric) and which matches have one:
    a covariance that is not finite or numerically singular (condition number 1e12 or more: a point at the
    camera's centre, a near-zero noise, a depth of 1e30) gives its match no weight instead of failing the pair.
    One eigendecomposition gives both the condition number and the inverse."""
    finite = np.isfinite(C).all(axis=(1, 2))
    C = np.where(finite[:, None, None], C, np.eye(C.shape[1])[None])
    values, vectors = np.linalg.eigh(0.5 * (C + C.transpose(0, 2, 1)))
    usable = finite & (values[:, 0] > MAX_CONDITION ** -1 * np.abs(values[:, -1]))
    inverse = np.where(usable[:, None], 1.0 / np.where(usable[:, None], values, 1.0), 0.0)
    return np.einsum("nij,nj,nkj->nik", vectors, inverse, vectors), usable


def _projection(P: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (n x 3) in a camera -> (d pixel / d P, n x 2 x 3; pixels, n x 2); points behind it are held at 1 um."""
    z = np.maximum(P[:, 2], 1e-6)
    fx, fy = K[0, 0], K[1, 1]
    d_pi = np.zeros((len(P), 2, 3))
    d_pi[:, 0, 0], d_pi[:, 0, 2] = fx / z, -fx * P[:, 0] / z ** 2
    d_pi[:, 1, 1], d_pi[:, 1, 2] = fy / z, -fy * P[:, 1] / z ** 2
    return d_pi, np.column_stack([fx * P[:, 0] / z + K[0, 2], fy * P[:, 1] / z + K[1, 2]])
