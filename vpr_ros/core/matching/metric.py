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

CHI2_2DOF_99 = 9.21  # a point whose whitened squared residual exceeds this is an outlier


@dataclass
class MetricSettings:
    """Noise model and gates of the metric pose."""

    pixel_sigma: float = 1.0  # keypoint noise per view, pixels of a 640-pixel-wide image
    depth_sigma_m: float = 0.01  # depth noise at zero range ...
    depth_sigma_per_m2: float = 0.002  # ... growing with the square of the range (2 % at 10 m)
    ransac_threshold_px: float = 4.0  # at 640 pixels wide
    min_inliers: int = 12  # PnP inliers a metric pose needs
    max_range_m: float = 40.0  # 3-D points farther than this are left out

    def depth_sigma(self, z: np.ndarray) -> np.ndarray:
        return self.depth_sigma_m + self.depth_sigma_per_m2 * np.square(z)


@dataclass
class MetricPose:
    """A metric T_query_match and its covariance."""

    rotation: np.ndarray  # 3 x 3
    translation: np.ndarray  # 3, metres
    covariance: np.ndarray  # 6 x 6 over (x, y, z, rot_x, rot_y, rot_z)
    inlier_count: int
    points: int  # matches with a 3-D point
    depth_from: str  # "map" (map frame's depth, query keypoints) or "query"
    variance_factor: float  # chi^2 / dof of the inlier residuals under the noise model


def skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(v, np.float64).reshape(3, 1))[0]


def matrix_to_rotvec(m: np.ndarray) -> np.ndarray:
    """The rotation vector of a rotation matrix, accurate for tiny angles too (OpenCV's rounds them to 0)."""
    m = np.asarray(m, np.float64)
    axis = 0.5 * np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
    sin, cos = np.linalg.norm(axis), 0.5 * (np.trace(m) - 1.0)
    if sin < 1e-3:  # theta / sin(theta) ~ 1 + theta^2 / 6
        return axis * (1.0 + sin * sin / 6.0)
    if cos > -0.99:
        return axis * (math.atan2(sin, cos) / sin)
    return cv2.Rodrigues(m)[0].ravel()  # near 180 degrees the skew part carries no axis


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


