"""Rigid transforms as the map and the messages carry them: poses (x y z qx qy qz qw), rotation matrices,
unit quaternions (x, y, z, w) and rotation vectors. A pose T_a_b is b's frame expressed in a: x_a = R x_b + t."""

import math

import cv2
import numpy as np

IDENTITY = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])


def quaternion_xyzw(rotation: np.ndarray) -> np.ndarray:
    """3 x 3 rotation matrix -> unit quaternion (x, y, z, w)."""
    m = np.asarray(rotation, np.float64)
    w = math.sqrt(max(0.0, 1.0 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1.0 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    q = np.array([x, y, z, w])
    return q / np.linalg.norm(q)


def quaternion_matrix(q) -> np.ndarray:
    """Quaternion (x, y, z, w), normalised here -> 3 x 3 rotation matrix."""
    x, y, z, w = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def pose_matrices(pose7) -> tuple[np.ndarray, np.ndarray]:
    """(x y z qx qy qz qw) -> (R, t)."""
    pose7 = np.asarray(pose7, np.float64)
    return quaternion_matrix(pose7[3:]), pose7[:3].copy()


def pose7(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(R, t) -> (x y z qx qy qz qw)."""
    return np.concatenate([np.asarray(translation, np.float64).reshape(3), quaternion_xyzw(rotation)])


def compose(a, b) -> np.ndarray:
    """Poses a, b (7 each) -> a b: b expressed through a."""
    ra, ta = pose_matrices(a)
    rb, tb = pose_matrices(b)
    return pose7(ra @ rb, ra @ tb + ta)


def invert(rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of T_a_b -> (R, t) of T_b_a."""
    return rotation.T, -rotation.T @ translation


def inverse(a) -> np.ndarray:
    """Pose (7) of T_a_b -> pose of T_b_a."""
    return pose7(*invert(*pose_matrices(a)))


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


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Angle of a rotation matrix in degrees."""
    return math.degrees(float(np.linalg.norm(matrix_to_rotvec(rotation))))