def invert(rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rotation.T, -rotation.T @ translation


def backproject(points: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (M x 2) at depths (M) -> M x 3 points in that camera's optical frame."""
    rays = (np.column_stack([points, np.ones(len(points))]) - [K[0, 2], K[1, 2], 0.0]) / [K[0, 0], K[1, 1], 1.0]
    return rays * depth[:, None]


class MetricEstimator:
    """T_query_match from matched keypoints when one of the views has depth (module docstring)."""

    def __init__(self, settings: MetricSettings | None = None):
        self.settings = settings or MetricSettings()

    def estimate(self, query_pts: np.ndarray, map_pts: np.ndarray, query_K: np.ndarray, map_K: np.ndarray,
                 query_size: tuple[int, int], map_size: tuple[int, int], map_depth: np.ndarray | None = None,
                 query_depth: np.ndarray | None = None) -> tuple[MetricPose | None, str]:
        """Matched keypoints (S x 2 each, inliers of the verification) and the depths of either side (S, NaN
        unknown) -> (pose, "") or (None, why not)."""
        s = self.settings
        query_pts, map_pts = np.asarray(query_pts, np.float64), np.asarray(map_pts, np.float64)
        sides = []
        for depth, name in ((map_depth, "map"), (query_depth, "query")):
            if depth is not None:
                depth = np.asarray(depth, np.float64)
                ok = np.isfinite(depth) & (depth > 0) & (depth <= s.max_range_m)
                sides.append((int(ok.sum()), name, depth, ok))
        if not sides:
            return None, "no depth: neither the map frame nor the query has any"
        count, side, depth, ok = max(sides, key=lambda item: (item[0], item[1] == "map"))
        if count < s.min_inliers:
            return None, (f"{count} of {len(query_pts)} inlier matches have a depth reading, fewer than the "
                          f"{s.min_inliers} a metric pose needs")
        if side == "map":  # 3-D in the map camera, observed by the query: T_query_match directly
            points3, pixels, K3, K2, size3, size2 = map_pts[ok], query_pts[ok], map_K, query_K, map_size, query_size
        else:  # 3-D in the query camera, observed by the map frame: T_match_query, inverted below
            points3, pixels, K3, K2, size3, size2 = query_pts[ok], map_pts[ok], query_K, map_K, query_size, map_size
        X = backproject(points3, depth[ok], np.asarray(K3, np.float64))
        z = depth[ok]
        K2 = np.asarray(K2, np.float64)
        scale = max(size2) / REFERENCE_WIDTH
        found = self._ransac(X, pixels, K2, s.ransac_threshold_px * scale)
        if found is None:
            return None, f"PnP RANSAC found no pose among {count} points with depth"
        rotation, translation, inliers = found
        if inliers.sum() < s.min_inliers:
            return None, f"PnP RANSAC kept {int(inliers.sum())} of {count} points, fewer than {s.min_inliers}"
        refined = self._refine(X, z, pixels, K2, np.asarray(K3, np.float64), rotation, translation, inliers,
                               s.pixel_sigma * max(size2) / REFERENCE_WIDTH, s.pixel_sigma * max(size3) / REFERENCE_WIDTH)
        if refined is None:
            return None, "the refinement of the PnP pose did not converge"
        rotation, translation, covariance, kept, factor = refined
        if kept < s.min_inliers:
            return None, f"{kept} of {count} points fit the refined pose, fewer than {s.min_inliers}"
        if side == "query":
            covariance = propagate(covariance, rotation, translation, invert)
            rotation, translation = invert(rotation, translation)
        return MetricPose(rotation, translation, covariance, kept, count, side, factor), ""

    @staticmethod
    def _ransac(X, pixels, K, threshold) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        try:
            ok, rvec, tvec, inliers = cv2.solvePnPRansac(X.reshape(-1, 1, 3), pixels.reshape(-1, 1, 2), K, None,
                                                         iterationsCount=1000, reprojectionError=float(threshold),
                                                         confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
        except cv2.error:
            return None
        if not ok or inliers is None or not np.isfinite(rvec).all() or not np.isfinite(tvec).all():
            return None
        mask = np.zeros(len(X), bool)
        mask[inliers.ravel()] = True
        return rotvec_to_matrix(rvec), tvec.ravel().astype(np.float64), mask

    def _refine(self, X, z, pixels, K2, K3, rotation, translation, inliers, sigma2, sigma3,
                iterations: int = 10):
        """Weighted Gauss-Newton on the inliers, one re-selection of the inliers by their whitened residual,
        then the covariance; None when it diverges."""
        s = self.settings
        depth_sigma = s.depth_sigma(z)
        lateral = np.linalg.inv(K3)[:, :2]  # d X / d pixel, per unit depth
        for selection in range(2):
            for _ in range(iterations):
                r, J, W = self._linearise(X, z, pixels, K2, rotation, translation, lateral, depth_sigma, sigma2, sigma3)
                if r is None:
                    return None
                H = np.einsum("nai,nab,nbj->ij", J[inliers], W[inliers], J[inliers])
                g = np.einsum("nai,nab,nb->i", J[inliers], W[inliers], r[inliers])
                try:
                    step = -np.linalg.solve(H, g)
                except np.linalg.LinAlgError:
                    return None
                rotation, translation = perturbed(rotation, translation, step)
                if np.linalg.norm(step) < 1e-9:
                    break
            r, J, W = self._linearise(X, z, pixels, K2, rotation, translation, lateral, depth_sigma, sigma2, sigma3)
            if r is None:
                return None
            d2 = np.einsum("na,nab,nb->n", r, W, r)
            if selection == 0:
                inliers = d2 < CHI2_2DOF_99
                if inliers.sum() < 4:
                    return None
        H = np.einsum("nai,nab,nbj->ij", J[inliers], W[inliers], J[inliers])
        n = int(inliers.sum())
        factor = float(d2[inliers].sum() / max(2 * n - 6, 1))
        try:
            covariance = np.linalg.inv(H) * max(factor, 1.0)
        except np.linalg.LinAlgError:
            return None
        if not np.isfinite(covariance).all():
            return None
        return rotation, translation, 0.5 * (covariance + covariance.T), n, factor

    @staticmethod
    def _linearise(X, z, pixels, K, rotation, translation, lateral, depth_sigma, sigma2, sigma3):
        """Residuals (n x 2), their Jacobians by (dt, dtheta) (n x 2 x 6) and weights (n x 2 x 2)."""
        RX = X @ rotation.T
        P = RX + translation
        if (P[:, 2] <= 1e-6).any():
            P = P.copy()
            P[:, 2] = np.maximum(P[:, 2], 1e-6)
        fx, fy = K[0, 0], K[1, 1]
        inv_z = 1.0 / P[:, 2]
        projected = np.column_stack([fx * P[:, 0] * inv_z + K[0, 2], fy * P[:, 1] * inv_z + K[1, 2]])
        r = projected - pixels
        if not np.isfinite(r).all():
            return None, None, None
        dpi = np.zeros((len(P), 2, 3))  # d pixel / d P
        dpi[:, 0, 0], dpi[:, 0, 2] = fx * inv_z, -fx * P[:, 0] * inv_z ** 2
        dpi[:, 1, 1], dpi[:, 1, 2] = fy * inv_z, -fy * P[:, 1] * inv_z ** 2
        dP = np.zeros((len(P), 3, 6))
        dP[:, :, :3] = np.eye(3)
        dP[:, :, 3:] = -np.stack([skew(p) for p in RX])  # d(exp(dtheta) R X) = -[R X]x dtheta
        J = dpi @ dP
        ray = X / z[:, None]  # d X / d depth
        along = dpi @ (ray @ rotation.T)[:, :, None]  # n x 2 x 1: depth noise seen in the image
        across = dpi @ (rotation @ lateral)[None] * z[:, None, None]  # n x 2 x 2: the other view's pixel noise
        C = (sigma2 ** 2 * np.eye(2)[None] + sigma3 ** 2 * across @ across.transpose(0, 2, 1)
             + (depth_sigma ** 2)[:, None, None] * along @ along.transpose(0, 2, 1))
        return r, J, np.linalg.inv(C)


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Angle of a rotation matrix in degrees."""
    return math.degrees(float(np.linalg.norm(matrix_to_rotvec(rotation))))
